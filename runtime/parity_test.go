package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// The pieces of PostgreSQL's background-worker API beyond starting and
// stopping, with real children: readiness after setup, activity, reload,
// process titles, status without waiting, watching from the start, typed
// exits, and restart_after_crash = off.

func init() {
	// notify_ready: ready only once it calls Ready, after the file named
	// in its Arg exists; "exit3" instead exits 3 before it is ready.
	actors.MustDefine(actors.Spec{Name: "notify_ready", NotifyReady: true, Run: func(ctx context.Context, w actors.Worker) error {
		if string(w.Arg()) == "exit3" {
			fmt.Fprintln(os.Stderr, "notify_ready: setup failed")
			os.Exit(3)
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := os.Stat(string(w.Arg())); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		w.Ready()
		<-ctx.Done()
		return nil
	}})
	// busy: reports its activity per item, 1,000 items, then waits.
	actors.MustDefine(actors.Spec{Name: "busy", Run: func(ctx context.Context, w actors.Worker) error {
		for i := 1; i <= 1000; i++ {
			w.SetActivity("copying batch " + strconv.Itoa(i))
		}
		<-ctx.Done()
		return nil
	}})
	// reloader: counts reloads and says so in its activity.
	actors.MustDefine(actors.Spec{Name: "reloader", Run: func(ctx context.Context, w actors.Worker) error {
		n := 0
		w.SetActivity("reloads=0")
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-w.Reload():
				n++
				w.SetActivity("reloads=" + strconv.Itoa(n))
			}
		}
	}})
	// ready_after_reload: a NotifyReady worker whose setup waits for a
	// reload before it is ready.
	actors.MustDefine(actors.Spec{Name: "ready_after_reload", NotifyReady: true, Run: func(ctx context.Context, w actors.Worker) error {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Reload():
		}
		w.Ready()
		<-ctx.Done()
		return nil
	}})
	// actor_reloader: an actor that counts the *actors.Reload it receives.
	actors.MustDefine(actors.Spec{Name: "actor_reloader", Props: func(w actors.Worker) *actor.Props {
		n := 0
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch ctx.Message().(type) {
			case *actor.Started:
				w.SetActivity("reloads=0")
			case *actors.Reload:
				n++
				w.SetActivity("reloads=" + strconv.Itoa(n))
			}
		})
	}})
}

// A NotifyReady worker stays starting until it calls Ready, and
// WaitStarted returns then; one that dies before it is ready makes
// WaitStarted fail with an *ExitError that tells how.
func TestNotifyReady(t *testing.T) {
	h := newHarness(t, Config{})
	gate := filepath.Join(t.TempDir(), "gate")
	hd, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "setup", Type: "notify_ready", Arg: []byte(gate), StartAt: phases.PostmasterStart})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { _, err := hd.WaitStarted(ctx(t)); started <- err }()
	h.eventually("the child to be spawned", func() bool { return h.info("setup").PID != 0 })
	<-time.After(200 * time.Millisecond) // its setup takes a while: the gate stays shut
	if st, pid, err := hd.Status(); err != nil || st != Starting || pid == 0 {
		t.Fatalf("Status before Ready = %v, %d, %v; want starting with a pid", st, pid, err)
	}
	select {
	case err := <-started:
		t.Fatalf("WaitStarted returned (%v) before the worker called Ready", err)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatalf("WaitStarted after Ready: %v", err)
	}
	if st, _, _ := hd.Status(); st != Running {
		t.Fatalf("Status after Ready = %v, want running", st)
	}

	bad, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "bad-setup", Type: "notify_ready", Arg: []byte("exit3"),
		StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.WaitStarted(ctx(t))
	var ee *ExitError
	if !errors.Is(err, ErrStartFailed) || !errors.As(err, &ee) {
		t.Fatalf("WaitStarted of a worker dying before ready = %v, want an *ExitError wrapping ErrStartFailed", err)
	}
	if ee.Exit.Code != 3 || ee.Exit.Reason != ReasonExitOther || !strings.Contains(ee.Exit.Stderr, "setup failed") {
		t.Fatalf("exit = %+v, want code 3 with its stderr", ee.Exit)
	}
}

