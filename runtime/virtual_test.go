package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/internal/inmem"
	"github.com/bgworker/bgworker/runtime/internal/launch"
	"github.com/bgworker/bgworker/shmactor"
)

// Tests of the postmaster in virtual time: the real postmaster on the
// in-memory launcher (workers in goroutines), inside testing/synctest, so
// backoffs, timeouts and grace periods are exact and take no wall time.
// What only real processes can prove (the bridge, signals, reaping, fds,
// zombies, orphans, shared memory across processes) is tested elsewhere
// with real children.

func init() {
	// vt_run: runs until asked to stop.
	actors.MustDefine(actors.Spec{Name: "vt_run", Run: func(ctx context.Context, w actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
	// vt_fail: fails at once (exit 1: restart after backoff).
	actors.MustDefine(actors.Spec{Name: "vt_fail", Run: func(ctx context.Context, w actors.Worker) error {
		return errors.New("vt: failed")
	}})
	// vt_panic: panics at once (exit 2: a crash).
	actors.MustDefine(actors.Spec{Name: "vt_panic", Run: func(ctx context.Context, w actors.Worker) error {
		panic("vt: panic")
	}})
	// vt_slow_ready: reports ready after the duration in its Arg.
	actors.MustDefine(actors.Spec{Name: "vt_slow_ready", NotifyReady: true, Run: func(ctx context.Context, w actors.Worker) error {
		d, _ := time.ParseDuration(string(w.Arg()))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil
		}
		w.Ready()
		<-ctx.Done()
		return nil
	}})
	// vt_slow_stop: takes the duration in its Arg to stop once asked.
	actors.MustDefine(actors.Spec{Name: "vt_slow_stop", Run: func(ctx context.Context, w actors.Worker) error {
		d, _ := time.ParseDuration(string(w.Arg()))
		<-ctx.Done()
		time.Sleep(d) // the worker's own cleanup, in virtual time
		return nil
	}})
	// vt_shm: a shared-memory member that runs until asked to stop.
	actors.MustDefine(actors.Spec{Name: "vt_shm", StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: []shmactor.Region{{Name: "vt", Size: 4096}},
		Run: func(ctx context.Context, w actors.Worker) error {
			if _, err := w.Segment().Region("vt"); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}})
}

// vharness is a runtime on the in-memory launcher, inside a synctest bubble.
type vharness struct {
	t      *testing.T
	rt     *Runtime
	l      *inmem.Launcher
	start  time.Time // virtual time at Start
	mu     sync.Mutex
	events []Event
}

// newVirtual starts a runtime on the in-memory launcher. Call it inside
// synctest.Test; the runtime is shut down (fast) when the test ends.
func newVirtual(t *testing.T, cfg Config) *vharness {
	t.Helper()
	if cfg.Workers == nil {
		cfg.Workers = []actors.Spec{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.WarmPool == 0 {
		cfg.WarmPool = -1 // every start launches: spawn failures can be injected
	}
	v := &vharness{t: t}
	rt, err := newRuntime(cfg, launch.Options{NewLauncher: func(env launch.Env) launch.Launcher {
		v.l = inmem.New(env)
		return v.l
	}})
	if err != nil {
		t.Fatal(err)
	}
	v.rt = rt
	rt.Subscribe(func(e Event) {
		v.mu.Lock()
		v.events = append(v.events, e)
		v.mu.Unlock()
	})
	v.start = time.Now()
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Shutdown(context.Background(), phases.Fast); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		// protoactor's dead-letter throttle waits one interval (100 ms)
		// after a dead letter: the bubble must not end with it waiting.
		time.Sleep(150 * time.Millisecond)
	})
	return v
}

// since is the virtual time elapsed since Start.
func (v *vharness) since() time.Duration { return time.Since(v.start) }

// dyn starts a dynamic worker of code at PostmasterStart.
func (v *vharness) dyn(name, code, arg string, mod func(*actors.Spec)) *Handle {
	v.t.Helper()
	sp := actors.Spec{Name: name, Type: code, Arg: []byte(arg), StartAt: phases.PostmasterStart}
	if mod != nil {
		mod(&sp)
	}
	h, err := v.rt.StartWorker(context.Background(), sp)
	if err != nil {
		v.t.Fatal(err)
	}
	return h
}

// workerEvents returns name's events so far.
func (v *vharness) workerEvents(name string) []WorkerEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []WorkerEvent
	for _, e := range v.events {
		if we, ok := e.(WorkerEvent); ok && we.Name == name {
			out = append(out, we)
		}
	}
	return out
}

// starts returns the virtual times, since Start, at which name entered
// Starting.
func (v *vharness) starts(name string) []time.Duration {
	var out []time.Duration
	for _, e := range v.workerEvents(name) {
		if e.To == Starting {
			out = append(out, e.At.Sub(v.start))
		}
	}
	return out
}

func (v *vharness) info(name string) WorkerInfo {
	v.t.Helper()
	for _, w := range v.rt.Workers() {
		if w.Name == name {
			return w
		}
	}
	v.t.Fatalf("no worker %q", name)
	return WorkerInfo{}
}

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func sameDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An exponential policy without jitter restarts a worker that fails at
// once after exactly 1 s, 2 s and then 4 s (the cap): at 1 s, 3 s, 7 s and
// 11 s of virtual time.
func TestVirtualExponentialBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		v.dyn("exp", "vt_fail", "", func(s *actors.Spec) {
			s.Restart = actors.Exponential{Initial: time.Second, Multiplier: 2, Max: 4 * time.Second}
			s.Intensity = actors.Intensity{MaxRestarts: -1}
		})
		time.Sleep(12 * time.Second)
		synctest.Wait()
		if got, want := v.starts("exp"), durations(0, 1000, 3000, 7000, 11000); !sameDurations(got, want) {
			t.Fatalf("starts at %v, want %v", got, want)
		}
	})
}

