package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runTag marks every process a test of this package starts; none may be
// alive after a test (no orphan).
const runTagEnv = "CGTEST_RUN"

var runTag string

func TestMain(m *testing.M) {
	switch os.Getenv("CGTEST_ROLE") {
	case "escaper":
		os.Exit(escaperRole())
	case "sleeper":
		select {}
	case "hog":
		os.Exit(hogRole())
	case "forkmany":
		os.Exit(forkManyRole())
	case "mover":
		os.Exit(moverRole())
	}
	if os.Getenv(runTagEnv) == "" {
		b := make([]byte, 8)
		rand.Read(b)
		os.Setenv(runTagEnv, hex.EncodeToString(b))
	}
	runTag = os.Getenv(runTagEnv)
	os.Exit(m.Run())
}

// escaperRole starts a process in a new session and an orphan (its parent
// exits at once), prints their pids, then blocks.
func escaperRole() int {
	s := exec.Command("sleep", "300")
	s.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := s.Start(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("pid", s.Process.Pid)
	out, err := exec.Command("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("pid", strings.TrimSpace(string(out)))
	fmt.Println("ready")
	select {}
}

// hogRole touches memory until it is killed.
func hogRole() int {
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		keep = append(keep, b)
		if len(keep) > 4096 {
			fmt.Println("allocated 4 GiB without being killed")
			return 3
		}
	}
}

// forkManyRole starts up to 64 sleeps and reports how many it could.
func forkManyRole() int {
	var cmds []*exec.Cmd
	var first error
	for range 64 {
		c := exec.Command("sleep", "300")
		if err := c.Start(); err != nil {
			first = err
			break
		}
		cmds = append(cmds, c)
	}
	fmt.Println("started", len(cmds), "err", first)
	for _, c := range cmds {
		c.Process.Kill()
		c.Wait()
	}
	return 0
}

func helper(role string) *exec.Cmd {
	c := exec.Command("/proc/self/exe", "-test.run=^$")
	c.Env = append(os.Environ(), "CGTEST_ROLE="+role)
	return c
}

// open opens a Manager or skips the test, saying why cgroups are not
// usable here.
func open(t *testing.T, opts Options) *Manager {
	t.Helper()
	m, err := Open(opts)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("cgroup v2 is not usable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Stat(m.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("subtree %s left after Close (%v)", m.Path(), err)
		}
		checkNoOrphan(t)
	})
	return m
}

// checkNoOrphan fails the test if a process tagged with this run is alive
// (a zombie that init has not reaped yet is dead) or a child of ours is a
// zombie.
func checkNoOrphan(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := tagged()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of this test still alive: %v", left)
			return
		}
		time.Sleep(10 * time.Millisecond) // init reaps on its own schedule
	}
}

func tagged() []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, []byte(runTagEnv+"="+runTag+"\x00")) {
			continue
		}
		if st := state(pid); st != "" && st != "Z" {
			out = append(out, e.Name()+" ("+st+")")
		}
	}
	return out
}

func state(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[0]
}

func cgroupOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	p, _ := ParseProcCgroup(bytes.NewReader(b))
	return p
}

// startIn starts cmd inside leaf with UseCgroupFD.
func startIn(t *testing.T, l *Leaf, cmd *exec.Cmd) {
	t.Helper()
	dir, err := l.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd()), Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// A child spawned into a leaf is there from its first instruction; so are a
