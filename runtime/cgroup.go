package runtime

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
	"github.com/bgworker/bgworker/runtime/internal/proc"
)

// A cgroup v2 leaf per child, where the host can have one (root on a
// cgroup2 host, systemd's Delegate=yes, a container with a writable cgroup2
// mount): the production launcher starts each child inside its leaf and
// kills the leaf whenever the child ends (runtime/internal/proc), and a
// child whose postmaster is gone kills its own leaf the same way. This file
// sets the runtime's subtree up and checks specs' limits against it. Where
// cgroup v2 is not usable the runtime says why once at Start and falls back
// to process groups; /workers rows then have an empty cgroup.

// ErrLimitsUnavailable is returned (wrapped, with the reason) by Start and
// StartWorker for a spec whose Limits this runtime cannot enforce: cgroup v2
// is not usable here, or the controller a limit needs (memory, cpu, pids)
// is not delegated to it. Such a worker is never run without its limits.
var ErrLimitsUnavailable = cgroup.ErrLimitsUnavailable

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
	if sp.Limits.IsZero() || rt.newLauncher != nil {
		return nil // in memory, limits are accepted and not enforced
	}
	cg := rt.cgroups()
	if cg == nil {
		return nil // before Start, which checks the static workers
	}
	if cg.mgr == nil {
		return fmt.Errorf("runtime: worker %q sets Limits: %w: %w", sp.Name, ErrLimitsUnavailable, cg.why)
	}
	if err := cg.mgr.CheckLimits(proc.CgroupLimits(sp.Limits)); err != nil {
		return fmt.Errorf("runtime: worker %q sets Limits: %w", sp.Name, err)
	}
	return nil
}
