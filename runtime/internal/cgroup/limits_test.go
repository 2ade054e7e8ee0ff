package cgroup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// limitsOrSkip opens a Manager with the default controllers and skips the
// test, with the reason, when the controller c is not available.
func limitsOrSkip(t *testing.T, c string) *Manager {
	t.Helper()
	m := open(t, Options{})
	if why, missing := m.Missing()[c]; missing {
		t.Skipf("the %s controller is not available here, so this limit cannot be tested: %s", c, why)
	}
	return m
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// memory.max: a process that keeps allocating is OOM-killed, with the whole
// leaf (memory.oom.group), and memory.events counts the kill.
func TestLimitMemoryOOMKill(t *testing.T) {
	m := limitsOrSkip(t, "memory")
	l, err := m.NewLeaf("hog")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetLimits(Limits{MemoryMax: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(l.Path(), "memory.max")); got != "33554432" {
		t.Fatalf("memory.max = %q", got)
	}
	if got := readTrim(t, filepath.Join(l.Path(), "memory.oom.group")); got != "1" {
		t.Fatalf("memory.oom.group = %q", got)
	}
	if n, err := l.OOMKills(); err != nil || n != 0 {
		t.Fatalf("OOMKills before = %d, %v", n, err)
	}
	cmd := helper("hog")
	cmd.Env = append(cmd.Env, "GOMEMLIMIT=off", "GOGC=off")
	startIn(t, l, cmd)
	cmd.Wait()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended %v; want SIGKILL by the OOM killer", cmd.ProcessState)
	}
	if n, err := l.OOMKills(); err != nil || n < 1 {
		t.Fatalf("OOMKills after = %d, %v; want at least 1", n, err)
	}
}

// pids.max: the leaf cannot hold more tasks than the limit.
func TestLimitPids(t *testing.T) {
	m := limitsOrSkip(t, "pids")
	l, err := m.NewLeaf("forker")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetLimits(Limits{PidsMax: 24}); err != nil {
		t.Fatal(err)
	}
	cmd := helper("forkmany")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, l, cmd)
	sc := bufio.NewScanner(out)
	var line string
	for sc.Scan() {
		line = sc.Text()
	}
	cmd.Wait()
	var n int
	var rest string
	if _, err := fmt.Sscanf(line, "started %d err %s", &n, &rest); err != nil {
		t.Fatalf("helper said %q", line)
	}
	if n >= 64 || !strings.Contains(line, "resource temporarily unavailable") {
		t.Fatalf("with pids.max 24 the helper %q; want fewer than 64 started and EAGAIN", line)
	}
}

