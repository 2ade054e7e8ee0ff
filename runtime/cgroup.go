package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
)

// A cgroup v2 leaf per child, where the host can have one (root on a
// cgroup2 host, systemd's Delegate=yes, a container with a writable cgroup2
// mount). Each child is started inside its leaf (clone3 with
// CLONE_INTO_CGROUP), and whenever it ends, by any exit, the leaf is killed
// with cgroup.kill before the child is reaped: that reaches descendants
// that left the process group or the session (setsid, double forks), which
// the process-group kill cannot. A child whose postmaster is gone kills its
// own leaf the same way. Where cgroup v2 is not usable the runtime says why
// once at Start and falls back to process groups; /workers rows then have
// an empty cgroup.

// ErrLimitsUnavailable is returned (wrapped, with the reason) by Start and
// StartWorker for a spec whose Limits this runtime cannot enforce: cgroup v2
// is not usable here, or the controller a limit needs (memory, cpu, pids)
// is not delegated to it. Such a worker is never run without its limits.
var ErrLimitsUnavailable = cgroup.ErrLimitsUnavailable

// envCgroup carries, in a child's environment, the directory of its leaf,
// which the child kills when its postmaster is gone (killOwnLeaf).
const envCgroup = "BGWORKER_CGROUP"

// leafKillTimeout bounds the wait for a killed leaf to empty: only a process
// stuck in the kernel (uninterruptible I/O) takes longer, and the leaf is
// then left for Runtime.Shutdown to remove.
const leafKillTimeout = 5 * time.Second

// cgroupState is what Start found: a manager, or why there is none.
type cgroupState struct {
	mgr *cgroup.Manager // nil: process groups only
	why error           // why cgroups are not used, when mgr is nil
}

// openCgroups sets up the runtime's cgroup subtree, or says once why it
// cannot, and checks the static workers' limits against what it found. It
// fails only for a static worker whose limits cannot be enforced.
func (rt *Runtime) openCgroups() error {
	cg := &cgroupState{}
	if rt.cfg.NoCgroups {
		cg.why = errors.New("disabled by Config.NoCgroups")
	} else if m, err := cgroup.Open(cgroup.Options{}); err != nil {
		cg.why = err
	} else {
		cg.mgr = m
	}
	rt.mu.Lock()
	rt.cg = cg
	rt.mu.Unlock()
	if cg.mgr == nil {
		rt.log.Warn("runtime: no cgroup per child; children are contained by process groups only, which a descendant that calls setsid escapes",
			"reason", cg.why.Error())
	} else {
		var missing []string
		for c, why := range cg.mgr.Missing() {
			missing = append(missing, c+": "+why)
		}
		rt.log.Info("runtime: a cgroup v2 leaf per child", "cgroup", cg.mgr.Path(), "limits", strings.Join(cg.mgr.Controllers(), ","),
			"moved_self", cg.mgr.Moved(), "unavailable", strings.Join(missing, "; "))
		if n, stale := cg.mgr.Swept(); n > 0 || len(stale) > 0 {
			rt.log.Warn("runtime: found cgroups of runtimes that are gone", "removed", n, "still_populated", strings.Join(stale, " "))
		}
	}
	for _, s := range rt.pm.slots {
		if err := rt.checkLimits(s.spec); err != nil {
			return err
		}
	}
	return nil
}

func (rt *Runtime) cgroups() *cgroupState {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.cg
}

// closeCgroups removes the runtime's subtree once every child is reaped.
func (rt *Runtime) closeCgroups() {
	if cg := rt.cgroups(); cg != nil && cg.mgr != nil {
		if err := cg.mgr.Close(); err != nil {
			rt.log.Warn("runtime: could not remove every cgroup", "err", err)
		}
	}
}

