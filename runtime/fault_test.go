package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// startFault starts a "fault" worker running action and returns after it
// reported ready.
func (h *harness) startFault(name, action string, mod func(*actors.Spec)) (*Handle, int) {
	return h.start(name, "fault", action, mod)
}

// expectExit waits for the worker's next exit event and returns its Exit.
func (h *harness) expectExit(name string) *Exit {
	h.t.Helper()
	e := h.waitEvent(name+" exit", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == name && we.Exit != nil
	}).(WorkerEvent)
	return e.Exit
}

// A Go panic exits 2 and is a crash; only that worker restarts,
// after its backoff.
func TestPanicIsCrash(t *testing.T) {
	h := newHarness(t, Config{})
	_, sib := h.startFault("sib", "run", nil)
	sp := actors.Spec{Name: "p", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(50 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: -1}}
	if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
		t.Fatal(err)
	}
	ex := h.expectExit("p")
	if ex.Reason != ReasonExit2 || ex.Code != 2 || !ex.Crash {
		t.Fatalf("exit = %+v, want exit2 crash", ex)
	}
	if !strings.Contains(ex.Stderr, "fault: panic") {
		t.Fatalf("stderr tail %q lacks the panic", ex.Stderr)
	}
	pe := h.waitState("p", Pending)
	st := h.waitState("p", Starting)
	if d := st.At.Sub(pe.At); d < 50*time.Millisecond || d > 550*time.Millisecond*timeoutMult() {
		t.Fatalf("restart %v after the crash; want within [50ms, 550ms]", d)
	}
	if h.info("sib").PID != sib {
		t.Fatal("sibling restarted")
	}
}

// os.Exit(0) is done: not restarted, not a crash. Exit 1
// restarts, not a crash, with or without the goodbye for a non-shm worker.
func TestExitCodes(t *testing.T) {
	h := newHarness(t, Config{})
	for _, tc := range []struct {
		name, action, reason string
		restart              bool
	}{
		{"e0", "exit0", ReasonExit0, false},
		{"r0", "return_nil", ReasonExit0, false},
		{"e1", "exit1", ReasonExit1, true},
		{"r1", "return_error", ReasonExit1, true},
		{"e7", "exit7", ReasonExitOther, true},
	} {
		sp := actors.Spec{Name: tc.name, Type: "fault", Arg: []byte(tc.action), StartAt: phases.PostmasterStart,
			Restart: actors.Fixed(50 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: -1}}
		if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
			t.Fatal(err)
		}
		ex := h.expectExit(tc.name)
		if ex.Reason != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.action, ex.Reason, tc.reason)
		}
		if wantCrash := tc.reason == ReasonExitOther; ex.Crash != wantCrash {
			t.Errorf("%s: crash = %v, want %v", tc.action, ex.Crash, wantCrash)
		}
		if tc.restart {
			h.waitState(tc.name, Starting)
		} else {
			if st := h.info(tc.name).State; st != Stopped {
				t.Errorf("%s: state %v, want stopped", tc.action, st)
			}
		}
	}
	// The done workers never came back: their only events end in stopped.
	for _, n := range []string{"e0", "r0"} {
		evs := h.workerEvents(n)
		if last := evs[len(evs)-1]; last.To != Stopped {
			t.Errorf("%s: last event %v, want stopped", n, last.To)
		}
		if h.info(n).Incarnation != 1 {
			t.Errorf("%s restarted", n)
		}
	}
}

// SIGSEGV is a crash whether seen as a signal or as exit 2.
func TestSegvIsCrash(t *testing.T) {
	h := newHarness(t, Config{})
	_, pid := h.startFault("segv", "run", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
	if err := syscall.Kill(pid, syscall.SIGSEGV); err != nil {
		t.Fatal(err)
	}
	ex := h.expectExit("segv")
	if !ex.Crash || (ex.Reason != "signal:SEGV" && ex.Reason != ReasonExit2) {
		t.Fatalf("exit = %+v, want a crash", ex)
	}
	if st := h.info("segv").State; st != Crashed {
		t.Fatalf("state %v, want crashed (never restart)", st)
	}
	if _, err := os.Stat("core"); err == nil {
		t.Fatal("core file left in the work dir")
	}
}

// A worker that ignores SIGTERM is killed after its grace period.
func TestIgnoredSigtermIsKilledAfterGrace(t *testing.T) {
	h := newHarness(t, Config{})
	hd, _ := h.startFault("stubborn", "ignore_term", func(s *actors.Spec) { s.StopTimeout = 300 * time.Millisecond })
	begin := time.Now()
	if err := hd.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if ex.Reason != ReasonKilled || ex.Crash {
		t.Fatalf("exit = %+v, want killed, not a crash", ex)
	}
	if took < 300*time.Millisecond || took > 800*time.Millisecond*timeoutMult() {
		t.Fatalf("stop took %v, want within [grace 300ms, grace+500ms]", took)
	}
}

// A wedged child (alive, heartbeat stopped) is killed and restarted;
// status queries are answered meanwhile.
func TestWedgedChildIsKilled(t *testing.T) {
	h := newHarness(t, Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond})
	h.startFault("wedged", "deadlock", nil)
	begin := time.Now()
	h.eventually("wedged worker killed", func() bool { return h.info("wedged").LastExit != nil })
	if ex := h.info("wedged").LastExit; ex.Reason != ReasonHeartbeat || !ex.Crash {
		t.Fatalf("exit = %+v, want heartbeat_timeout crash", ex)
	}
	if d := time.Since(begin); d > 2*time.Second*timeoutMult() {
		t.Fatalf("detected after %v; want ≤ a few heartbeat timeouts", d)
	}
}

