package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

func init() {
	// escape_exit: starts a process in a new session that shares the
	// worker's stdout and stderr (so it holds the output pipe), writes its
	// pid to the file named in Arg, and exits 1.
	actors.MustDefine(actors.Spec{Name: "escape_exit", Run: func(ctx context.Context, w actors.Worker) error {
		if err := escape(w, exec.Command("sleep", "300"), os.Stdout); err != nil {
			return err
		}
		return errors.New("escape_exit: leaving my grandchild behind")
	}})
	// escape_wait: like escape_exit, but without the output, and it stays
	// until stopped.
	actors.MustDefine(actors.Spec{Name: "escape_wait", Run: func(ctx context.Context, w actors.Worker) error {
		if err := escape(w, exec.Command("sleep", "300"), nil); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}})
	// escape_flood: starts a process in a new session that floods the
	// worker's stderr (yes), writes its pid to the file named in Arg, and
	// ignores SIGTERM, busy, until it is killed.
	actors.MustDefine(actors.Spec{Name: "escape_flood", Run: func(ctx context.Context, w actors.Worker) error {
		signal.Ignore(syscall.SIGTERM)
		if err := escape(w, exec.Command("yes", "flood from an escaped grandchild"), os.Stderr); err != nil {
			return err
		}
		busy := time.NewTicker(time.Millisecond)
		for range busy.C {
		}
		return nil
	}})
	// hog: allocates and touches memory until it is killed.
	actors.MustDefine(actors.Spec{Name: "hog", Run: func(ctx context.Context, w actors.Worker) error {
		var keep [][]byte
		for ctx.Err() == nil && len(keep) < 4096 {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		return errors.New("hog: allocated 4 GiB without being killed")
	}})
}

// needCgroups skips a test where this runtime has no cgroup per child,
// saying why.
func needCgroups(t *testing.T, h *harness) *cgroupState {
	t.Helper()
	cg := h.rt.cgroups()
	if cg.mgr == nil {
		t.Skipf("no cgroup per child here: %v", cg.why)
	}
	return cg
}

// killTagged kills a process only if it is one of this test run's (never a
// recycled pid), for cleanup after a failure.
func killTagged(pid int) {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !bytes.Contains(env, []byte("RTTEST_RUN="+runID+"\x00")) {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
		p.Release()
	}
}

// escape starts cmd in a session of its own (out of reach of a
// process-group kill) with its output on out (nil = none), and writes its
// pid to the file named in the worker's Arg.
func escape(w actors.Worker, cmd *exec.Cmd, out *os.File) error {
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return os.WriteFile(string(w.Arg()), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
}

// procState returns the state letter of pid ("" once it is gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func readPidFile(t *testing.T, path string) int {
	t.Helper()
	var b []byte
	var err error
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(10 * time.Second * timeoutMult()); ; <-tick.C {
		if b, err = os.ReadFile(path); err == nil && len(b) > 0 || time.Now().After(end) {
			break
		}
	}
	pid, perr := strconv.Atoi(string(b))
	if err != nil || perr != nil {
		t.Fatalf("pid file %s: %q, %v", path, b, err)
	}
	return pid
}

// A worker whose grandchild leaves the process group (setsid) and holds its
// output pipe exits 1: by the time its exit is reported, the grandchild is
// dead too (cgroup.kill of the leaf, before the reap), and the leaf is gone.
// With process groups only, the grandchild lives on (the group kill cannot
// reach another session).
func TestEscapedGrandchildKilled(t *testing.T) {
	h := newHarness(t, Config{})
	cg := needCgroups(t, h)
	pidfile := filepath.Join(t.TempDir(), "grandchild.pid")
	sp := actors.Spec{Name: "esc", Type: "escape_exit", Arg: []byte(pidfile), StartAt: phases.PostmasterStart, Restart: actors.NeverRestart}
	if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
		t.Fatal(err)
	}
	run := h.waitState("esc", Running)
	row := h.info("esc")
	grand := readPidFile(t, pidfile)
	t.Cleanup(func() { killTagged(grand) })
	ex := h.expectExit("esc")
	if ex.Reason != ReasonExit1 || ex.PID != run.PID {
		t.Fatalf("exit %+v, want exit1 of pid %d", ex, run.PID)
	}
	if st := procState(grand); st != "" && st != "Z" {
		t.Fatalf("grandchild %d in a new session is still alive (state %s) after its worker exited", grand, st)
	}
	if row.PID != run.PID || !strings.HasPrefix(row.Cgroup, cg.mgr.Path()+"/") || row.Isolation != "cgroup" {
		t.Fatalf("running row %+v: want the pid %d, a leaf under %s and isolation cgroup", row, run.PID, cg.mgr.Path())
	}
	if _, err := os.Stat(row.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leaf %s still there after the exit (%v)", row.Cgroup, err)
	}
	if got := h.info("esc").Cgroup; got != "" {
		t.Fatalf("row of an exited worker has cgroup %q, want empty", got)
	}
}