// A NotifyReady worker that never calls Ready is killed at its
// StartTimeout, which counts until Ready, not until its actor started.
func TestNotifyReadyStartTimeout(t *testing.T) {
	h := newHarness(t, Config{})
	hd, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "never", Type: "notify_ready", Arg: []byte(filepath.Join(t.TempDir(), "shut")),
		StartAt: phases.PostmasterStart, StartTimeout: 300 * time.Millisecond, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	_, err = hd.WaitStarted(ctx(t))
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Exit.Reason != ReasonStartTimeout {
		t.Fatalf("WaitStarted = %v, want an *ExitError for start_timeout", err)
	}
}

// SetActivity, called per item, is shown in Workers and in /workers with
// the time it was set, and a state change clears it.
func TestActivity(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	_, pid := h.start("copier", "busy", "", nil)
	h.eventually("the last activity", func() bool { return h.info("copier").Activity == "copying batch 1000" })
	wi := h.info("copier")
	if wi.ActivityAt.IsZero() || time.Since(wi.ActivityAt) > time.Minute {
		t.Fatalf("activity_at = %v, want when it was set", wi.ActivityAt)
	}
	row := row(t, workersRows(t, "http://"+h.rt.Addr()), "copier")
	if row["activity"] != "copying batch 1000" || row["activity_at"] == nil {
		t.Fatalf("/workers row activity = %v at %v", row["activity"], row["activity_at"])
	}
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitState("copier", Crashed)
	if a := h.info("copier").Activity; a != "" {
		t.Fatalf("activity %q after a crash, want it cleared", a)
	}
}

// Reload reaches a loop worker on its Reload channel and an actor worker
// as *actors.Reload; with HandleSignals, SIGHUP to the host does the same;
// a worker never gets SIGHUP itself.
func TestReload(t *testing.T) {
	h := newHarness(t, Config{HandleSignals: true})
	_, loopPID := h.start("loop", "reloader", "", nil)
	h.start("actor", "actor_reloader", "", nil)
	for _, n := range []string{"loop", "actor"} {
		h.eventually(n+" ready for reloads", func() bool { return h.info(n).Activity == "reloads=0" })
	}
	if n, err := h.rt.Reload(ctx(t)); err != nil || n != 2 {
		t.Fatalf("Reload = %d, %v; want 2 workers told", n, err)
	}
	for _, n := range []string{"loop", "actor"} {
		h.eventually(n+" reloaded once", func() bool { return h.info(n).Activity == "reloads=1" })
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for _, n := range []string{"loop", "actor"} {
		h.eventually(n+" reloaded by SIGHUP", func() bool { return h.info(n).Activity == "reloads=2" })
	}
	// SIGHUP straight to a worker does not end it: it ignores the signal.
	syscall.Kill(loopPID, syscall.SIGHUP)
	if _, err := h.rt.Reload(ctx(t)); err != nil {
		t.Fatal(err)
	}
	h.eventually("the loop worker still there, reloaded", func() bool { return h.info("loop").Activity == "reloads=3" })
	if wi := h.info("loop"); wi.PID != loopPID || wi.Restarts != 0 {
		t.Fatalf("after SIGHUP to the worker: pid %d, %d restarts; want %d, 0", wi.PID, wi.Restarts, loopPID)
	}
}

// A reload reaches a worker that is still starting (NotifyReady, in its
// setup) too: it must not miss a change it would have read after it. The
// start is cold, so the reload is asked while the child is still in its
// handshake: the notice follows the assignment.
func TestReloadReachesStartingWorker(t *testing.T) {
	h := newHarness(t, Config{WarmPool: -1})
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "setup", Type: "ready_after_reload", StartAt: phases.PostmasterStart,
		StartTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// At once on its start: the child is still being exec'd.
	h.waitEvent("setup starting", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "setup" && we.To == Starting
	})
	if n, err := h.rt.Reload(ctx(t)); err != nil || n != 1 {
		t.Fatalf("Reload = %d, %v; want the starting worker told", n, err)
	}
	h.waitState("setup", Running)
}

