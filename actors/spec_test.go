package actors

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

func runNop(ctx context.Context, w Worker) error { return nil }

func propsNil(Worker) *actor.Props { return nil }

// validSpec returns a spec that passes Validate, for tests to break one
// field at a time.
func validSpec() Spec {
	return Spec{Name: "worker-1", Run: runNop}
}

// TestValidateErrors covers every check of Spec.Validate: each bad spec fails
// with ErrInvalidSpec and a message that names the problem.
func TestValidateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(s *Spec)
		want   string // in the error message
	}{
		{"empty name", func(s *Spec) { s.Name = "" }, "empty name"},
		{"name too long", func(s *Spec) { s.Name = strings.Repeat("n", MaxNameLen+1) }, "name is 65 bytes, longer than 64"},
		{"space in name", func(s *Spec) { s.Name = "my worker" }, `name has byte ' ' at 2`},
		{"slash in name", func(s *Spec) { s.Name = "a/b" }, `name has byte '/' at 1`},
		{"NUL in name", func(s *Spec) { s.Name = "a\x00" }, `name has byte '\x00' at 1`},
		// %q of a byte prints it as a rune ('Ã' for 0xc3), so only the offset is checked.
		{"non-ASCII name", func(s *Spec) { s.Name = "café" }, "at 3; use [A-Za-z0-9_.-]"},
		{"bad type", func(s *Spec) { s.Type = "x y" }, "type: name has byte ' ' at 1"},
		{"type too long", func(s *Spec) { s.Type = strings.Repeat("t", 100) }, "type: name is 100 bytes"},
		{"unknown phase 9", func(s *Spec) { s.StartAt = 9 }, "unknown start phase 9"},
		{"unknown phase 4", func(s *Spec) { s.StartAt = phases.RecoveryFinished + 1 }, "unknown start phase 4"},
		{"unknown phase 255", func(s *Spec) { s.StartAt = 255 }, "unknown start phase 255"},
		{
			"shared memory at PostmasterStart",
			func(s *Spec) { s.StartAt = phases.PostmasterStart; s.SharedMemory = true },
			"shared memory is not available at postmaster_start; start at consistent_state or later",
		},
		{
			"regions without SharedMemory",
			func(s *Spec) { s.Regions = []shmactor.Region{{Name: "r", Size: 8}} },
			"regions requested without SharedMemory",
		},
		{
			"region size 0",
			func(s *Spec) { s.SharedMemory = true; s.Regions = []shmactor.Region{{Name: "r", Size: 0}} },
			`region "r" has size 0; want a name and a positive size`,
		},
		{
			"region size negative",
			func(s *Spec) { s.SharedMemory = true; s.Regions = []shmactor.Region{{Name: "r", Size: -4}} },
			`region "r" has size -4`,
		},
		{
			"region without a name",
			func(s *Spec) { s.SharedMemory = true; s.Regions = []shmactor.Region{{Size: 8}} },
			`region "" has size 8; want a name and a positive size`,
		},
		{
			"duplicate region",
			func(s *Spec) {
				s.SharedMemory = true
				s.Regions = []shmactor.Region{{Name: "a", Size: 8}, {Name: "b", Size: 8}, {Name: "a", Size: 16}}
			},
			`region "a" requested twice`,
		},
		{"neither Run nor Props", func(s *Spec) { s.Run = nil }, "neither Run nor Props is set"},
		{"both Run and Props", func(s *Spec) { s.Props = propsNil }, "both Run and Props are set; choose one"},
		{"Arg too big", func(s *Spec) { s.Arg = make([]byte, MaxArgLen+1) }, "Arg is 65537 bytes, above 65536"},
		{"negative StopTimeout", func(s *Spec) { s.StopTimeout = -time.Second }, "StopTimeout -1s is negative"},
		{"negative StartTimeout", func(s *Spec) { s.StartTimeout = -1 }, "StartTimeout -1ns is negative"},
		{"negative Fixed", func(s *Spec) { s.Restart = Fixed(-time.Millisecond) }, "fixed restart interval -1ms is negative"},
		{"Exponential negative Initial", func(s *Spec) { s.Restart = Exponential{Initial: -1} }, "exponential restart: Initial -1ns is negative"},
		{"Exponential negative Max", func(s *Spec) { s.Restart = Exponential{Max: -time.Second} }, "exponential restart: Max -1s is negative"},
		{"Exponential negative ResetAfter", func(s *Spec) { s.Restart = Exponential{ResetAfter: -time.Minute} }, "exponential restart: ResetAfter -1m0s is negative"},
		{"Exponential Multiplier 0.5", func(s *Spec) { s.Restart = Exponential{Multiplier: 0.5} }, "exponential restart: Multiplier 0.5 is below 1"},
		{"Exponential Multiplier negative", func(s *Spec) { s.Restart = Exponential{Multiplier: -2} }, "exponential restart: Multiplier -2 is below 1"},
		{"Exponential Multiplier NaN", func(s *Spec) { s.Restart = Exponential{Multiplier: math.NaN()} }, "exponential restart: Multiplier NaN"},
		{"Exponential Multiplier +Inf", func(s *Spec) { s.Restart = Exponential{Multiplier: math.Inf(1)} }, "exponential restart: Multiplier +Inf"},
		{"Exponential Jitter 1.0", func(s *Spec) { s.Restart = Exponential{Jitter: 1.0} }, "exponential restart: Jitter 1 is outside [0, 1)"},
		{"Exponential Jitter negative", func(s *Spec) { s.Restart = Exponential{Jitter: -0.1} }, "exponential restart: Jitter -0.1 is outside [0, 1)"},
		{"Exponential Jitter NaN", func(s *Spec) { s.Restart = Exponential{Jitter: math.NaN()} }, "exponential restart: Jitter NaN is outside [0, 1)"},
		{"Exponential Initial > Max", func(s *Spec) { s.Restart = Exponential{Initial: 2 * time.Second, Max: time.Second} }, "exponential restart: Initial 2s exceeds Max 1s"},
		{"Exponential Initial > default Max", func(s *Spec) { s.Restart = Exponential{Initial: time.Minute} }, "exponential restart: Initial 1m0s exceeds Max 30s"},
		{"Exponential Max < default Initial", func(s *Spec) { s.Restart = Exponential{Max: 50 * time.Millisecond} }, "exponential restart: Initial 100ms exceeds Max 50ms"},
		{"intensity negative window", func(s *Spec) { s.Intensity = Intensity{MaxRestarts: 3, Window: -time.Second} }, "restart intensity window -1s is negative"},
		{"intensity MaxRestarts too big", func(s *Spec) { s.Intensity = Intensity{MaxRestarts: 1<<16 + 1} }, "restart intensity MaxRestarts 65537 is above 65536"},
		{"negative MemoryMax", func(s *Spec) { s.Limits.MemoryMax = -1 }, "Limits.MemoryMax -1 is negative"},
		{"MemoryMax below 1 MiB", func(s *Spec) { s.Limits.MemoryMax = 4096 }, "Limits.MemoryMax 4096 is below 1048576 bytes"},
		{"negative CPUMax", func(s *Spec) { s.Limits.CPUMax = -0.5 }, "Limits.CPUMax -0.5 is negative"},
		{"NaN CPUMax", func(s *Spec) { s.Limits.CPUMax = math.NaN() }, "Limits.CPUMax NaN is not a number of CPUs"},
		{"infinite CPUMax", func(s *Spec) { s.Limits.CPUMax = math.Inf(1) }, "Limits.CPUMax +Inf is not a number of CPUs"},
		{"CPUMax below a hundredth", func(s *Spec) { s.Limits.CPUMax = 0.001 }, "Limits.CPUMax 0.001 is below 0.01 CPUs"},
		{"CPUMax too big", func(s *Spec) { s.Limits.CPUMax = 1e6 }, "Limits.CPUMax 1e+06 is above 65536 CPUs"},
		{"negative PidsMax", func(s *Spec) { s.Limits.PidsMax = -3 }, "Limits.PidsMax -3 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.modify(&s)
			err := s.Validate()
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidSpec", err)
			}
			if errors.Is(err, ErrAlreadyRegistered) || errors.Is(err, ErrRegistrationClosed) {
				t.Errorf("Validate() = %v, wraps a registration error too", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
			var se *SpecError
			if !errors.As(err, &se) || se.Name != s.Name || se.Err != ErrInvalidSpec {
				t.Errorf("Validate() = %#v, want a *SpecError{Name: %q, Err: ErrInvalidSpec}", err, s.Name)
			}
			if !strings.HasPrefix(err.Error(), "actors: worker ") {
				t.Errorf("Validate() = %q, want the prefix \"actors: worker \"", err)
			}
		})
	}
}