// A child that never reports ready is killed at the start timeout and
// WaitStarted fails; Start never hangs.
func TestNeverReadyIsKilledAtStartTimeout(t *testing.T) {
	h := newHarness(t, Config{})
	sp := actors.Spec{Name: "slow", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart,
		StartTimeout: time.Millisecond, Restart: actors.NeverRestart}
	hd, err := h.rt.StartWorker(ctx(t), sp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = hd.WaitStarted(ctx(t))
	if !errors.Is(err, ErrStartFailed) {
		t.Fatalf("WaitStarted = %v, want ErrStartFailed", err)
	}
	ex := h.info("slow").LastExit
	if ex == nil || ex.Reason != ReasonStartTimeout {
		t.Fatalf("exit = %+v, want start_timeout", ex)
	}
}

// Protocol violations kill the child and count; the postmaster
// never panics; output floods are harmless.
func TestProtocolViolationsKillTheChild(t *testing.T) {
	h := newHarness(t, Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond})
	for _, tc := range []struct{ action, reason string }{
		{"garbage_frame", ReasonProtocol},
		{"bad_magic", ReasonProtocol}, // frame out of order
		{"huge_len", ReasonProtocol},
		{"half_frame_exit", ReasonExitOther}, // classified from the wait status
		{"half_frame_sleep", ""},             // stall → killed (EOF or heartbeat)
		{"close_sock", ""},
	} {
		before := testCounter(t, h.rt.metrics.protocolErrors)
		_, pid := h.startFault("v-"+tc.action, tc.action, func(s *actors.Spec) { s.Restart = actors.NeverRestart })
		ex := h.expectExit("v-" + tc.action)
		if !ex.Crash {
			t.Errorf("%s: exit %+v is not a crash", tc.action, ex)
		}
		if tc.reason != "" && ex.Reason != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.action, ex.Reason, tc.reason)
		}
		if tc.reason == ReasonProtocol && testCounter(t, h.rt.metrics.protocolErrors) != before+1 {
			t.Errorf("%s: protocol_errors_total not incremented", tc.action)
		}
		if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
			if st, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat"); len(st) > 0 {
				t.Errorf("%s: child %d still exists after its exit event", tc.action, pid)
			}
		}
		// One exit event per run, not two.
		n := 0
		for _, e := range h.workerEvents("v-" + tc.action) {
			if e.Exit != nil {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d exit events, want 1", tc.action, n)
		}
	}
	if _, err := h.rt.WorkersContext(ctx(t)); err != nil {
		t.Fatalf("postmaster not answering: %v", err)
	}
}

