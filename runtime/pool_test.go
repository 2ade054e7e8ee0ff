package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

func init() {
	// escape: starts a process that leaves the worker's process group (a
	// new session), so it outlives the worker and the postmaster, and
	// writes its pid to the file named after the colon. It inherits the
	// lock file descriptor, as any exec'd process of a worker does.
	actors.MustDefine(actors.Spec{Name: "escape", Run: func(ctx context.Context, w actors.Worker) error {
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := os.WriteFile(string(w.Arg()), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}})
}

// Starts and restarts are served from the warm pool, which refills; an
// idle child killed while idle is replaced without touching any worker.
func TestWarmPool(t *testing.T) {
	h := newHarness(t, Config{WarmPool: 2})
	h.eventually("pool full", func() bool { return len(h.rt.IdleChildren()) == 2 })
	idle := h.rt.IdleChildren()
	_, pid := h.startFault("w", "run", nil)
	if !slices.Contains(idle, pid) {
		t.Fatalf("worker pid %d not taken from the pool %v", pid, idle)
	}
	st := h.workerEvents("w")
	if i := slices.IndexFunc(st, func(e WorkerEvent) bool { return e.To == Starting }); i < 0 || st[i].Cold {
		t.Fatalf("start events %+v: want a warm start", st)
	}
	h.eventually("pool refilled", func() bool { return len(h.rt.IdleChildren()) == 2 })
	idle = h.rt.IdleChildren()
	syscall.Kill(pid, syscall.SIGKILL)
	re := h.waitEvent("w running again", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "w" && we.To == Running && we.Incarnation == 2
	}).(WorkerEvent)
	if !slices.Contains(idle, re.PID) {
		t.Fatalf("restart pid %d not from the pool %v", re.PID, idle)
	}
	h.eventually("pool refilled after restart", func() bool { return len(h.rt.IdleChildren()) == 2 })
	// Kill an idle child: it is replaced; the worker is untouched.
	victim := h.rt.IdleChildren()[0]
	syscall.Kill(victim, syscall.SIGKILL)
	h.eventually("idle child replaced", func() bool {
		ids := h.rt.IdleChildren()
		return len(ids) == 2 && !slices.Contains(ids, victim)
	})
	if wi := h.info("w"); wi.PID != re.PID || wi.Restarts != 1 {
		t.Fatalf("worker %+v changed when an idle child died", wi)
	}
	if n := testCounter(t, h.rt.metrics.idleLost); n != 1 {
		t.Fatalf("idle_lost_total = %v, want 1", n)
	}
}

// With the pool disabled every start is cold.
func TestWarmPoolDisabled(t *testing.T) {
	h := newHarness(t, Config{WarmPool: -1})
	h.startFault("w", "run", nil)
	for _, e := range h.workerEvents("w") {
		if e.To == Starting && !e.Cold {
			t.Fatal("warm start with the pool disabled")
		}
	}
	if n := len(h.rt.IdleChildren()); n != 0 {
		t.Fatalf("%d idle children with the pool disabled", n)
	}
}

// lockholderRole runs a runtime with a lock file and a worker that leaves a
// process behind, then blocks until killed. It runs without cgroups: with a
// leaf per child, the worker's setsid process dies with the worker when
// the postmaster does, and the survivor the interlock is for is one that
// got past both (TestEscapedGrandchildKilled covers the leaf).
func lockholderRole() int {
	rt, err := New(Config{Workers: []actors.Spec{}, LockFile: os.Getenv("RTTEST_LOCK"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoCgroups: true})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	h, err := rt.StartWorker(ctx, actors.Spec{Name: "esc", Type: "escape", Arg: []byte(os.Getenv("RTTEST_PIDFILE")), StartAt: phases.PostmasterStart})
	if err == nil {
		_, err = h.WaitStarted(ctx)
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// A second runtime refuses to start while a process of the first
// still holds the lock file, naming the lock and the pid; it starts once
// that process is gone.
func TestLockFileInterlock(t *testing.T) {
	dir := t.TempDir()
	lock, pidfile := filepath.Join(dir, "bgworker.lock"), filepath.Join(dir, "escaped.pid")
	t.Cleanup(func() {
		// Whatever happened, the escaped process must not outlive the test.
		if !t.Failed() {
			return // it was killed and waited for above
		}
		if b, err := os.ReadFile(pidfile); err == nil {
			pid, err := strconv.Atoi(string(b))
			// Only a process of this test run: never a recycled pid.
			env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			if err == nil && strings.Contains(string(env), "RTTEST_RUN="+runID+"\x00") {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
					p.Release()
				}
			}
		}
	})
	cmd := roleCmd("lockholder", "RTTEST_LOCK="+lock, "RTTEST_PIDFILE="+pidfile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		if strings.HasPrefix(sc.Text(), "error") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(sc.Text())
		}
	}
	var b []byte
	tk := time.NewTicker(5 * time.Millisecond)
	for end := time.Now().Add(10 * time.Second * timeoutMult()); ; <-tk.C {
		if b, err = os.ReadFile(pidfile); err == nil && len(b) > 0 || time.Now().After(end) {
			break
		}
	}
	tk.Stop()
	if err != nil {
		t.Fatal(err)
	}
	escaped, _ := strconv.Atoi(string(b))
	escapedProc, err := os.FindProcess(escaped)
	if err != nil {
		t.Fatal(err)
	}
	defer escapedProc.Release()
	defer escapedProc.Kill()
	// The first postmaster dies; its worker dies with it; the escaped
	// process lives on and holds the lock.
	cmd.Process.Kill()
	cmd.Wait()
	go io.Copy(io.Discard, out)

	rt, err := New(Config{Workers: []actors.Spec{}, LockFile: lock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = rt.Start(ctx(t))
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), lock) || !strings.Contains(err.Error(), strconv.Itoa(escaped)) {
		t.Fatalf("Start = %v; want ErrLocked naming %s and pid %d", err, lock, escaped)
	}
	rt.Shutdown(ctx(t), phases.Fast)

	escapedProc.Kill()
	escapedProc.Release() // its pidfd is not part of the next runtime's fd baseline
	deadline := time.Now().Add(5 * time.Second * timeoutMult())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// The escaped sleep was reparented to init, which reaps it.
		if _, err := os.Stat("/proc/" + strconv.Itoa(escaped)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("escaped process still alive")
		}
		<-tick.C
	}
	// The lock is free again: a runtime starts (newHarness fails the test
	// otherwise) and writes its pid into the lock file.
	newHarness(t, Config{LockFile: lock})
	if b, err := os.ReadFile(lock); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, %v; want our pid", b, err)
	}
}