// grandchild in a new session and an orphan whose parent exited. One write
// to cgroup.kill ends all three, the leaf is then empty, and it can be
// removed.
func TestKillReachesEscapedDescendants(t *testing.T) {
	m := open(t, Options{Controllers: []string{}})
	l, err := m.NewLeaf("escaper")
	if err != nil {
		t.Fatal(err)
	}
	cmd := helper("escaper")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, l, cmd)
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "pid" {
			n, _ := strconv.Atoi(f[1])
			pids = append(pids, n)
		} else {
			t.Errorf("helper: %s", sc.Text())
		}
	}
	go io.Copy(io.Discard, out)
	if len(pids) != 2 {
		l.Kill(context.Background())
		cmd.Wait()
		t.Fatalf("helper printed pids %v, want 2", pids)
	}
	rel := strings.TrimPrefix(l.Path(), mustSelfMount(t))
	for _, pid := range append([]int{cmd.Process.Pid}, pids...) {
		if got := cgroupOf(pid); got != rel {
			t.Errorf("pid %d is in cgroup %q, want the leaf %q", pid, got, rel)
		}
	}
	sid, _ := syscall.Getpgid(pids[0])
	if sid == cmd.Process.Pid {
		t.Errorf("the setsid grandchild %d is still in the helper's process group", pids[0])
	}
	procs, err := l.Procs()
	if err != nil || len(procs) != 3 {
		t.Errorf("cgroup.procs = %v, %v; want the helper and its two descendants", procs, err)
	}
	if pop, err := l.Populated(); err != nil || !pop {
		t.Fatalf("Populated = %v, %v; want true", pop, err)
	}
	if err := l.Remove(); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("Remove of a populated leaf = %v; want EBUSY", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// Kill returned: every process of the leaf has exited, reaped or not.
	for _, pid := range pids {
		if st := state(pid); st != "" && st != "Z" {
			t.Errorf("descendant %d is in state %s after Kill", pid, st)
		}
	}
	cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("helper ended %v, want SIGKILL", cmd.ProcessState)
	}
	if pop, err := l.Populated(); err != nil || pop {
		t.Fatalf("Populated after Kill = %v, %v", pop, err)
	}
	if err := l.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leaf still there after Remove: %v", err)
	}
}

func mustSelfMount(t *testing.T) string {
	t.Helper()
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/self/cgroup")
	own, _ := ParseProcCgroup(bytes.NewReader(b))
	return strings.TrimSuffix(self, strings.TrimSuffix(own, "/"))
}

// Kill of an empty leaf returns at once; Kill that cannot finish gives up
// with its context, naming what is left.
func TestKillEmptyAndKillDeadline(t *testing.T) {
	m := open(t, Options{Controllers: []string{}})
	l, err := m.NewLeaf("empty")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Kill(context.Background()); err != nil {
		t.Fatalf("Kill of an empty leaf: %v", err)
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	// A context already done: the kill is sent, the wait gives up at once
	// unless the leaf emptied first.
	l2, err := m.NewLeaf("busy")
	if err != nil {
		t.Fatal(err)
	}
	cmd := helper("sleeper")
	startIn(t, l2, cmd)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	err = l2.Kill(done)
	if err != nil && (!errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "still holds")) {
		t.Fatalf("Kill with a done context = %v; want nil or context.Canceled naming what is left", err)
	}
	cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("sleeper ended %v, want SIGKILL", cmd.ProcessState)
	}
	// Close removes what is left (the leaf, already empty now).
}

