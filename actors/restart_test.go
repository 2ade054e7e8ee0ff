package actors

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// t0 is an arbitrary origin for tests that pass times to Backoff.Next
// without a clock.
var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const ms = time.Millisecond

func TestFixed(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, time.Nanosecond, 50 * ms, 5 * time.Second} {
		b := NewBackoff(Fixed(d), Intensity{MaxRestarts: -1})
		for n := 1; n <= 5; n++ {
			// rnd and uptime must not matter to a fixed interval.
			for _, rnd := range []float64{0, 0.5, 0.999} {
				got, err := b.Next(t0, time.Duration(n)*time.Hour, rnd)
				if err != nil || got != d {
					t.Errorf("Fixed(%v).Next #%d rnd=%v = %v, %v; want %v, nil", d, n, rnd, got, err, d)
				}
			}
		}
		if got, want := Fixed(d).String(), "fixed("+d.String()+")"; got != want {
			t.Errorf("Fixed(%v).String() = %q, want %q", d, got, want)
		}
	}
}

func TestNeverRestart(t *testing.T) {
	t.Parallel()
	b := NewBackoff(NeverRestart, Intensity{})
	for n := 1; n <= 3; n++ {
		got, err := b.Next(t0, 0, 0)
		if !errors.Is(err, ErrNoRestart) || got != 0 {
			t.Errorf("NeverRestart: Next #%d = %v, %v; want 0, ErrNoRestart", n, got, err)
		}
	}
	if got, want := NeverRestart.String(), "never"; got != want {
		t.Errorf("NeverRestart.String() = %q, want %q", got, want)
	}
}

func TestExponentialSequence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy Exponential
		want   []time.Duration // waits before restarts 1, 2, ...
	}{
		{
			name:   "doubling capped",
			policy: Exponential{Initial: 100 * ms, Max: 2 * time.Second, Multiplier: 2},
			want:   []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second, 2 * time.Second},
		},
		{
			name:   "x1.5",
			policy: Exponential{Initial: 100 * ms, Max: time.Second, Multiplier: 1.5},
			want:   []time.Duration{100 * ms, 150 * ms, 225 * ms, 337500 * time.Microsecond, 506250 * time.Microsecond, 759375 * time.Microsecond, time.Second},
		},
		{
			name:   "x1 is constant",
			policy: Exponential{Initial: 70 * ms, Max: time.Second, Multiplier: 1},
			want:   []time.Duration{70 * ms, 70 * ms, 70 * ms},
		},
		{
			name:   "Initial equal to Max",
			policy: Exponential{Initial: time.Second, Max: time.Second, Multiplier: 3},
			want:   []time.Duration{time.Second, time.Second},
		},
		{
			name:   "x10",
			policy: Exponential{Initial: 1 * ms, Max: 30 * time.Second, Multiplier: 10},
			want:   []time.Duration{1 * ms, 10 * ms, 100 * ms, time.Second, 10 * time.Second, 30 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Through the policy directly...
			for i, want := range tt.want {
				if got, ok := tt.policy.delay(i+1, 0); !ok || got != want {
					t.Errorf("%v.delay(%d) = %v, %v; want %v, true", tt.policy, i+1, got, ok, want)
				}
			}
			// ...and through Backoff, runs too short to reset.
			b := NewBackoff(tt.policy, Intensity{MaxRestarts: -1})
			now := t0
			for i, want := range tt.want {
				got, err := b.Next(now, time.Millisecond, 0)
				if err != nil || got != want {
					t.Errorf("Backoff(%d) = %v, %v; want %v, nil", i+1, got, err, want)
				}
				if b.Attempt() != i+1 {
					t.Errorf("after Backoff(%d): Attempt() = %d, want %d", i+1, b.Attempt(), i+1)
				}
				now = now.Add(got + time.Millisecond)
			}
		})
	}
}