// checkLimits refuses a spec whose Limits this runtime cannot enforce.
func (rt *Runtime) checkLimits(sp actors.Spec) error {
	if sp.Limits.IsZero() {
		return nil
	}
	cg := rt.cgroups()
	if cg == nil {
		return nil // before Start, which checks the static workers
	}
	if cg.mgr == nil {
		return fmt.Errorf("runtime: worker %q sets Limits: %w: %w", sp.Name, ErrLimitsUnavailable, cg.why)
	}
	if err := cg.mgr.CheckLimits(cgroupLimits(sp.Limits)); err != nil {
		return fmt.Errorf("runtime: worker %q sets Limits: %w", sp.Name, err)
	}
	return nil
}

func cgroupLimits(l actors.Limits) cgroup.Limits {
	const period = 100 * time.Millisecond
	return cgroup.Limits{
		MemoryMax: l.MemoryMax,
		CPUQuota:  time.Duration(l.CPUMax * float64(period)),
		CPUPeriod: period,
		PidsMax:   int64(l.PidsMax),
	}
}

// spawnIntoLeaf makes the leaf of a new child and sets cmd to start inside
// it. Call release once cmd.Start has returned. Without cgroups it does
// nothing.
func (rt *Runtime) spawnIntoLeaf(p *proc, cmd *exec.Cmd) (release func(), err error) {
	cg := rt.cgroups()
	if cg == nil || cg.mgr == nil {
		return func() {}, nil
	}
	leaf, err := cg.mgr.NewLeaf("c-" + strconv.FormatUint(p.id, 10))
	if err != nil {
		return nil, fmt.Errorf("runtime: spawn: %w", err)
	}
	dir, err := leaf.OpenDir()
	if err != nil {
		leaf.Remove()
		return nil, fmt.Errorf("runtime: spawn: %w", err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
	cmd.Env = append(cmd.Env, envCgroup+"="+leaf.Path())
	p.leaf = leaf
	return func() { dir.Close() }, nil
}

// killLeaf kills everything left in the child's leaf and waits until it is
// empty; the waiter calls it once the child has exited, before reaping it.
// It first reads whether the kernel OOM-killed something there.
func (p *proc) killLeaf() {
	if p.leaf == nil {
		return
	}
	if n, err := p.leaf.OOMKills(); err == nil && n > 0 {
		p.oomKilled.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), leafKillTimeout)
	defer cancel()
	if err := p.leaf.Kill(ctx); err != nil {
		p.rt.log.Warn("runtime: a child's cgroup did not empty", "pid", p.pid, "err", err)
	}
}

// removeLeaf removes the leaf of a reaped child (or of one that never
// started). A leaf that cannot be removed yet is removed at Shutdown.
func (p *proc) removeLeaf() {
	if p.leaf == nil {
		return
	}
	if err := p.leaf.Remove(); err != nil {
		p.rt.log.Warn("runtime: could not remove a child's cgroup", "pid", p.pid, "err", err)
	}
}

// applyLimits writes a worker's limits into the leaf of the child that is
// about to run it (a cold child or one from the warm pool).
func (p *proc) applyLimits(l actors.Limits) error {
	if l.IsZero() {
		return nil
	}
	if p.leaf == nil {
		return fmt.Errorf("runtime: %w: the child has no cgroup", ErrLimitsUnavailable)
	}
	return p.leaf.SetLimits(cgroupLimits(l))
}

// cgroupPath is the child's leaf, for its /workers row; "" without one.
func (p *proc) cgroupPath() string {
	if p.leaf == nil {
		return ""
	}
	return p.leaf.Path()
}

// oomCause returns ReasonOOMKilled when the child was SIGKILLed and the
// kernel counted an OOM kill in its leaf, and "" otherwise.
func (p *proc) oomCause(ws syscall.WaitStatus) string {
	if p.oomKilled.Load() && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return ReasonOOMKilled
	}
	return ""
}

// killOwnLeaf, in a child whose postmaster is gone, kills the child's leaf:
// itself and everything it started, wherever they went. It returns when
// there is no leaf or it cannot be killed; the caller then kills the
// process group.
func killOwnLeaf() {
	dir := os.Getenv(envCgroup)
	if dir == "" || !filepath.IsAbs(dir) {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	f.Write([]byte("1"))
	f.Close()
}