// Fixed restarts after the same interval, counted from the exit.
func TestVirtualFixedRestart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		v.dyn("fixed", "vt_panic", "", func(s *actors.Spec) {
			s.Restart = actors.Fixed(250 * time.Millisecond)
			s.Intensity = actors.Intensity{MaxRestarts: -1}
		})
		time.Sleep(time.Second)
		synctest.Wait()
		if got, want := v.starts("fixed"), durations(0, 250, 500, 750, 1000); !sameDurations(got, want) {
			t.Fatalf("starts at %v, want %v", got, want)
		}
		if ex := v.info("fixed").LastExit; ex == nil || ex.Reason != ReasonExit2 || !ex.Crash {
			t.Fatalf("last exit %+v, want an exit2 crash", ex)
		}
	})
}

// NeverRestart leaves a crashed worker crashed and an exit-1 worker
// stopped, and neither starts again.
func TestVirtualNeverRestart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		v.dyn("crash-once", "vt_panic", "", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
		v.dyn("fail-once", "vt_fail", "", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
		time.Sleep(time.Minute)
		synctest.Wait()
		for name, want := range map[string]WorkerState{"crash-once": Crashed, "fail-once": Stopped} {
			if wi := v.info(name); wi.State != want || wi.Incarnation != 1 {
				t.Errorf("%s: %v after %d runs, want %v after 1", name, wi.State, wi.Incarnation, want)
			}
		}
	})
}

// More restarts than the intensity allows within its window fail the
// worker: with 3 in 10 s and a fixed 1 s backoff, the 4th failure (at
// 3 s) is the last.
func TestVirtualIntensityFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		v.dyn("loop", "vt_fail", "", func(s *actors.Spec) {
			s.Restart = actors.Fixed(time.Second)
			s.Intensity = actors.Intensity{MaxRestarts: 3, Window: 10 * time.Second}
		})
		v.dyn("bystander", "vt_run", "", nil)
		time.Sleep(time.Minute)
		synctest.Wait()
		if got, want := v.starts("loop"), durations(0, 1000, 2000, 3000); !sameDurations(got, want) {
			t.Fatalf("starts at %v, want %v", got, want)
		}
		evs := v.workerEvents("loop")
		last := evs[len(evs)-1]
		if last.To != Failed || last.At.Sub(v.start) != 3*time.Second {
			t.Fatalf("last event %v at %v, want failed at 3s", last.To, last.At.Sub(v.start))
		}
		if wi := v.info("bystander"); wi.State != Running || wi.Incarnation != 1 {
			t.Fatalf("bystander %v after %d runs; a sibling's failure must not touch it", wi.State, wi.Incarnation)
		}
	})
}