// Each child starts inside its own leaf, named in its /workers row; the
// warm pool's idle children are in leaves too; Shutdown removes the
// runtime's subtree.
func TestCgroupLeafPerChild(t *testing.T) {
	h := newHarness(t, Config{WarmPool: 2})
	cg := needCgroups(t, h)
	_, pa := h.startFault("a", "run", nil)
	_, pb := h.startFault("b", "run", func(s *actors.Spec) { s.StartAt = phases.PostmasterStart })
	h.eventually("pool full", func() bool { return len(h.rt.IdleChildren()) == 2 })
	mount := mountOf(t, cg.mgr.Path())
	seen := map[string]bool{}
	for _, w := range []struct {
		name string
		pid  int
	}{{"a", pa}, {"b", pb}} {
		row := h.info(w.name)
		if row.Cgroup == "" || seen[row.Cgroup] || filepath.Dir(row.Cgroup) != cg.mgr.Path() {
			t.Fatalf("row %s has cgroup %q; want its own leaf under %s", w.name, row.Cgroup, cg.mgr.Path())
		}
		seen[row.Cgroup] = true
		if got := cgroupOfPid(w.pid); mount+got != row.Cgroup {
			t.Fatalf("pid %d is in cgroup %q, its row says %q", w.pid, got, row.Cgroup)
		}
	}
	for _, pid := range h.rt.IdleChildren() {
		if got := cgroupOfPid(pid); !strings.HasPrefix(mount+got, cg.mgr.Path()+"/c-") {
			t.Fatalf("idle child %d is in cgroup %q, want a leaf of %s", pid, got, cg.mgr.Path())
		}
	}
	sub := cg.mgr.Path()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sub); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("subtree %s still there after Shutdown (%v)", sub, err)
	}
}

// cgroupOfPid returns a process's cgroup v2 path ("0::" line).
func cgroupOfPid(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// mountOf returns the cgroup2 mount point that holds dir.
func mountOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	best := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		for i, x := range f {
			if x == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && strings.HasPrefix(dir, f[4]) && len(f[4]) > len(best) {
				best = f[4]
			}
		}
	}
	return best
}

