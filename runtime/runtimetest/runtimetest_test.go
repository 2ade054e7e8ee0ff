package runtimetest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/runtimetest"
	"github.com/bgworker/bgworker/shmactor"
)

func TestMain(m *testing.M) { runtimetest.Main(m) }

// unsendable is a type no codec knows: it cannot cross the bridge.
type unsendable struct{ N int }

func init() {
	// flaky fails at once: exit 1, restart after backoff.
	actors.MustDefine(actors.Spec{Name: "flaky", Run: func(ctx context.Context, w actors.Worker) error {
		return errors.New("flaky: upstream unavailable")
	}})
	// steady runs until asked to stop.
	actors.MustDefine(actors.Spec{Name: "steady", Run: func(ctx context.Context, w actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
	// echo answers requests with what it got.
	actors.MustDefine(actors.Spec{Name: "echo", Props: func(w actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case *actors.Terminate:
				ctx.Stop(ctx.Self())
			case string, []byte:
				if ctx.Sender() != nil {
					ctx.Respond(m)
				}
			}
		})
	}})
	// chatty reports its activity, logs, and counts its reloads in its
	// activity.
	actors.MustDefine(actors.Spec{Name: "chatty", Run: func(ctx context.Context, w actors.Worker) error {
		w.Logger().Info("chatty: up", "arg", string(w.Arg()))
		w.SetActivity("reloads=0")
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return nil
			case <-w.Reload():
				w.SetActivity("reloads=" + strconv.Itoa(n))
			}
		}
	}})
	// member holds shared memory until asked to stop.
	actors.MustDefine(actors.Spec{Name: "member", StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: []shmactor.Region{{Name: "kit", Size: 4096}},
		Run: func(ctx context.Context, w actors.Worker) error {
			if _, err := w.Segment().Region("kit"); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}})
}

func seconds(ts []time.Time, from time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, at := range ts {
		out[i] = at.Sub(from)
	}
	return out
}

// A worker that fails at once restarts at exactly 1 s, 3 s, 7 s and 11 s of
// virtual time under Exponential{1 s, ×2, max 4 s}.
func TestExactRestartTimes(t *testing.T) {
	t.Parallel()
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		t0 := time.Now()
		if _, err := rt.StartWorker(t.Context(), actors.Spec{Name: "w", Type: "flaky", StartAt: phases.PostmasterStart,
			Restart:   actors.Exponential{Initial: time.Second, Multiplier: 2, Max: 4 * time.Second},
			Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(12 * time.Second)
		synctest.Wait()
		got := seconds(rt.Starts("w"), t0)
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 11 * time.Second}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("starts at %v, want %v", got, want)
		}
	})
	t.Logf("12 s of virtual time in %v of wall time", time.Since(wall))
}

// "My worker retries three times with backoff, then is failed": the kit's
// version of the test.
func TestRetriesThreeTimesThenFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		t0 := time.Now()
		rt.StartWorker(t.Context(), actors.Spec{Name: "w", Type: "flaky", StartAt: phases.PostmasterStart,
			Restart:   actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: time.Second},
			Intensity: actors.Intensity{MaxRestarts: 3, Window: time.Minute}})
		if err := rt.WaitState(t.Context(), "w", runtime.Failed); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(seconds(rt.Starts("w"), t0)); got != "[0s 100ms 300ms 700ms]" {
			t.Fatalf("starts at %s, want [0s 100ms 300ms 700ms]", got)
		}
	})
}

// A worker that exceeds its restart intensity is failed, at the instant of
// the failure past the limit.
func TestIntensityExceededIsFailed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		t0 := time.Now()
		rt.StartWorker(t.Context(), actors.Spec{Name: "w", Type: "flaky", StartAt: phases.PostmasterStart,
			Restart: actors.Fixed(time.Second), Intensity: actors.Intensity{MaxRestarts: 2, Window: time.Minute}})
		if err := rt.WaitState(t.Context(), "w", runtime.Failed); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d != 2*time.Second {
			t.Fatalf("failed at %v, want 2s (the third failure)", d)
		}
		if n := len(rt.Exits("w")); n != 3 {
			t.Fatalf("%d exits, want 3", n)
		}
	})
}