// NewLeaf refuses names that are not one path element, and duplicates.
func TestNewLeafNames(t *testing.T) {
	m := open(t, Options{Controllers: []string{}})
	for _, n := range []string{"", ".", "..", "a/b", "x\x00"} {
		if _, err := m.NewLeaf(n); err == nil {
			t.Errorf("NewLeaf(%q) succeeded", n)
		}
	}
	if _, err := m.NewLeaf("w"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.NewLeaf("w"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second NewLeaf(w) = %v; want an error saying it exists", err)
	}
}

// Close kills what is still in a leaf and removes the subtree and, being
// the last Manager, the home.
func TestCloseKillsAndRemoves(t *testing.T) {
	m, err := Open(Options{Controllers: []string{}})
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("cgroup v2 is not usable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Open(Options{Controllers: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(m.Path()) != filepath.Dir(m2.Path()) || m.Path() == m2.Path() {
		t.Fatalf("two managers at %s and %s; want two subtrees of one home", m.Path(), m2.Path())
	}
	home := filepath.Dir(m.Path())
	l, err := m.NewLeaf("left")
	if err != nil {
		t.Fatal(err)
	}
	cmd := helper("sleeper")
	startIn(t, l, cmd)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	<-waited
	if _, err := os.Stat(m.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("subtree left: %v", err)
	}
	if _, err := os.Stat(home); err != nil {
		t.Fatalf("home removed while another manager uses it: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.NewLeaf("late"); err == nil {
		t.Fatal("NewLeaf after Close succeeded")
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("home %s left after the last Close: %v", home, err)
	}
	checkNoOrphan(t)
}

// Open removes the empty home of a process that is gone, and leaves alone,
// reporting it, one that still holds a process.
func TestSweepStaleHomes(t *testing.T) {
	probe, err := Open(Options{Controllers: []string{}})
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("cgroup v2 is not usable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(filepath.Dir(probe.Path()))
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	// Two dead owners: a process that ran and was reaped.
	dead := func() (int, uint64) {
		c := exec.Command("sh", "-c", "cat /proc/self/stat")
		out, err := c.Output()
		if err != nil {
			t.Fatal(err)
		}
		st, err := parseStartTime(string(out))
		if err != nil {
			t.Fatal(err)
		}
		return c.Process.Pid, st
	}
	p1, s1 := dead()
	p2, s2 := dead()
	empty := filepath.Join(parent, fmt.Sprintf("bgworker-%d-%d", p1, s1))
	busy := filepath.Join(parent, fmt.Sprintf("bgworker-%d-%d", p2, s2))
	for _, d := range []string{filepath.Join(empty, "rt-1", "c-1"), filepath.Join(busy, "rt-1", "c-1"), filepath.Join(busy, "rt-1", "c-2")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeEmpty(empty); removeEmpty(busy) })
	// A survivor in the busy home's c-1.
	dirFD, err := os.Open(filepath.Join(busy, "rt-1", "c-1"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := helper("sleeper")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dirFD.Fd())}
	err = cmd.Start()
	dirFD.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	m := open(t, Options{Controllers: []string{}})
	removed, stale := m.Swept()
	if _, err := os.Stat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty stale home %s not removed (%v)", empty, err)
	}
	if removed < 1 {
		t.Errorf("Swept removed %d, want at least 1", removed)
	}
	want := filepath.Join(busy, "rt-1", "c-1")
	if !slices.Contains(stale, want) {
		t.Errorf("Swept populated = %v, want it to name %s", stale, want)
	}
	if _, err := os.Stat(filepath.Join(busy, "rt-1", "c-2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty leaf beside the survivor not removed")
	}
	if st := state(cmd.Process.Pid); st == "" || st == "Z" {
		t.Errorf("the sweep touched the survivor (state %q)", st)
	}
	// Our own home is never swept: its owner is alive.
	if _, err := os.Stat(m.Path()); err != nil {
		t.Fatal(err)
	}
}

// Without the controllers, limits are refused with ErrLimitsUnavailable,
// naming the controller, and nothing is written.
func TestLimitsRefusedWithoutControllers(t *testing.T) {
	m := open(t, Options{Controllers: []string{}})
	if err := m.CheckLimits(Limits{}); err != nil {
		t.Fatalf("CheckLimits of no limits = %v", err)
	}
	l, err := m.NewLeaf("nolimits")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lim  Limits
		name string
	}{
		{Limits{MemoryMax: 64 << 20}, "memory"},
		{Limits{CPUQuota: 50 * time.Millisecond}, "cpu"},
		{Limits{PidsMax: 16}, "pids"},
	} {
		err := l.SetLimits(tc.lim)
		if !errors.Is(err, ErrLimitsUnavailable) || !strings.Contains(err.Error(), tc.name+":") {
			t.Errorf("SetLimits(%+v) = %v; want ErrLimitsUnavailable naming %s", tc.lim, err, tc.name)
		}
	}
	if _, err := os.Stat(filepath.Join(l.Path(), "memory.max")); err == nil {
		b, _ := os.ReadFile(filepath.Join(l.Path(), "memory.max"))
		if strings.TrimSpace(string(b)) != "max" {
			t.Errorf("memory.max = %q after a refused SetLimits", b)
		}
	}
}

// With the default controllers, each limit either is refused, saying why
// (here: a hybrid system whose memory, cpu and pids are bound to v1), or is
// written where the controller exists (pure v2 as root, Delegate=yes).
func TestMissingSaysWhy(t *testing.T) {
	m := open(t, Options{})
	for _, c := range DefaultControllers {
		why, missing := m.Missing()[c]
		if missing == slices.Contains(m.Controllers(), c) {
			t.Errorf("controller %s: missing %v and enabled %v", c, missing, m.Controllers())
		}
		if missing && why == "" {
			t.Errorf("controller %s missing without a reason", c)
		}
		t.Logf("%s: enabled=%v %s", c, !missing, why)
	}
}