// A spec with Limits is refused, with ErrLimitsUnavailable and the reason,
// where they cannot be enforced: with NoCgroups always, and here also
// because the controllers are bound to cgroup v1. Nothing is started.
func TestLimitsRefusedWhereUnavailable(t *testing.T) {
	lim := actors.Spec{Name: "limited", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart,
		Limits: actors.Limits{MemoryMax: 64 << 20, PidsMax: 64}}
	t.Run("NoCgroups", func(t *testing.T) {
		h := newHarness(t, Config{NoCgroups: true})
		_, err := h.rt.StartWorker(ctx(t), lim)
		if !errors.Is(err, ErrLimitsUnavailable) || !strings.Contains(err.Error(), `worker "limited"`) || !strings.Contains(err.Error(), "disabled by Config.NoCgroups") {
			t.Fatalf("StartWorker = %v; want ErrLimitsUnavailable naming the worker and NoCgroups", err)
		}
		for _, w := range h.rt.Workers() {
			if w.Name == "limited" {
				t.Fatalf("a refused worker has a row: %+v", w)
			}
		}
		// Without limits the same code runs, in no cgroup.
		h.startFault("free", "run", nil)
		if c := h.info("free").Cgroup; c != "" {
			t.Fatalf("row cgroup %q with NoCgroups, want empty", c)
		}
	})
	t.Run("static", func(t *testing.T) {
		// A static spec runs code registered or defined under its Name.
		st := actors.Spec{Name: "fault", Run: func(ctx context.Context, w actors.Worker) error { return nil },
			StartAt: phases.PostmasterStart, Limits: lim.Limits}
		rt, err := New(Config{Workers: []actors.Spec{st}, NoCgroups: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		err = rt.Start(ctx(t))
		if !errors.Is(err, ErrLimitsUnavailable) {
			t.Fatalf("Start with a static worker's limits = %v; want ErrLimitsUnavailable", err)
		}
		if err := rt.Shutdown(ctx(t), phases.Fast); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("controllers", func(t *testing.T) {
		h := newHarness(t, Config{})
		cg := needCgroups(t, h)
		miss := cg.mgr.Missing()
		if _, ok := miss["memory"]; !ok {
			t.Skipf("the memory controller is available here (%v), so limits are not refused", cg.mgr.Controllers())
		}
		_, err := h.rt.StartWorker(ctx(t), lim)
		if !errors.Is(err, ErrLimitsUnavailable) || !strings.Contains(err.Error(), "memory: ") {
			t.Fatalf("StartWorker = %v; want ErrLimitsUnavailable naming the memory controller", err)
		}
		t.Logf("refused: %v", err)
	})
}

// Where the memory controller is available, a worker past its MemoryMax is
// OOM-killed with its leaf, and the exit says oom_killed (a crash).
func TestOOMKilledReason(t *testing.T) {
	h := newHarness(t, Config{ChildEnv: append(os.Environ(), "GOGC=off")})
	cg := needCgroups(t, h)
	if why, missing := cg.mgr.Missing()["memory"]; missing {
		t.Skipf("the memory controller is not available here, so no OOM kill can be caused: %s", why)
	}
	sp := actors.Spec{Name: "hog", Type: "hog", StartAt: phases.PostmasterStart, Restart: actors.NeverRestart,
		Limits: actors.Limits{MemoryMax: 48 << 20}}
	if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
		t.Fatal(err)
	}
	ex := h.expectExit("hog")
	if ex.Reason != ReasonOOMKilled || !ex.Crash || ex.Signal != "KILL" {
		t.Fatalf("exit %+v; want oom_killed, a crash, by SIGKILL", ex)
	}
	if n := testCounter(t, h.rt.metrics.exits.WithLabelValues("hog", ReasonOOMKilled)); n != 1 {
		t.Fatalf("exits_total{reason=oom_killed} = %v, want 1", n)
	}
}

// Where cgroups cannot be used (here: NoCgroups), the runtime says so once,
// at Start, with the reason; rows have an empty cgroup.
func TestNoCgroupsSaidOnce(t *testing.T) {
	var buf lockedBuffer
	h := newHarness(t, Config{NoCgroups: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	h.startFault("w1", "run", nil)
	h.startFault("w2", "run", nil)
	if n := strings.Count(buf.String(), "no cgroup per child"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "disabled by Config.NoCgroups") {
		t.Fatalf("the log does not say why:\n%s", buf.String())
	}
	if wi := h.info("w1"); wi.Cgroup != "" || wi.Isolation != "process_group" {
		t.Fatalf("row: cgroup %q, isolation %q; want empty and process_group", wi.Cgroup, wi.Isolation)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// postmasterEscapeRole runs a runtime whose worker leaves a process in a
// new session, prints "ready" (or "nocgroup <why>"), and blocks until
// killed.
func postmasterEscapeRole() int {
	rt, err := New(Config{Workers: []actors.Spec{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if cg := rt.cgroups(); cg.mgr == nil {
		fmt.Println("nocgroup", cg.why)
		return 0
	}
	h, err := rt.StartWorker(ctx, actors.Spec{Name: "esc", Type: "escape_wait", Arg: []byte(os.Getenv("RTTEST_PIDFILE")), StartAt: phases.PostmasterStart})
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

// With a leaf per child, when the postmaster is SIGKILLed, a worker's
// process in another session dies too: the worker kills its own leaf on
// EOF of the bridge.
func TestPostmasterSigkillKillsEscaped(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "escaped.pid")
	cmd := roleCmd("postmaster-escape", "RTTEST_PIDFILE="+pidfile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	line := ""
	for sc.Scan() {
		if line = sc.Text(); line == "ready" || strings.HasPrefix(line, "error") || strings.HasPrefix(line, "nocgroup") {
			break
		}
	}
	if line != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		if strings.HasPrefix(line, "nocgroup") {
			t.Skipf("no cgroup per child here: %s", line)
		}
		t.Fatal(line)
	}
	escaped := readPidFile(t, pidfile)
	t.Cleanup(func() { killTagged(escaped) })
	killed := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	go io.Copy(io.Discard, out)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := killed.Add(2 * time.Second * timeoutMult()); ; <-tick.C {
		if st := procState(escaped); st == "" || st == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("escaped process %d alive %v after the postmaster was killed", escaped, time.Since(killed))
		}
	}
	t.Logf("escaped process gone %v after SIGKILL of the postmaster", time.Since(killed))
	for end := time.Now().Add(2 * time.Second); orphansLeft() && time.Now().Before(end); <-tick.C {
	}
	checkNoZombieNoOrphan(t)
}