// All-for-one with two shared-memory workers, in memory: one dies
// mid-write, both restart on a new generation, and the other's exit is the
// group's reset, not a crash.
func TestAllForOneInMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		rt.Advance(t.Context(), phases.ConsistentState)
		for _, n := range []string{"a", "b"} {
			if _, err := rt.StartWorker(t.Context(), actors.Spec{Name: n, Type: "member", StartAt: phases.ConsistentState,
				SharedMemory: true, Restart: actors.Fixed(0)}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		gen := rt.Segment().Generation()
		if err := rt.DieMidWrite("a"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g := rt.Segment().Generation(); g != gen+1 {
			t.Fatalf("generation %d after the reset, want %d", g, gen+1)
		}
		for _, n := range []string{"a", "b"} {
			if w, _ := rt.Info(n); w.State != runtime.Running || w.Incarnation != 2 {
				t.Fatalf("%s: %v, incarnation %d; want running its second run", n, w.State, w.Incarnation)
			}
		}
		if ex := rt.Exits("a")[0]; ex.Reason != runtime.ReasonNoGoodbye || !ex.Crash {
			t.Fatalf("a's exit %+v, want no_goodbye, a crash", ex)
		}
		if ex := rt.Exits("b")[0]; ex.Reason != runtime.ReasonGroupReset || ex.Crash {
			t.Fatalf("b's exit %+v, want group_reset, not a crash", ex)
		}
	})
}

// Every fault, in memory: each ends the worker with its reason, at the
// instant it should.
func TestFaultsInMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 5 * time.Second})
		for _, tc := range []struct {
			fault  func(name string) error
			reason string
			after  time.Duration
		}{
			{rt.Crash, runtime.ReasonExit2, 0},
			{func(n string) error { return rt.Exit(n, 1) }, runtime.ReasonExit1, 0},
			{rt.Kill, "signal:KILL", 0},
			{rt.Stall, runtime.ReasonHeartbeat, 5 * time.Second},
		} {
			name := "f-" + strings.ReplaceAll(tc.reason, ":", "-")
			h, err := rt.StartWorker(t.Context(), actors.Spec{Name: name, Type: "steady", StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.WaitStarted(t.Context()); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if err := tc.fault(name); err != nil {
				t.Fatal(err)
			}
			ex, err := h.WaitStopped(t.Context())
			if err != nil || ex == nil || ex.Reason != tc.reason {
				t.Fatalf("%s: exit %+v, %v; want %s", name, ex, err, tc.reason)
			}
			if d := ex.At.Sub(t0); d != tc.after {
				t.Errorf("%s: ended %v after the fault, want %v", name, d, tc.after)
			}
		}
		// A failed start is a start failure, and the restart policy retries.
		rt.FailNextStart("retried")
		h, _ := rt.StartWorker(t.Context(), actors.Spec{Name: "retried", Type: "steady", StartAt: phases.PostmasterStart, Restart: actors.Fixed(time.Second)})
		if err := rt.WaitState(t.Context(), "retried", runtime.Running); err != nil {
			t.Fatal(err)
		}
		if ex := rt.Exits("retried"); len(ex) != 1 || ex[0].Reason != runtime.ReasonSpawnFailed {
			t.Fatalf("exits %+v, want one spawn_failed", ex)
		}
		if st, _, _ := h.Status(); st != runtime.Running {
			t.Fatalf("retried is %v, want running", st)
		}
		for _, fault := range []func(string) error{rt.Crash, rt.Kill, rt.Stall, rt.DieMidWrite, func(n string) error { return rt.Exit(n, 1) }} {
			if err := fault("nobody"); !errors.Is(err, runtimetest.ErrNotRunning) || !strings.Contains(err.Error(), `"nobody"`) {
				t.Fatalf("a fault for a worker nobody runs: %v, want ErrNotRunning naming it", err)
			}
		}
	})
}

