package proc

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
)

// A cgroup v2 leaf per child, where the runtime has a cgroup manager: the
// child is started inside its leaf (clone3 with CLONE_INTO_CGROUP), and
// whenever it ends, by any exit, the leaf is killed with cgroup.kill before
// the child is reaped. That reaches descendants that left the process
// group or the session (setsid, double forks), which the process-group
// kill cannot.

// leafKillTimeout bounds the wait for a killed leaf to empty: only a process
// stuck in the kernel (uninterruptible I/O) takes longer, and the leaf is
// then left for the runtime's shutdown to remove.
const leafKillTimeout = 5 * time.Second

// ErrLimitsUnavailable is wrapped by Limit for a child without a leaf.
var ErrLimitsUnavailable = cgroup.ErrLimitsUnavailable

// spawnIntoLeaf makes the leaf of a new child and sets cmd to start inside
// it. Call release once cmd.Start has returned. Without cgroups it does
// nothing.
func (l *Launcher) spawnIntoLeaf(p *proc, cmd *exec.Cmd) (release func(), err error) {
	m := l.cfg.Cgroups
	if m == nil {
		return func() {}, nil
	}
	leaf, err := m.NewLeaf("c-" + strconv.FormatUint(p.id, 10))
	if err != nil {
		return nil, fmt.Errorf("proc: spawn: %w", err)
	}
	dir, err := leaf.OpenDir()
	if err != nil {
		leaf.Remove()
		return nil, fmt.Errorf("proc: spawn: %w", err)
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
	cmd.Env = append(cmd.Env, bridge.EnvCgroup+"="+leaf.Path())
	p.leaf = leaf
	return func() { dir.Close() }, nil
}

// killLeaf kills everything left in the child's leaf and waits until it is
// empty; the reaper calls it once the child has exited, before reaping it.
// It first reads whether the kernel OOM-killed something there.
func (p *proc) killLeaf() {
	if p.leaf == nil {
		return
	}
	if n, err := p.leaf.OOMKills(); err == nil && n > 0 {
		p.oom.Store(true)
	}
	// Usually the child was the leaf's only process and the leaf is empty
	// now (an exited, unreaped child does not count): nothing to kill, and
	// no process can enter an empty leaf. Leaf.Kill would still set up and
	// close an inotify watch, and closing one waits for the kernel's
	// fsnotify grace period: 4-25 ms measured here, on every exit.
	if pop, err := p.leaf.Populated(); err == nil && !pop {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leafKillTimeout)
	defer cancel()
	if err := p.leaf.Kill(ctx); err != nil {
		p.l.env.Log.Warn("runtime: a child's cgroup did not empty", "pid", p.pid, "err", err)
	}
}

// removeLeaf removes the leaf of a reaped child (or of one that never
// started). A leaf that cannot be removed yet is removed at shutdown.
func (p *proc) removeLeaf() {
	if p.leaf == nil {
		return
	}
	if err := p.leaf.Remove(); err != nil {
		p.l.env.Log.Warn("runtime: could not remove a child's cgroup", "pid", p.pid, "err", err)
	}
}

// Limit writes a worker's limits into the leaf of the child that is about
// to run it (a cold child or one from the warm pool).
func (p *proc) Limit(l actors.Limits) error {
	if l.IsZero() {
		return nil
	}
	if p.leaf == nil {
		return fmt.Errorf("runtime: %w: the child has no cgroup", ErrLimitsUnavailable)
	}
	return p.leaf.SetLimits(CgroupLimits(l))
}

// Isolation is "cgroup" for a child in a leaf of its own, "process_group"
// for one without.
func (p *proc) Isolation() string {
	if p.leaf == nil {
		return "process_group"
	}
	return "cgroup"
}

// Cgroup is the child's leaf, for its /workers row; "" without one.
func (p *proc) Cgroup() string {
	if p.leaf == nil {
		return ""
	}
	return p.leaf.Path()
}

// CgroupLimits turns a spec's limits into the cgroup's.
func CgroupLimits(l actors.Limits) cgroup.Limits {
	const period = 100 * time.Millisecond
	return cgroup.Limits{
		MemoryMax: l.MemoryMax,
		CPUQuota:  time.Duration(l.CPUMax * float64(period)),
		CPUPeriod: period,
		PidsMax:   int64(l.PidsMax),
	}
}