// 10 MB of output without newlines does not block the child.
func TestOutputFloodDoesNotBlock(t *testing.T) {
	h := newHarness(t, Config{})
	hd, _ := h.startFault("spam", "spam_stdout", nil)
	h.eventually("spam done line", func() bool { return h.logged("spam done") })
	if err := hd.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := hd.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// Signalling after the reap never reaches a recycled pid; the
// worker's own children die with it (process group).
func TestNoSignalAfterReap(t *testing.T) {
	h := newHarness(t, Config{})
	hd, pid := h.startFault("g", "grandchild", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
	syscall.Kill(pid, syscall.SIGKILL)
	if _, err := hd.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// Terminating a reaped worker is a no-op, not a signal.
	if err := hd.Terminate(ctx(t)); err != nil {
		t.Fatalf("Terminate after reap: %v", err)
	}
	// The grandchild (sleep 300) died with the group: checked by the
	// orphan scan in the harness.
}

// A worker's descendant that escaped its process group (setsid) and holds
// the output pipe open neither keeps the pipe's reader alive after the
// worker is reaped nor holds up a fast shutdown: with a cgroup leaf the
// escaped process is killed with it; without one (NoCgroups, or a host
// where cgroups are unusable) it lives on, and the reader lets go of the
// pipe anyway.
func TestEscapedGrandchildHoldsNoPipe(t *testing.T) {
	t.Run("cgroups", func(t *testing.T) { testEscapedGrandchildHoldsNoPipe(t, Config{}) })
	t.Run("process groups", func(t *testing.T) { testEscapedGrandchildHoldsNoPipe(t, Config{NoCgroups: true}) })
}

func testEscapedGrandchildHoldsNoPipe(t *testing.T, cfg Config) {
	h := newHarness(t, cfg)
	hd, pid := h.startFault("esc", "escape_exit1", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
	cgrouped := h.rt.cg.mgr != nil
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var esc int
	for _, line := range strings.Split(ex.Stderr, "\n") {
		if _, err := fmt.Sscanf(line, "escaped %d", &esc); err == nil {
			break
		}
	}
	if esc == 0 {
		t.Fatalf("no escaped pid in the exit's output tail %q", ex.Stderr)
	}
	// Whatever the runtime does about the escaped process, the test ends it.
	defer syscall.Kill(esc, syscall.SIGKILL)
	if st := procState(esc); (st != "" && st != "Z") == cgrouped {
		t.Fatalf("escaped pid %d in state %q with cgroup leaves %v: a leaf's kill ends it, and only a leaf's", esc, st, cgrouped)
	}
	output := "output of child pid " + itoa(pid)
	h.eventually("the output reader of the reaped worker to end", func() bool {
		return !slices.Contains(h.rt.wg.Held(), output)
	})
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second*timeoutMult())
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Fatalf("Shutdown with an escaped grandchild alive: %v", err)
	}
}

// A worker that ignores SIGTERM while a grandchild in a session of its own
// floods its stderr: the host stays responsive, the worker is killed at the
// end of its grace period, and a fast shutdown finishes within its context.
// With cgroup leaves the flooding grandchild dies with the worker's leaf;
// without (process groups) it outlives the group kill, and the pipe it
// floods is let go of anyway (the closed read end then ends it).
func TestIgnoredSigtermWithFloodingGrandchild(t *testing.T) {
	t.Run("cgroups", func(t *testing.T) { testIgnoredSigtermWithFloodingGrandchild(t, Config{}) })
	t.Run("process groups", func(t *testing.T) { testIgnoredSigtermWithFloodingGrandchild(t, Config{NoCgroups: true}) })
}

func testIgnoredSigtermWithFloodingGrandchild(t *testing.T, cfg Config) {
	// The flood is logged line by line: not into the test's log.
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h := newHarness(t, cfg)
	cgrouped := h.rt.cg.mgr != nil
	pidfile := filepath.Join(t.TempDir(), "flooder.pid")
	sp := actors.Spec{Name: "flood", Type: "escape_flood", Arg: []byte(pidfile), StartAt: phases.PostmasterStart,
		Restart: actors.NeverRestart, StopTimeout: 300 * time.Millisecond}
	if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
		t.Fatal(err)
	}
	h.waitState("flood", Running)
	flooder := readPidFile(t, pidfile)
	t.Cleanup(func() { killTagged(flooder) })
	// The host answers while the flood runs.
	for range 20 {
		if _, err := h.rt.WorkersContext(ctx(t)); err != nil {
			t.Fatalf("the postmaster during the flood: %v", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second*timeoutMult())
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Fatalf("fast shutdown with an ignored SIGTERM and a flooding grandchild: %v", err)
	}
	if ex := h.expectExit("flood"); ex.Reason != ReasonKilled {
		t.Fatalf("exit %+v, want %s (SIGTERM ignored, killed after its grace period)", ex, ReasonKilled)
	}
	// Without a leaf the grandchild outlives the group kill until the
	// closed pipe's SIGPIPE ends it; with one it died with the leaf.
	if st := procState(flooder); cgrouped && st != "" && st != "Z" {
		t.Fatalf("flooding grandchild %d in state %q after its leaf was killed", flooder, st)
	}
}

// Shutdown honours its context: when it ends first, Shutdown returns at
// once with an error that names what is still held, and a later call
// waits for the rest.
func TestShutdownHonoursContext(t *testing.T) {
	h := newHarness(t, Config{})
	h.startFault("slow", "ignore_term", func(s *actors.Spec) { s.StopTimeout = 30 * time.Second })
	sctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.rt.Shutdown(sctx, phases.Smart)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("Shutdown = %v, want a deadline error saying what is held", err)
	}
	if d := time.Since(start); d > 2*time.Second*timeoutMult() {
		t.Fatalf("Shutdown returned %v after its context ended", d)
	}
	// The shutdown turned immediate: a second call waits for the end.
	if err := h.rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}