// A critical worker that fails for good shuts the runtime down, and Err
// says why.
func TestVirtualCriticalEscalates(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		v.dyn("heart", "vt_panic", "", func(s *actors.Spec) {
			s.Restart = actors.Fixed(100 * time.Millisecond)
			s.Intensity = actors.Intensity{MaxRestarts: 2, Window: time.Minute}
			s.Critical = true
		})
		v.dyn("other", "vt_run", "", func(s *actors.Spec) { s.StopTimeout = time.Second })
		<-v.rt.Done()
		var exErr *ExitError
		if !errors.Is(v.rt.Err(), ErrCriticalWorker) || !errors.As(v.rt.Err(), &exErr) || exErr.Exit.Reason != ReasonExit2 {
			t.Fatalf("Err = %v, want ErrCriticalWorker carrying the last exit (exit2) as an *ExitError", v.rt.Err())
		}
		if got := v.since(); got != 200*time.Millisecond {
			t.Fatalf("shut down at %v, want at the third crash, 200ms", got)
		}
		if wi := v.info("other"); wi.State != Stopped {
			t.Fatalf("other is %v after the escalation, want stopped", wi.State)
		}
	})
}

// A worker that does not report ready within its StartTimeout is killed
// at exactly that time, and the start counts as a failure.
func TestVirtualStartTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{})
		h := v.dyn("sleepy", "vt_slow_ready", "1h", func(s *actors.Spec) {
			s.StartTimeout = 300 * time.Millisecond
			s.Restart = actors.NeverRestart
		})
		_, err := h.WaitStarted(context.Background())
		var ee *ExitError
		if !errors.Is(err, ErrStartFailed) || !errors.As(err, &ee) || ee.Exit.Reason != ReasonStartTimeout {
			t.Fatalf("WaitStarted = %v, want an *ExitError for start_timeout wrapping ErrStartFailed", err)
		}
		if got := v.since(); got != 300*time.Millisecond {
			t.Fatalf("gave up at %v, want 300ms", got)
		}
	})
}

// With the warm pool, a start timeout's exit counts its uptime from the
// assignment, not from when the idle child was spawned: a child that sat
// in the pool for 3 s and then timed out after 300 ms ran 300 ms.
func TestVirtualStartTimeoutUptimeFromAssignment(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{WarmPool: 2})
		time.Sleep(3 * time.Second) // virtual time (synctest): the pool's children age exactly 3 s
		if st := v.rt.Status().Pool; st.Idle != 2 {
			t.Fatalf("pool %+v after 3s, want 2 idle", st)
		}
		h := v.dyn("sleepy", "vt_slow_ready", "1h", func(s *actors.Spec) {
			s.StartTimeout = 300 * time.Millisecond
			s.Restart = actors.NeverRestart
		})
		_, err := h.WaitStarted(context.Background())
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Exit.Reason != ReasonStartTimeout {
			t.Fatalf("WaitStarted = %v, want start_timeout", err)
		}
		if ee.Exit.Uptime != 300*time.Millisecond {
			t.Fatalf("uptime %v, want 300ms: from the assignment, not from the pool child's spawn", ee.Exit.Uptime)
		}
	})
}

// The throttle under a storm of 1,000 workers that each take 10 ms to get
// ready: never more than MaxStarting start at once, every one is running
// at exactly 1,000 / 4 × 10 ms, and the server loop does not spin while
// it waits for a start slot.
func TestVirtualStormThrottle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, maxStarting = 1000, 4
		v := newVirtual(t, Config{MaxWorkers: n, MaxStarting: maxStarting, StartsPerIteration: 8})
		var mu sync.Mutex
		starting, peak, running := 0, 0, 0
		allRunning := make(chan time.Duration, 1)
		v.rt.Subscribe(func(e Event) {
			we, ok := e.(WorkerEvent)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if we.To == Starting {
				starting++
				peak = max(peak, starting)
			}
			if we.From == Starting {
				starting--
			}
			if we.To == Running {
				if running++; running == n {
					allRunning <- v.since()
				}
			}
		})
		for i := range n {
			v.dyn("s"+strconv.Itoa(i), "vt_slow_ready", "10ms", nil)
		}
		took := <-allRunning
		if want := n / maxStarting * 10 * time.Millisecond; took != want {
			t.Errorf("all %d running at %v, want %v", n, took, want)
		}
		if peak != maxStarting {
			t.Errorf("%d starting at once at the peak, want %d", peak, maxStarting)
		}
		if iters := v.rt.pm.ticks.Load(); iters > 3*n {
			t.Errorf("%d server-loop iterations for %d starts: the throttled loop spins", iters, n)
		}
	})
}