func TestExponentialHugeAttempt(t *testing.T) {
	t.Parallel()
	// Multiplier^(n-1) overflows float64 to +Inf long before n runs out;
	// the wait must still be Max, and attempt < 1 counts as 1.
	e := Exponential{Initial: ms, Max: 3 * time.Second, Multiplier: 2}
	for _, n := range []int{64, 1100, 1 << 20, math.MaxInt32} {
		if got, _ := e.delay(n, 0); got != 3*time.Second {
			t.Errorf("delay(%d) = %v, want 3s", n, got)
		}
	}
	for _, n := range []int{0, -1, math.MinInt} {
		if got, _ := e.delay(n, 0); got != ms {
			t.Errorf("delay(%d) = %v, want 1ms", n, got)
		}
	}
}

func TestExponentialJitter(t *testing.T) {
	t.Parallel()
	policies := []Exponential{
		{Initial: 100 * ms, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.2},
		{Initial: 100 * ms, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.5},
		{Initial: 3 * ms, Max: 40 * ms, Multiplier: 3, Jitter: 0.999},
		{Initial: 100 * ms, Max: 2 * time.Second, Multiplier: 2, Jitter: 0},
	}
	for _, e := range policies {
		for n := 1; n <= 8; n++ {
			d, _ := e.delay(n, 0)
			lo := time.Duration(float64(d) * (1 - e.Jitter))
			for _, rnd := range []float64{0, 0.5, 0.999} {
				got, ok := e.delay(n, rnd)
				if !ok || got < lo || got > d {
					t.Errorf("%v: delay(%d, rnd=%v) = %v, want within [%v, %v]", e, n, rnd, got, lo, d)
				}
				// The wait is d × (1 − Jitter×rnd), to the nanosecond.
				want := time.Duration(float64(d) * (1 - e.Jitter*rnd))
				if diff := got - want; diff < -1 || diff > 1 {
					t.Errorf("%v: delay(%d, rnd=%v) = %v, want %v", e, n, rnd, got, want)
				}
			}
			if got, _ := e.delay(n, 0); got != d {
				t.Errorf("%v: delay(%d, 0) = %v, want the unjittered %v", e, n, got, d)
			}
		}
	}
}

func TestExponentialResetAfter(t *testing.T) {
	t.Parallel()
	e := Exponential{Initial: 100 * ms, Max: 10 * time.Second, Multiplier: 2, ResetAfter: 5 * time.Second}
	steps := []struct {
		uptime time.Duration
		want   time.Duration
	}{
		{0, 100 * ms},
		{time.Second, 200 * ms},
		{5*time.Second - 1, 400 * ms}, // just short of ResetAfter: keeps growing
		{5 * time.Second, 100 * ms},   // exactly ResetAfter: reset
		{time.Millisecond, 200 * ms},
		{time.Hour, 100 * ms}, // longer: reset
		{0, 200 * ms},
		{0, 400 * ms},
	}
	b := NewBackoff(e, Intensity{MaxRestarts: -1})
	now := t0
	for i, s := range steps {
		got, err := b.Next(now, s.uptime, 0)
		if err != nil || got != s.want {
			t.Errorf("step %d: Next(uptime %v) = %v, %v; want %v, nil", i, s.uptime, got, err, s.want)
		}
		now = now.Add(got + s.uptime)
	}

	// Reset forgets the growth; Fixed never resets by uptime (ResetAfter 0)
	// but its wait does not grow anyway.
	b.Reset()
	if b.Attempt() != 0 {
		t.Errorf("after Reset: Attempt() = %d, want 0", b.Attempt())
	}
	if got, _ := b.Next(now, 0, 0); got != 100*ms {
		t.Errorf("after Reset: Next = %v, want 100ms", got)
	}
}