// The worker-side API behaves in memory as in a child: its logger names
// the worker in the host's log, its activity shows in the rows, and a
// reload reaches it.
func TestWorkerAPIInMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		rt := runtimetest.New(t, runtime.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if _, err := rt.StartWorker(t.Context(), actors.Spec{Name: "c", Type: "chatty", Arg: []byte("hello"), StartAt: phases.PostmasterStart}); err != nil {
			t.Fatal(err)
		}
		// An activity is no event: once every goroutine of the bubble
		// waits (synctest.Wait), the row has whatever was reported.
		activity := func(want string) {
			t.Helper()
			synctest.Wait()
			if w, _ := rt.Info("c"); w.Activity != want {
				t.Fatalf("activity %q, want %q", w.Activity, want)
			}
		}
		activity("reloads=0")
		for i := 1; i <= 2; i++ {
			if n, err := rt.Reload(t.Context()); err != nil || n != 1 {
				t.Fatalf("Reload = %d, %v; want 1 worker told", n, err)
			}
			activity("reloads=" + strconv.Itoa(i))
		}
		if l := logs.String(); !strings.Contains(l, `msg="chatty: up" worker=c`) || !strings.Contains(l, "arg=hello") {
			t.Fatalf("the worker's log line in the host's log:\n%s", l)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Messages to an in-memory worker go through the codec: a type that could
// not cross the bridge fails here too.
func TestMessagesGoThroughTheCodec(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		h, _ := rt.StartWorker(t.Context(), actors.Spec{Name: "e", Type: "echo", StartAt: phases.PostmasterStart})
		if _, err := h.WaitStarted(t.Context()); err != nil {
			t.Fatal(err)
		}
		if r, err := h.Request(t.Context(), "ping"); err != nil || r != "ping" {
			t.Fatalf("Request(ping) = %v, %v", r, err)
		}
		if _, err := h.Request(t.Context(), unsendable{1}); err == nil || !strings.Contains(err.Error(), "codec") {
			t.Fatalf("Request of an unregistered type = %v, want a codec error", err)
		}
	})
}

// The same faults with real children.
func TestFaultsInProcesses(t *testing.T) {
	rt := runtimetest.NewProcess(t, runtime.Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		fault  func(name string) error
		reason string
	}{
		{rt.Crash, runtime.ReasonExit2},
		{func(n string) error { return rt.Exit(n, 1) }, runtime.ReasonExit1},
		{rt.Kill, "signal:KILL"},
		{rt.Stall, runtime.ReasonHeartbeat},
	} {
		name := "p-" + strings.ReplaceAll(tc.reason, ":", "-")
		h, err := rt.StartWorker(ctx, actors.Spec{Name: name, Type: "steady", StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.WaitStarted(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tc.fault(name); err != nil {
			t.Fatal(err)
		}
		if ex, err := h.WaitStopped(ctx); err != nil || ex == nil || ex.Reason != tc.reason {
			t.Fatalf("%s: exit %+v, %v; want %s", name, ex, err, tc.reason)
		}
	}
	if err := rt.FailNextStart("retried"); err != nil {
		t.Fatal(err)
	}
	rt.StartWorker(ctx, actors.Spec{Name: "retried", Type: "steady", StartAt: phases.PostmasterStart, Restart: actors.Fixed(10 * time.Millisecond)})
	if err := rt.WaitState(ctx, "retried", runtime.Running); err != nil {
		t.Fatal(err)
	}
	if w, _ := rt.Info("retried"); w.Restarts != 1 || w.LastExit == nil || w.LastExit.Code != 3 {
		t.Fatalf("retried: %+v, want one restart after a refused start (exit 3)", w)
	}
	rt.Advance(ctx, phases.ConsistentState)
	for _, n := range []string{"a", "b"} {
		h, err := rt.StartWorker(ctx, actors.Spec{Name: n, Type: "member", StartAt: phases.ConsistentState, SharedMemory: true, Restart: actors.Fixed(0)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.WaitStarted(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gen := rt.Segment().Generation()
	if err := rt.DieMidWrite("a"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Until(ctx, func() bool {
		a, _ := rt.Info("a")
		b, _ := rt.Info("b")
		return rt.Segment().Generation() == gen+1 && a.State == runtime.Running && b.State == runtime.Running && b.Incarnation == 2
	}); err != nil {
		t.Fatalf("the group back on a new generation: %v", err)
	}
}

// The examples' test functions run as tests too.
func TestExamples(t *testing.T) {
	t.Run("memory", testFetcherGivesUp)
	t.Run("process", testSurvivesSigkill)
}

// A service binary that does not import the kit links none of it: no
// fault injection, no in-memory launcher.
func TestServiceBinaryLinksNoKit(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/bgworker/bgworker/sample/cmd/bgwdemo").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasSuffix(pkg, "/runtime/runtimetest") || strings.HasSuffix(pkg, "/runtime/internal/inmem") {
			t.Errorf("the demo links %s", pkg)
		}
	}
}