// Shutdown in each mode, in virtual time: smart waits for the workers to
// end by themselves, in reverse phase order; fast stops the latest phase
// first and kills what outlives its grace period at exactly that period;
// immediate kills everything at once.
func TestVirtualShutdownModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []phases.ShutdownMode{phases.Smart, phases.Fast, phases.Immediate} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				v := newVirtual(t, Config{})
				if err := v.rt.Advance(context.Background(), phases.RecoveryFinished); err != nil {
					t.Fatal(err)
				}
				// early stops quickly; late takes 2 s, beyond its 1 s grace.
				v.dyn("early", "vt_slow_stop", "100ms", func(s *actors.Spec) { s.StopTimeout = time.Second })
				v.dyn("late", "vt_slow_stop", "2s", func(s *actors.Spec) {
					s.StartAt, s.StopTimeout = phases.RecoveryFinished, time.Second
				})
				synctest.Wait()
				begin := time.Now()
				var took time.Duration
				v.rt.Subscribe(func(e Event) {
					if se, ok := e.(ShutdownEvent); ok && se.Done {
						took = time.Since(begin)
					}
				})
				// In memory a killed worker's goroutine runs on to its own
				// end, and Shutdown waits for it; the shutdown itself is
				// over when its Done event comes.
				if err := v.rt.Shutdown(context.Background(), mode); err != nil {
					t.Fatal(err)
				}
				stopped := map[string]time.Duration{}
				reason := map[string]string{}
				for _, n := range []string{"early", "late"} {
					for _, e := range v.workerEvents(n) {
						if e.Exit != nil {
							stopped[n], reason[n] = e.At.Sub(begin), e.Exit.Reason
						}
					}
				}
				var want map[string]time.Duration
				var wantReason map[string]string
				switch mode {
				case phases.Smart: // late ends itself after 2 s, then early after 100 ms more
					want = map[string]time.Duration{"late": 2 * time.Second, "early": 2100 * time.Millisecond}
					wantReason = map[string]string{"late": ReasonExit0, "early": ReasonExit0}
				case phases.Fast: // late is killed at its 1 s grace, then early ends 100 ms later
					want = map[string]time.Duration{"late": time.Second, "early": 1100 * time.Millisecond}
					wantReason = map[string]string{"late": ReasonKilled, "early": ReasonExit0}
				case phases.Immediate:
					want = map[string]time.Duration{"late": 0, "early": 0}
					wantReason = map[string]string{"late": ReasonShutdown, "early": ReasonShutdown}
				}
				for n := range want {
					if stopped[n] != want[n] || reason[n] != wantReason[n] {
						t.Errorf("%s ended %v into the shutdown (%s), want %v (%s)", n, stopped[n], reason[n], want[n], wantReason[n])
					}
				}
				if took != want["early"] {
					t.Errorf("the shutdown was done after %v, want %v", took, want["early"])
				}
			})
		})
	}
}

// All-for-one in memory: a shared-memory member's crash stops the other
// members (not the worker without shared memory), waits until all are
// gone, builds a new generation and restarts the group in registration
// order: the members taken down at once, the crashed one after its own
// backoff, which grows; the others' backoff is not charged.
func TestVirtualAllForOne(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{GroupStopTimeout: time.Second, GroupResetIntensity: actors.Intensity{MaxRestarts: -1}})
		if err := v.rt.Advance(context.Background(), phases.ConsistentState); err != nil {
			t.Fatal(err)
		}
		exp := actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: 10 * time.Second}
		for _, n := range []string{"m1", "m2", "m3"} {
			v.dyn(n, "vt_shm", "", func(s *actors.Spec) {
				s.StartAt, s.SharedMemory, s.Restart = phases.ConsistentState, true, exp
				s.Intensity = actors.Intensity{MaxRestarts: -1}
			})
		}
		v.dyn("plain", "vt_run", "", nil)
		synctest.Wait()
		gen1 := v.rt.Segment().Generation()
		for round, wantBackoff := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
			time.Sleep(time.Second) // apart from what came before: events at the crash's instant are the reset's
			crashAt := time.Now()
			if err := v.l.Crash("m2"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			synctest.Wait()
			if g := v.rt.Segment().Generation(); g != gen1+uint64(round)+1 {
				t.Fatalf("round %d: generation %d, want %d", round, g, gen1+uint64(round)+1)
			}
			var order []string
			at := map[string]time.Duration{}
			for _, n := range []string{"m1", "m2", "m3"} {
				evs := v.workerEvents(n)
				for _, e := range evs {
					if e.To == Starting && !e.At.Before(crashAt) {
						at[n] = e.At.Sub(crashAt)
					}
				}
			}
			v.mu.Lock()
			for _, e := range v.events {
				if we, ok := e.(WorkerEvent); ok && we.To == Starting && !we.At.Before(crashAt) {
					order = append(order, we.Name)
				}
			}
			v.mu.Unlock()
			if fmt.Sprint(order) != "[m1 m3 m2]" {
				t.Errorf("round %d: restart order %v, want [m1 m3 m2] (registration order, the crashed one after its backoff)", round, order)
			}
			if at["m1"] != 0 || at["m3"] != 0 || at["m2"] != wantBackoff {
				t.Errorf("round %d: restarts at %v after the crash, want m1 and m3 at 0 and m2 at %v", round, at, wantBackoff)
			}
			if wi := v.info("m1"); wi.LastExit == nil || wi.LastExit.Reason != ReasonGroupReset || wi.LastExit.Crash {
				t.Errorf("round %d: m1's exit %+v, want group_reset and no crash", round, wi.LastExit)
			}
		}
		if wi := v.info("plain"); wi.Incarnation != 1 || wi.State != Running {
			t.Fatalf("the worker without shared memory ran %d times and is %v; want once, running", wi.Incarnation, wi.State)
		}
		for _, n := range []string{"m1", "m3"} {
			if b := v.rt.pm.byName[n].backoff.Attempt(); b != 0 {
				t.Errorf("%s's backoff was charged %d times for resets it did not cause", n, b)
			}
		}
	})
}