func TestExponentialDefaults(t *testing.T) {
	t.Parallel()
	var zero Exponential
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"Initial", zero.withDefaults().Initial, 100 * ms},
		{"Max", zero.withDefaults().Max, 30 * time.Second},
		{"Multiplier", zero.withDefaults().Multiplier, 2.0},
		{"Jitter", zero.withDefaults().Jitter, 0.0}, // zero Jitter means none, not the default's 0.2
		{"ResetAfter", zero.resetAfter(), 60 * time.Second},
		{"String", zero.String(), "exponential(100ms..30s ×2 jitter 0)"},
		{"DefaultExponential.String", DefaultExponential.String(), "exponential(100ms..30s ×2 jitter 0.2)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("zero Exponential: %s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// The zero policy's sequence: 100ms doubling up to 30s, no jitter.
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 12800 * ms, 25600 * ms, 30 * time.Second}
	for i, w := range want {
		if got, _ := zero.delay(i+1, 0.999); got != w {
			t.Errorf("Exponential{}.delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	// Partial zero fields take the default individually.
	if got, _ := (Exponential{Initial: 40 * time.Second}).delay(1, 0); got != 30*time.Second {
		// (Validate rejects this spec; delay still caps it.)
		t.Errorf("Exponential{Initial: 40s}.delay(1) = %v, want 30s", got)
	}
	if got, _ := (Exponential{Multiplier: 3}).delay(3, 0); got != 900*ms {
		t.Errorf("Exponential{Multiplier: 3}.delay(3) = %v, want 900ms", got)
	}

	// A nil policy is DefaultExponential (with its jitter); a zero
	// Intensity is 10 restarts within 60s.
	b := NewBackoff(nil, Intensity{})
	if got, _ := b.Next(t0, 0, 0.5); got != 90*ms {
		t.Errorf("NewBackoff(nil).Next(rnd=0.5) = %v, want 90ms (100ms less half of 20%%)", got)
	}
	if b.intensity != (Intensity{MaxRestarts: 10, Window: time.Minute}) {
		t.Errorf("zero Intensity = %+v, want {10 1m0s}", b.intensity)
	}
	if got := (&Spec{}).RestartPolicy(); got != DefaultExponential {
		t.Errorf("Spec{}.RestartPolicy() = %v, want DefaultExponential", got)
	}
}

func TestIntensity(t *testing.T) {
	t.Parallel()
	sec := time.Second
	type step struct {
		at      time.Duration // failure time, from t0
		wantErr bool
	}
	tests := []struct {
		name  string
		in    Intensity
		steps []step
	}{
		{
			name: "3 within 10s",
			in:   Intensity{MaxRestarts: 3, Window: 10 * sec},
			steps: []step{
				{0, false}, {1 * sec, false}, {2 * sec, false},
				{3 * sec, true},         // 4th restart within 10s of the 1st
				{10*sec - 1, true},      // still within
				{10 * sec, false},       // the window slid past the 1st restart
				{10*sec + 500*ms, true}, // the 2nd (at 1s) is still within
				{11 * sec, false},       // ...and now it is not
				{12 * sec, false},       // 3rd gone
				{13 * sec, true},        // restarts at 10, 11, 12 fill the window
				{100 * sec, false}, {101 * sec, false},
			},
		},
		{
			name: "one",
			in:   Intensity{MaxRestarts: 1, Window: sec},
			steps: []step{
				{0, false}, {sec - 1, true}, {sec, false}, {sec, true}, {3 * sec, false},
			},
		},
		{
			name:  "defaults: 10 within 60s",
			in:    Intensity{},
			steps: append(repeat(step{0, false}, 10), step{59 * sec, true}, step{60 * sec, false}),
		},
		{
			name:  "negative MaxRestarts is unlimited",
			in:    Intensity{MaxRestarts: -1, Window: time.Hour},
			steps: repeat(step{0, false}, 1000),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := NewBackoff(Fixed(0), tt.in)
			for i, s := range tt.steps {
				got, err := b.Next(t0.Add(s.at), 0, 0)
				switch {
				case s.wantErr && !errors.Is(err, ErrIntensity):
					t.Errorf("step %d at %v: Next = %v, %v; want ErrIntensity", i, s.at, got, err)
				case !s.wantErr && err != nil:
					t.Errorf("step %d at %v: Next = %v, %v; want nil error", i, s.at, got, err)
				}
			}
		})
	}

	// The restart counted is the restart itself (failure + wait), and the
	// error says what was exceeded.
	b := NewBackoff(Fixed(5*sec), Intensity{MaxRestarts: 2, Window: 10 * sec})
	b.Next(t0, 0, 0)                                       // restart at 5s
	b.Next(t0.Add(sec), 0, 0)                              // restart at 6s
	if _, err := b.Next(t0.Add(9*sec), 0, 0); err == nil { // restart at 14s: 9s after the 1st
		t.Errorf("3rd restart 9s after the 1st: got nil error, want ErrIntensity")
	} else if want := "actors: restart intensity exceeded: more than 2 restarts within 10s"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if _, err := b.Next(t0.Add(10*sec), 0, 0); err != nil { // restart at 15s: 10s after the 1st
		t.Errorf("3rd restart 10s after the 1st: %v, want nil", err)
	}
}

func repeat[T any](v T, n int) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestBackoffAllocsFlat checks that restart bookkeeping costs the same after
// 100,000 failures as after one: Next allocates nothing and the ring does
// not grow.
func TestBackoffAllocsFlat(t *testing.T) {
	tests := []struct {
		name   string
		policy Restart
		in     Intensity
	}{
		{"exponential, ring of 1000", Exponential{Initial: ms, Max: 5 * ms, Multiplier: 2, Jitter: 0.5, ResetAfter: time.Hour}, Intensity{MaxRestarts: 1000, Window: time.Second}},
		{"default policy and intensity", nil, Intensity{}},
		{"fixed, ring of 65536", Fixed(ms), Intensity{MaxRestarts: 1 << 16, Window: time.Second}},
		{"exponential, unlimited", Exponential{Jitter: 0.3}, Intensity{MaxRestarts: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBackoff(tt.policy, tt.in)
			in := b.intensity
			// Space failures so that no window ever holds more than half
			// of MaxRestarts restarts.
			step := time.Millisecond
			if in.MaxRestarts > 0 {
				step = 2 * in.Window / time.Duration(in.MaxRestarts)
			}
			now := t0
			rnd := rand.New(rand.NewPCG(1, 2))
			for i := range 100_000 {
				now = now.Add(step)
				if _, err := b.Next(now, 0, rnd.Float64()); err != nil {
					t.Fatalf("failure %d: %v", i+1, err)
				}
			}
			ring := len(b.ring)
			allocs := testing.AllocsPerRun(1000, func() {
				now = now.Add(step)
				if _, err := b.Next(now, 0, 0.5); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Backoff.Next after 100,000 failures: %v allocs per call, want 0", allocs)
			}
			if len(b.ring) != ring || (in.MaxRestarts > 0 && ring != in.MaxRestarts) || (in.MaxRestarts < 0 && ring != 0) {
				t.Errorf("ring holds %d restart times (was %d), want MaxRestarts = %d", len(b.ring), ring, in.MaxRestarts)
			}
			if b.Attempt() != 101_001 { // AllocsPerRun makes one warm-up call
				t.Errorf("Attempt() = %d, want 101001", b.Attempt())
			}
		})
	}
}

// TestBackoffCrashLoop drives a crash-looping worker on synctest's fake
// clock: a worker that crashes 10ms after every start
// is restarted after Initial×2^(n-1) capped at Max, less up to Jitter, and is
// failed with ErrIntensity on the restart that would be the 21st within a
// minute. Every restart time is checked against both bounds.
func TestBackoffCrashLoop(t *testing.T) {
	// Inside the synctest bubble time.Sleep advances the fake clock
	// exactly: it is how a bubble moves time, not a guess at a real delay.
	synctest.Test(t, func(t *testing.T) {
		const (
			initial = 50 * ms
			maxWait = time.Second
			jitter  = 0.2
			uptime  = 10 * ms
		)
		b := NewBackoff(
			Exponential{Initial: initial, Max: maxWait, Multiplier: 2, Jitter: jitter, ResetAfter: 10 * time.Second},
			Intensity{MaxRestarts: 20, Window: time.Minute},
		)
		rnd := rand.New(rand.NewPCG(7, 8))

		// run stands for a worker process: it runs for uptime, then
		// crashes, and reports when.
		run := func() <-chan time.Time {
			crashed := make(chan time.Time, 1)
			go func() {
				time.Sleep(uptime)
				crashed <- time.Now()
			}()
			return crashed
		}

		start := time.Now()
		var restarts []time.Time
		var minTotal, maxTotal time.Duration
		for n := 1; ; n++ {
			startedAt := time.Now()
			crashedAt := <-run()
			if got := crashedAt.Sub(startedAt); got != uptime {
				t.Fatalf("run %d lasted %v on the fake clock, want %v", n, got, uptime)
			}
			wait, err := b.Next(crashedAt, crashedAt.Sub(startedAt), rnd.Float64())
			if err != nil {
				if !errors.Is(err, ErrIntensity) || n != 21 {
					t.Fatalf("failure %d: Next = %v; want ErrIntensity at failure 21", n, err)
				}
				break
			}
			restartAt := <-time.After(wait)

			d := min(initial<<(n-1), maxWait)
			lo := time.Duration(float64(d) * (1 - jitter))
			if got := restartAt.Sub(crashedAt); got < lo || got > d {
				t.Errorf("restart %d came %v after the crash, want within [%v, %v]", n, got, lo, d)
			}
			restarts = append(restarts, restartAt)
			minTotal += uptime + lo
			maxTotal += uptime + d
		}
		if len(restarts) != 20 {
			t.Fatalf("%d restarts before the worker failed, want 20", len(restarts))
		}
		// The whole loop, from first start to last restart.
		if got := restarts[19].Sub(start); got < minTotal || got > maxTotal {
			t.Errorf("20 restarts took %v, want within [%v, %v]", got, minTotal, maxTotal)
		}
		// Never more than MaxRestarts restarts within any Window.
		for i := range restarts {
			in := 0
			for _, r := range restarts[i:] {
				if r.Sub(restarts[i]) < time.Minute {
					in++
				}
			}
			if in > 20 {
				t.Errorf("%d restarts within a minute of restart %d, want ≤ 20", in, i+1)
			}
		}
		// The waits reach the cap and stay there.
		if last := restarts[19].Sub(restarts[18]); last < uptime+time.Duration(float64(maxWait)*(1-jitter)) || last > uptime+maxWait {
			t.Errorf("last restart interval %v, want uptime + [800ms, 1s]", last)
		}
	})
}

// TestBackoffResetAfterSynctest checks on the fake clock that a run of at
// least ResetAfter restarts the growth, and a shorter one does not.
func TestBackoffResetAfterSynctest(t *testing.T) {
	// time.Sleep inside the bubble advances the fake clock exactly.
	synctest.Test(t, func(t *testing.T) {
		const resetAfter = 10 * time.Second
		b := NewBackoff(Exponential{Initial: 100 * ms, Max: 5 * time.Second, Multiplier: 2, ResetAfter: resetAfter}, Intensity{MaxRestarts: -1})
		steps := []struct {
			uptime time.Duration
			want   time.Duration
		}{
			{ms, 100 * ms},
			{ms, 200 * ms},
			{ms, 400 * ms},
			{resetAfter - ms, 800 * ms}, // long, but not long enough
			{resetAfter, 100 * ms},      // reset
			{ms, 200 * ms},
			{time.Minute, 100 * ms}, // reset
		}
		for i, s := range steps {
			started := time.Now()
			time.Sleep(s.uptime)
			crashed := time.Now()
			wait, err := b.Next(crashed, crashed.Sub(started), 0)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(wait)
			if got := time.Since(crashed); got != s.want {
				t.Errorf("step %d: after a %v run, restarted %v after the crash, want %v", i, s.uptime, got, s.want)
			}
		}
	})
}

// TestExponentialHugeMax: a valid policy whose Max is near the largest
// Duration ("no cap") must never yield a negative wait. float64(Max) rounds
// up to 2^63, and converting it back to a Duration used to overflow to
// math.MinInt64.
func TestExponentialHugeMax(t *testing.T) {
	e := Exponential{Initial: time.Hour, Max: math.MaxInt64, Multiplier: 2}
	spec := Spec{Name: "w", Run: func(ctx context.Context, w Worker) error { return nil }, Restart: e}
	if err := spec.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, n := range []int{1, 20, 40, 100} {
		got, _ := e.delay(n, 0)
		if got < 0 || got > e.Max {
			t.Errorf("%v: delay(%d) = %v (%d ns), want within [0, Max]", e, n, got, int64(got))
		}
	}
}