// cpu.max is written as quota and period in microseconds.
func TestLimitCPU(t *testing.T) {
	m := limitsOrSkip(t, "cpu")
	l, err := m.NewLeaf("cpu")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetLimits(Limits{CPUQuota: 25 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(l.Path(), "cpu.max")); got != "25000 100000" {
		t.Fatalf("cpu.max = %q, want \"25000 100000\"", got)
	}
}

// moveReport is what the mover helper saw.
type moveReport struct {
	Err            string
	Moved          bool
	Controllers    []string
	CgroupAfter    string // the helper's cgroup v2 once Open returned
	OwnSubtree     string // its original cgroup's subtree_control then
	LeafOffers     string // a leaf's cgroup.controllers
	ChildIn        string // the cgroup of a child started in the leaf
	CgroupClosed   string // the helper's cgroup after Close
	OwnSubtreeDone string // subtree_control after Close
	HomeLeft       bool
}

// moverRole runs Open with the controller in CGTEST_CTRL from a cgroup that
// is not the root, and reports what happened.
func moverRole() int {
	var r moveReport
	defer func() { json.NewEncoder(os.Stdout).Encode(r) }()
	self, _ := Self()
	m, err := Open(Options{Controllers: []string{os.Getenv("CGTEST_CTRL")}})
	if err != nil {
		r.Err = err.Error()
		return 0
	}
	r.Moved, r.Controllers = m.Moved(), m.Controllers()
	r.CgroupAfter = cgroupOf(os.Getpid())
	b, _ := os.ReadFile(filepath.Join(self, "cgroup.subtree_control"))
	r.OwnSubtree = strings.TrimSpace(string(b))
	l, err := m.NewLeaf("c-1")
	if err != nil {
		r.Err = err.Error()
		m.Close()
		return 0
	}
	b, _ = os.ReadFile(filepath.Join(l.Path(), "cgroup.controllers"))
	r.LeafOffers = strings.TrimSpace(string(b))
	dir, err := l.OpenDir()
	if err == nil {
		c := exec.Command("sleep", "300")
		c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
		if err := c.Start(); err == nil {
			r.ChildIn = cgroupOf(c.Process.Pid)
			l.Kill(context.Background())
			c.Wait()
		}
		dir.Close()
	}
	home := filepath.Dir(m.Path())
	if err := m.Close(); err != nil {
		r.Err = err.Error()
	}
	r.CgroupClosed = cgroupOf(os.Getpid())
	b, _ = os.ReadFile(filepath.Join(self, "cgroup.subtree_control"))
	r.OwnSubtreeDone = strings.TrimSpace(string(b))
	_, err = os.Stat(home)
	r.HomeLeft = err == nil
	return 0
}

// A process in a cgroup that is not the root, asked for a controller its
// cgroup offers, moves itself into <home>/postmaster, enables the
// controller below its cgroup so that leaves offer it, and undoes both on
// Close. It needs a controller enabled in the parent's subtree_control;
// BGWORKER_CGROUP_TEST_ENABLE=<controller> enables one for the test (and
// disables it after) where the parent offers it but has none enabled, as
// on a hybrid system's unified root, which offers hugetlb.
func TestMoveSelfToEnableControllers(t *testing.T) {
	probe := open(t, Options{Controllers: []string{}})
	parent := filepath.Dir(filepath.Dir(probe.Path())) // this process's cgroup
	sc := filepath.Join(parent, "cgroup.subtree_control")
	enabledCtrls := strings.Fields(readTrim(t, sc))
	ctrl := ""
	if len(enabledCtrls) > 0 {
		ctrl = enabledCtrls[0]
	} else if c := os.Getenv("BGWORKER_CGROUP_TEST_ENABLE"); c != "" {
		if !slices.Contains(strings.Fields(readTrim(t, filepath.Join(parent, "cgroup.controllers"))), c) {
			t.Fatalf("BGWORKER_CGROUP_TEST_ENABLE=%s: %s does not offer it", c, parent)
		}
		if err := writeFile(sc, "+"+c); err != nil {
			t.Fatalf("enable %s in %s: %v", c, sc, err)
		}
		t.Cleanup(func() {
			if err := writeFile(sc, "-"+c); err != nil {
				t.Errorf("disable %s in %s again: %v", c, sc, err)
			}
		})
		ctrl = c
	} else {
		t.Skipf("%s enables no controller, so no cgroup below it offers one to move for; "+
			"set BGWORKER_CGROUP_TEST_ENABLE to one of %q to enable it for this test", sc, readTrim(t, filepath.Join(parent, "cgroup.controllers")))
	}
	start := filepath.Join(parent, "cgtest-move-"+runTag)
	if err := os.Mkdir(start, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeEmpty(start) })
	dir, err := os.Open(start)
	if err != nil {
		t.Fatal(err)
	}
	cmd := helper("mover")
	cmd.Env = append(cmd.Env, "CGTEST_CTRL="+ctrl)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	out, err := cmd.Output()
	dir.Close()
	if err != nil {
		t.Fatalf("mover: %v", err)
	}
	var r moveReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("mover said %q: %v", out, err)
	}
	t.Logf("controller %s: %+v", ctrl, r)
	rel := strings.TrimPrefix(start, mustSelfMount(t))
	switch {
	case r.Err != "":
		t.Fatalf("mover: %s", r.Err)
	case !r.Moved || !strings.HasSuffix(r.CgroupAfter, "/postmaster") || !strings.HasPrefix(r.CgroupAfter, rel+"/bgworker-"):
		t.Fatalf("after Open the mover is in %q (moved %v); want %s/bgworker-*/postmaster", r.CgroupAfter, r.Moved, rel)
	case !slices.Equal(r.Controllers, []string{ctrl}):
		t.Fatalf("controllers %v, want [%s]", r.Controllers, ctrl)
	case !slices.Contains(strings.Fields(r.OwnSubtree), ctrl):
		t.Fatalf("its cgroup's subtree_control %q lacks %s", r.OwnSubtree, ctrl)
	case !slices.Contains(strings.Fields(r.LeafOffers), ctrl):
		t.Fatalf("a leaf offers %q, want %s", r.LeafOffers, ctrl)
	case !strings.HasSuffix(r.ChildIn, "/c-1"):
		t.Fatalf("a child started in the leaf is in %q", r.ChildIn)
	case r.CgroupClosed != rel:
		t.Fatalf("after Close the mover is in %q, want back in %s", r.CgroupClosed, rel)
	case r.OwnSubtreeDone != "":
		t.Fatalf("after Close its cgroup's subtree_control is %q, want empty again", r.OwnSubtreeDone)
	case r.HomeLeft:
		t.Fatal("home left after Close")
	}
	ents, _ := os.ReadDir(start)
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("left in %s: %s", start, e.Name())
		}
	}
	if err := os.Remove(start); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