func TestValidateOK(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(s *Spec)
	}{
		{"minimal Run", func(s *Spec) {}},
		{"Props instead of Run", func(s *Spec) { s.Run, s.Props = nil, propsNil }},
		{"name of every allowed byte", func(s *Spec) { s.Name = "AZaz09_.-" }},
		{"name of MaxNameLen bytes", func(s *Spec) { s.Name = strings.Repeat("n", MaxNameLen) }},
		{"type", func(s *Spec) { s.Type = "indexer" }},
		{"every phase", func(s *Spec) { s.StartAt = phases.PostmasterStart }},
		{"shm at ConsistentState", func(s *Spec) {
			s.StartAt, s.SharedMemory = phases.ConsistentState, true
			s.Regions = []shmactor.Region{{Name: "a", Size: 1}, {Name: "b", Size: 1 << 20}}
		}},
		{"shm with the default phase", func(s *Spec) { s.SharedMemory = true }},
		{"Arg of MaxArgLen bytes", func(s *Spec) { s.Arg = make([]byte, MaxArgLen) }},
		{"Fixed(0)", func(s *Spec) { s.Restart = Fixed(0) }},
		{"NeverRestart", func(s *Spec) { s.Restart = NeverRestart }},
		{"zero Exponential", func(s *Spec) { s.Restart = Exponential{} }},
		{"DefaultExponential", func(s *Spec) { s.Restart = DefaultExponential }},
		{"Exponential at the limits", func(s *Spec) {
			s.Restart = Exponential{Initial: time.Second, Max: time.Second, Multiplier: 1, Jitter: math.Nextafter(1, 0)}
		}},
		{"unlimited intensity", func(s *Spec) { s.Intensity = Intensity{MaxRestarts: -1} }},
		{"intensity MaxRestarts 65536", func(s *Spec) { s.Intensity = Intensity{MaxRestarts: 1 << 16, Window: time.Second} }},
		{"timeouts", func(s *Spec) { s.StopTimeout, s.StartTimeout = time.Nanosecond, time.Hour }},
		{"limits at their bounds", func(s *Spec) {
			s.Limits = Limits{MemoryMax: MinMemoryMax, CPUMax: MinCPUMax, PidsMax: 1}
		}},
		{"limits at the upper bound", func(s *Spec) { s.Limits = Limits{MemoryMax: math.MaxInt64, CPUMax: MaxCPUMax} }},
		{"everything", func(s *Spec) {
			*s = Spec{
				Name: "everything", Type: "kind", StartAt: phases.RecoveryFinished,
				SharedMemory: true, Regions: []shmactor.Region{{Name: "q", Size: 4096}}, Connect: true,
				Run: runNop, Arg: []byte("arg"), Restart: Fixed(time.Second),
				Intensity: Intensity{MaxRestarts: 5, Window: time.Minute}, Critical: true,
				StopTimeout: time.Second, StartTimeout: time.Second,
				Limits: Limits{MemoryMax: 256 << 20, CPUMax: 1.5, PidsMax: 64},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.modify(&s)
			if err := s.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestSpecDefaults(t *testing.T) {
	t.Parallel()
	var s Spec
	if got := s.StartPhase(); got != phases.RecoveryFinished {
		t.Errorf("StartPhase() = %v, want %v", got, phases.RecoveryFinished)
	}
	if got := s.GracePeriod(); got != DefaultStopTimeout {
		t.Errorf("GracePeriod() = %v, want %v", got, DefaultStopTimeout)
	}
	if got := s.ReadyTimeout(); got != DefaultStartTimeout {
		t.Errorf("ReadyTimeout() = %v, want %v", got, DefaultStartTimeout)
	}
	s = Spec{Name: "n", StartAt: phases.ConsistentState, StopTimeout: time.Second, StartTimeout: 2 * time.Second, Restart: NeverRestart}
	if s.StartPhase() != phases.ConsistentState || s.GracePeriod() != time.Second || s.ReadyTimeout() != 2*time.Second || s.RestartPolicy() != NeverRestart {
		t.Errorf("spec %+v: defaults overrode set fields", s)
	}
	if got := s.TypeName(); got != "n" {
		t.Errorf("TypeName() = %q, want the name %q", got, "n")
	}
	s.Type = "t"
	if got := s.TypeName(); got != "t" {
		t.Errorf("TypeName() = %q, want %q", got, "t")
	}
}

// TestRegistry is the only test that touches the package's registry, and
// it does so in order, because the registry is global and closes for good
// on Registered. It starts from an empty registry so
// that -count=N works.
func TestRegistry(t *testing.T) {
	registry.Lock()
	registry.specs, registry.auto, registry.byName, registry.closed = nil, nil, nil, false
	registry.Unlock()

	arg := []byte("original")
	orig := Spec{Name: "reg-a", Run: runNop, Arg: arg, StopTimeout: time.Second}
	if err := Register(orig); err != nil {
		t.Fatalf("Register(%q) = %v", orig.Name, err)
	}
	// The registry keeps a copy: changing the caller's slice later has no effect.
	arg[0] = 'X'

	defined := Spec{Name: "reg-def", Props: propsNil}
	if err := Define(defined); err != nil {
		t.Fatalf("Define(%q) = %v", defined.Name, err)
	}

	// An invalid spec is refused and not registered.
	if err := Register(Spec{Name: "reg-bad"}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("Register(spec without Run) = %v, want ErrInvalidSpec", err)
	}
	if _, ok := Lookup("reg-bad"); ok {
		t.Errorf("Lookup(%q) found an invalid spec", "reg-bad")
	}

	// A duplicate, by Register or Define, is refused; the original stays.
	dup := Spec{Name: "reg-a", Props: propsNil, Arg: []byte("dup"), StopTimeout: 3 * time.Second}
	for _, tc := range []struct {
		name string
		f    func(Spec) error
	}{{"Register", Register}, {"Define", Define}} {
		err := tc.f(dup)
		if !errors.Is(err, ErrAlreadyRegistered) {
			t.Errorf("%s(duplicate %q) = %v, want ErrAlreadyRegistered", tc.name, dup.Name, err)
		}
		var se *SpecError
		if !errors.As(err, &se) || se.Name != "reg-a" {
			t.Errorf("%s(duplicate) = %#v, want a *SpecError naming reg-a", tc.name, err)
		}
	}
	if err := Define(Spec{Name: "reg-def", Run: runNop}); !errors.Is(err, ErrAlreadyRegistered) {
		t.Errorf("Define(duplicate reg-def) = %v, want ErrAlreadyRegistered", err)
	}
	got, ok := Lookup("reg-a")
	if !ok || string(got.Arg) != "original" || got.StopTimeout != time.Second || got.Run == nil || got.Props != nil {
		t.Errorf("Lookup(reg-a) = %+v, %v; want the original spec with Arg %q", got, ok, "original")
	}
	if _, ok := Lookup("nobody"); ok {
		t.Errorf("Lookup(nobody) found a spec")
	}

	// Registered returns what Register added, not what Define added, and
	// closes the registry.
	list := Registered()
	if len(list) != 1 || list[0].Name != "reg-a" || string(list[0].Arg) != "original" {
		t.Errorf("Registered() = %+v, want only reg-a", list)
	}
	if d, ok := Lookup("reg-def"); !ok || d.Props == nil {
		t.Errorf("Lookup(reg-def) = %+v, %v; want the defined spec", d, ok)
	}

	late := Spec{Name: "reg-late", Run: runNop}
	if err := Register(late); !errors.Is(err, ErrRegistrationClosed) {
		t.Errorf("Register after Registered() = %v, want ErrRegistrationClosed", err)
	}
	if err := Define(late); !errors.Is(err, ErrRegistrationClosed) {
		t.Errorf("Define after Registered() = %v, want ErrRegistrationClosed", err)
	}
	if _, ok := Lookup("reg-late"); ok {
		t.Errorf("Lookup(reg-late) found a spec registered after close")
	}
	// Validation still comes first, even when closed.
	if err := Register(Spec{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("Register(Spec{}) after close = %v, want ErrInvalidSpec", err)
	}
	func() {
		defer func() {
			r := recover()
			err, _ := r.(error)
			if !errors.Is(err, ErrRegistrationClosed) {
				t.Errorf("MustRegister after close panicked with %v, want ErrRegistrationClosed", r)
			}
		}()
		MustRegister(Spec{Name: "reg-must", Run: runNop})
	}()
	if list2 := Registered(); len(list2) != 1 {
		t.Errorf("second Registered() = %+v, want the same single spec", list2)
	}
}

// FuzzWorkerSpec builds specs from arbitrary input:
// Validate must never panic, and a spec it accepts must satisfy the
// invariants the runtime relies on.
func FuzzWorkerSpec(f *testing.F) {
	f.Add("worker", "", byte(0), false, false, int64(0), true, false, uint32(0), int64(0), int64(0), byte(0), int64(0), int64(0), 0.0, 0.0, int64(0), 0, int64(0))
	f.Add("shm", "t", byte(1), true, true, int64(64), true, false, uint32(10), int64(1), int64(1), byte(2), int64(100e6), int64(30e9), 2.0, 0.2, int64(60e9), 10, int64(60e9))
	f.Add("", "bad type", byte(9), true, false, int64(-1), true, true, uint32(70000), int64(-1), int64(-1), byte(2), int64(-1), int64(-1), 0.5, 1.0, int64(-1), -1, int64(-1))
	f.Add("a.b-c_D9", "x", byte(2), true, true, int64(1), false, true, uint32(65536), int64(5e9), int64(10e9), byte(1), int64(1e9), int64(0), 1.0, 0.999, int64(0), 65536, int64(1))
	f.Add("n", "", byte(3), false, false, int64(0), false, false, uint32(0), int64(0), int64(0), byte(2), int64(math.MaxInt64), int64(math.MaxInt64), math.Inf(1), math.NaN(), int64(math.MinInt64), math.MinInt, int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, name, typ string, phase byte, shm, regions bool, regionSize int64, run, props bool, argLen uint32,
		stop, start int64, policy byte, initial, maxD int64, mult, jitter float64, reset int64, maxRestarts int, window int64) {
		s := Spec{
			Name:         name,
			Type:         typ,
			StartAt:      phases.Phase(phase),
			SharedMemory: shm,
			StopTimeout:  time.Duration(stop),
			StartTimeout: time.Duration(start),
			Intensity:    Intensity{MaxRestarts: maxRestarts, Window: time.Duration(window)},
			Arg:          make([]byte, argLen%(2*MaxArgLen)),
		}
		if regions {
			s.Regions = []shmactor.Region{{Name: name, Size: int(regionSize)}, {Name: typ, Size: int(regionSize)}}
		}
		if run {
			s.Run = runNop
		}
		if props {
			s.Props = propsNil
		}
		switch policy % 4 {
		case 1:
			s.Restart = Fixed(time.Duration(initial))
		case 2:
			s.Restart = Exponential{Initial: time.Duration(initial), Max: time.Duration(maxD), Multiplier: mult, Jitter: jitter, ResetAfter: time.Duration(reset)}
		case 3:
			s.Restart = NeverRestart
		}

		err := s.Validate()
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidSpec", err)
			}
			return
		}
		// The documented invariants of a valid spec.
		if ValidName(s.Name) != nil || len(s.Name) == 0 || len(s.Name) > MaxNameLen {
			t.Fatalf("Validate accepted name %q", s.Name)
		}
		for i := 0; i < len(s.Name); i++ {
			if c := s.Name[i]; !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", rune(c)) {
				t.Fatalf("Validate accepted name %q with byte %q", s.Name, c)
			}
		}
		if s.Type != "" && ValidName(s.Type) != nil {
			t.Fatalf("Validate accepted type %q", s.Type)
		}
		if s.StartAt != 0 && !s.StartAt.Valid() {
			t.Fatalf("Validate accepted phase %d", s.StartAt)
		}
		if !s.StartPhase().Valid() {
			t.Fatalf("StartPhase() = %v, not a phase", s.StartPhase())
		}
		if s.SharedMemory && s.StartPhase() == phases.PostmasterStart {
			t.Fatalf("Validate accepted shared memory at %v", s.StartPhase())
		}
		if len(s.Regions) > 0 && (!s.SharedMemory || regionSize <= 0 || name == typ) {
			t.Fatalf("Validate accepted regions %+v (SharedMemory %v)", s.Regions, s.SharedMemory)
		}
		if (s.Run == nil) == (s.Props == nil) {
			t.Fatalf("Validate accepted Run set %v, Props set %v", s.Run != nil, s.Props != nil)
		}
		if len(s.Arg) > MaxArgLen || s.StopTimeout < 0 || s.StartTimeout < 0 || s.GracePeriod() <= 0 || s.ReadyTimeout() <= 0 {
			t.Fatalf("Validate accepted Arg of %d bytes, StopTimeout %v, StartTimeout %v", len(s.Arg), s.StopTimeout, s.StartTimeout)
		}
		if s.Intensity.Window < 0 || s.Intensity.MaxRestarts > 1<<16 {
			t.Fatalf("Validate accepted intensity %+v", s.Intensity)
		}
		// An accepted policy yields waits within its bounds.
		p := s.RestartPolicy()
		if e, ok := p.(Exponential); ok {
			d := e.withDefaults()
			if d.Initial < 0 || d.Max < d.Initial || d.Multiplier < 1 || d.Jitter < 0 || d.Jitter >= 1 || d.ResetAfter <= 0 {
				t.Fatalf("Validate accepted %+v (with defaults %+v)", e, d)
			}
			{
				for _, n := range []int{1, 2, 10, 100, 5000} {
					for _, rnd := range []float64{0, 0.5, math.Nextafter(1, 0)} {
						w, _ := e.delay(n, rnd)
						if w < 0 || w > d.Max {
							t.Fatalf("%v.delay(%d, %v) = %v, want within [0, %v]", e, n, rnd, w, d.Max)
						}
					}
				}
			}
		}
		if fx, ok := p.(fixed); ok && fx < 0 {
			t.Fatalf("Validate accepted %v", fx)
		}
		b := NewBackoff(p, s.Intensity)
		if _, err := b.Next(t0, 0, 0.5); err != nil && !errors.Is(err, ErrNoRestart) {
			t.Fatalf("first Next of a valid spec: %v", err)
		}
	})
}