// comm reads a thread's or process's name.
func comm(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// ps shows which worker a child runs: its name, cut to 15 bytes, as the
// process's (main thread's) name; an idle pool child shows bgw-idle.
func TestProcessTitles(t *testing.T) {
	h := newHarness(t, Config{WarmPool: 1})
	h.eventually("an idle child", func() bool { return len(h.rt.IdleChildren()) == 1 })
	idle := h.rt.IdleChildren()[0]
	if got := comm(t, "/proc/"+itoa(idle)+"/comm"); got != "bgw-idle" {
		t.Fatalf("idle child's comm = %q, want bgw-idle", got)
	}
	_, pid := h.start("a-rather-long-worker-name", "fault", "run", nil)
	if got, want := comm(t, "/proc/"+itoa(pid)+"/comm"), "a-rather-long-w"; got != want {
		t.Errorf("the worker's child is named %q, want %q", got, want)
	}
}

// Status and WorkerByPID answer from the published rows without waiting,
// and follow the worker through its restarts.
func TestStatusAndWorkerByPID(t *testing.T) {
	h := newHarness(t, Config{})
	hd, pid := h.start("st", "fault", "run", nil)
	if st, p, err := hd.Status(); err != nil || st != Running || p != pid {
		t.Fatalf("Status = %v, %d, %v; want running, %d", st, p, err, pid)
	}
	if wi, ok := h.rt.WorkerByPID(pid); !ok || wi.Name != "st" {
		t.Fatalf("WorkerByPID(%d) = %+v, %v", pid, wi, ok)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitState("st", Crashed)
	h.waitState("st", Running)
	st, p2, err := hd.Status()
	if err != nil || st != Running || p2 == pid || p2 == 0 {
		t.Fatalf("Status after a restart = %v, %d, %v; want running under a new pid", st, p2, err)
	}
	if _, ok := h.rt.WorkerByPID(pid); ok {
		t.Fatalf("WorkerByPID(%d) finds a worker after that process was reaped", pid)
	}
	if _, ok := h.rt.WorkerByPID(0); ok {
		t.Fatal("WorkerByPID(0) finds a worker")
	}
}

// A watch attached by StartWatched sees every transition, in order, from
// the registration on, across a restart.
func TestStartWatchedSeesEveryTransition(t *testing.T) {
	h := newHarness(t, Config{})
	var mu sync.Mutex
	var got []string
	watcher := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if e, ok := ctx.Message().(WorkerEvent); ok {
			mu.Lock()
			got = append(got, e.To.String())
			mu.Unlock()
		}
	}))
	defer h.rt.System().Root.Stop(watcher)
	hd, err := h.rt.StartWatched(ctx(t), actors.Spec{Name: "watched", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(10 * time.Millisecond)}, watcher)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := hd.WaitStarted(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitState("watched", Crashed)
	h.waitState("watched", Running)
	want := "registered pending starting running crashed pending starting running"
	h.eventually("the watcher to have every transition", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, " ") == want
	})
	if _, err := h.rt.StartWatched(ctx(t), actors.Spec{Name: "w2", Type: "fault"}, nil); err == nil {
		t.Fatal("StartWatched with a nil watcher succeeded")
	}
}

// With NoRestartAfterCrash (PostgreSQL's restart_after_crash = off), the
// crash of a shared-memory worker fails the whole group: no reset, no new
// generation, no member restarted.
func TestNoRestartAfterCrash(t *testing.T) {
	h := newHarness(t, Config{NoRestartAfterCrash: true, GroupStopTimeout: 500 * time.Millisecond})
	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	a := h.startShm("a", "run")
	h.startShm("b", "run")
	gen := h.rt.Segment().Generation()
	syscall.Kill(a, syscall.SIGKILL)
	h.eventually("both members failed", func() bool { return h.info("a").State == Failed && h.info("b").State == Failed })
	if g := h.rt.Segment().Generation(); g != gen {
		t.Fatalf("generation %d after the crash, want %d: no reset", g, gen)
	}
	if n := testCounter(t, h.rt.metrics.resets); n != 0 {
		t.Fatalf("resets = %v, want 0", n)
	}
	if st := h.rt.Status(); !st.GroupFailed {
		t.Fatalf("Status = %+v, want the group failed", st)
	}
}
