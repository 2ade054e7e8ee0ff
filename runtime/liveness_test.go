package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// pmtPauseRole runs a runtime with a short heartbeat timeout, plain and
// shared-memory workers and a warm pool, and prints its state whenever a
// line arrives on stdin: one "w NAME PID RESTARTS STATE" line per worker,
// "idle PID" per idle child, then "end".
func pmtPauseRole() int {
	rt, err := New(Config{Workers: []actors.Spec{}, WarmPool: 2,
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		fmt.Println("error", err)
		return 1
	}
	specs := []actors.Spec{shmSpec("s1", "run"), shmSpec("s2", "run")}
	for _, n := range []string{"p1", "p2", "p3"} {
		specs = append(specs, actors.Spec{Name: n, Type: "fault", Arg: []byte("run"), Restart: actors.Fixed(50 * time.Millisecond)})
	}
	for _, sp := range specs {
		h, err := rt.StartWorker(ctx, sp)
		if err == nil {
			_, err = h.WaitStarted(ctx)
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	for len(rt.IdleChildren()) < 2 {
		time.Sleep(10 * time.Millisecond) // a subprocess role, not a test: polls its own pool
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		for _, w := range rt.Workers() {
			fmt.Printf("w %s %d %d %s\n", w.Name, w.PID, w.Restarts, w.State)
		}
		for _, pid := range rt.IdleChildren() {
			fmt.Printf("idle %d\n", pid)
		}
		fmt.Println("end")
	}
	return 0
}

// pauseState asks the role for its state: the workers' "name pid
// restarts state" and the idle children's pids.
func pauseState(t *testing.T, sub *pmtSub) (workers, idle []string) {
	t.Helper()
	if _, err := io.WriteString(sub.stdin, "status\n"); err != nil {
		t.Fatal(err)
	}
	for _, l := range sub.until("end") {
		switch {
		case strings.HasPrefix(l, "w "):
			workers = append(workers, l[2:])
		case strings.HasPrefix(l, "idle "):
			idle = append(idle, l[5:])
		}
	}
	slices.Sort(idle)
	return workers, idle
}

// A host stopped for longer than the heartbeat timeout (SIGSTOP, Ctrl-Z, a
// debugger, a paused VM) kills no healthy child when it resumes: liveness
// is judged from what the children sent, which waited in their sockets.
func TestHostPauseKillsNoHealthyChild(t *testing.T) {
	sub := pmtStartRole(t, "pmt_pause")
	sub.until("ready")
	workers, idle := pauseState(t, sub)
	if len(workers) != 5 || len(idle) != 2 {
		t.Fatalf("before the pause: workers %q, idle %q; want 5 running and 2 idle", workers, idle)
	}
	pid := sub.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGSTOP)
	<-time.After(3 * time.Second) // the fault: six heartbeat timeouts away
	syscall.Kill(pid, syscall.SIGCONT)
	// Every child had been silent for six timeouts as the host's clock
	// sees it. Give the watchdog three timeouts after the resume to do
	// what it would, then compare.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		w, i := pauseState(t, sub)
		if !slices.Equal(w, workers) || !slices.Equal(i, idle) {
			t.Fatalf("after the host's pause:\nworkers %q\nidle %q\nbefore:\nworkers %q\nidle %q\nstderr:\n%s", w, i, workers, idle, sub.tail())
		}
		<-time.After(100 * time.Millisecond)
	}
	if !strings.Contains(sub.stderr.String(), "children's silence is counted from now") {
		t.Errorf("the watchdog did not notice the host's pause; stderr:\n%s", sub.tail())
	}
	sub.stdin.Close()
	if _, code := sub.wait(); code != 0 {
		t.Fatalf("role exited %d; stderr:\n%s", code, sub.tail())
	}
}

// A worker that really stops (SIGSTOP of the worker alone) is still killed
// after the heartbeat timeout, and restarted.
func TestStoppedWorkerIsKilled(t *testing.T) {
	h := newHarness(t, Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond})
	_, pid := h.startFault("frozen", "run", nil)
	syscall.Kill(pid, syscall.SIGSTOP)
	ex := h.expectExit("frozen")
	if ex.Reason != ReasonHeartbeat || !ex.Crash {
		t.Fatalf("exit = %+v, want heartbeat_timeout crash", ex)
	}
	h.waitState("frozen", Running)
}

// A quiet worker proves it is alive on its beat pipe, read by the
// watchdog: no heartbeat frame crosses the bridge (no reader wakes for
// it), and over many heartbeat timeouts it is never judged silent.
func TestQuietChildBeatsOnItsPipe(t *testing.T) {
	h := newHarness(t, Config{WarmPool: -1, HeartbeatInterval: 20 * time.Millisecond, HeartbeatTimeout: 100 * time.Millisecond})
	_, pid := h.startFault("quiet", "run", nil)
	h.eventually("the worker's start frames read", func() bool {
		in := h.rt.pm.launcher.Traffic().FramesIn
		<-time.After(50 * time.Millisecond)
		return h.rt.pm.launcher.Traffic().FramesIn == in
	})
	in := h.rt.pm.launcher.Traffic().FramesIn
	<-time.After(1 * time.Second) // ten heartbeat timeouts, fifty intervals
	if got := h.rt.pm.launcher.Traffic().FramesIn; got != in {
		t.Errorf("%d frames came from quiet children over fifty heartbeat intervals, want none (beats go to the pipe)", got-in)
	}
	if wi := h.info("quiet"); wi.State != Running || wi.PID != pid || wi.Restarts != 0 {
		t.Fatalf("after ten heartbeat timeouts of quiet: %+v, want the same pid running", wi)
	}
}