// A member that fails while the group restarts resets the group again: no
// mix of generations, every member restarted on the newest.
func TestVirtualMemberFailsDuringReset(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{GroupStopTimeout: time.Second, GroupResetIntensity: actors.Intensity{MaxRestarts: -1}})
		if err := v.rt.Advance(context.Background(), phases.ConsistentState); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b"} {
			v.dyn(n, "vt_shm", "", func(s *actors.Spec) {
				s.StartAt, s.SharedMemory, s.Restart = phases.ConsistentState, true, actors.Fixed(0)
				s.Intensity = actors.Intensity{MaxRestarts: -1}
			})
		}
		synctest.Wait()
		v.l.FailNextStart("b") // b's start on the new generation fails
		if err := v.l.Crash("a"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		seg := v.rt.Segment()
		if seg.Generation() != 3 {
			t.Fatalf("generation %d, want 3: the failed start must reset the group again", seg.Generation())
		}
		for _, n := range []string{"a", "b"} {
			if wi := v.info(n); wi.State != Running {
				t.Fatalf("%s is %v, want running on generation 3", n, wi.State)
			}
		}
		if got := testCounter(t, v.rt.metrics.resets); got != 2 {
			t.Fatalf("resets = %v, want 2", got)
		}
	})
}

// An idle child that died the moment before it was handed a worker (the
// write of the assignment fails on its closed socket) is recorded by how
// it died, SIGKILL, not as a protocol error of the worker's; the worker
// restarts and runs.
func TestVirtualIdleChildDeadOnAssign(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{WarmPool: 1})
		synctest.Wait() // the pool's child is idle
		v.l.KillOnAssign()
		v.dyn("w", "vt_run", "", func(sp *actors.Spec) { sp.Restart = actors.Fixed(100 * time.Millisecond) })
		time.Sleep(time.Second)
		synctest.Wait()
		info := v.info("w")
		if len(info.Exits) != 1 || info.Exits[0].Reason != "signal:KILL" {
			t.Fatalf("exits %+v; want one, signal:KILL", info.Exits)
		}
		if info.State != Running || info.Incarnation != 2 {
			t.Errorf("w is %s in incarnation %d; want running in 2", info.State, info.Incarnation)
		}
	})
}

// An idle child killed for falling silent is out of the pool from that
// moment, not from its exit a millisecond later: a worker started in
// between gets another child and never sees that exit.
func TestVirtualSilentIdleChildIsNotAssigned(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		v := newVirtual(t, Config{WarmPool: 1})
		v.l.ExitDelay = time.Millisecond
		synctest.Wait()
		pid, err := v.l.StallIdle()
		if err != nil {
			t.Fatal(err)
		}
		// Just past the heartbeat timeout: reported silent and killed, its
		// exit not yet in.
		time.Sleep(v.rt.cfg.HeartbeatTimeout + 500*time.Microsecond)
		synctest.Wait()
		v.dyn("w", "vt_run", "", nil)
		time.Sleep(time.Second)
		synctest.Wait()
		info := v.info("w")
		if info.State != Running || len(info.Exits) != 0 || info.Incarnation != 1 {
			t.Fatalf("w is %s in incarnation %d with exits %+v; want running in 1, no exit", info.State, info.Incarnation, info.Exits)
		}
		if info.PID == pid {
			t.Errorf("w runs in the silent child %d", pid)
		}
	})
}
