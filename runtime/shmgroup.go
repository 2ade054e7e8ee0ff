package runtime

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// The shared-memory group and its all-for-one reset, after PostgreSQL's
// crash restart: when a worker holding shared memory crashes, it may have
// died mid-write, so no other holder can trust the segment. Every other
// member is stopped (SIGTERM, SIGKILL at Config.GroupStopTimeout), and only
// once the last one is reaped is a new segment generation built: a fresh
// memfd, never the old one zeroed, since a dying worker could still write
// to it. Then the phases are re-entered for the group and its members are
// started again through the server loop, in registration order, each after
// its own backoff: the crashed member's restart is charged to its policy,
// the members taken down with it are not. Workers without shared memory
// are never touched. A replaced generation is retired as soon as the last
// child that held it is reaped.

// shmGroup is the group's state. The postmaster owns it; cur and resets
// are published for readers outside it.
type shmGroup struct {
	regions []shmactor.Region // the segment's layout
	enabled bool              // some worker can use shared memory

	seg     *shmactor.Segment   // the current generation; nil before ConsistentState
	gen     uint64              // its generation
	holders map[uint64]int      // generation → children given it and not yet exited
	old     []*shmactor.Segment // replaced generations, oldest first: retired once unheld, unmapped past keepRetired
	// keepRetired is how many retired generations stay mapped (as private
	// zeros) for host code that still holds them; an older one is
	// unmapped, so that resets do not pile mappings up.
	keepRetired int

	resetting  bool            // a reset waits for its members to be reaped
	awaitUp    bool            // a reset waits for its members to run again
	resetStart time.Time       // when the reset under way began
	backoff    *actors.Backoff // counts resets against GroupResetIntensity
	failed     bool            // given up: resets came too often

	cur atomic.Pointer[shmactor.Segment] // seg, for Runtime.Segment and Status
}

// collectRegions gathers the regions that size the segment: those of the
// static shared-memory workers and of every registered or defined
// shared-memory code (dynamic workers may run it). Two requests for one
// name must agree on the size.
func collectRegions(static []actors.Spec) (regions []shmactor.Region, any bool, err error) {
	byName := map[string]int{}
	add := func(sp actors.Spec) error {
		if !sp.SharedMemory {
			return nil
		}
		any = true
		for _, r := range sp.Regions {
			if i, ok := byName[r.Name]; ok {
				if regions[i].Size != r.Size {
					return fmt.Errorf("%w: region %q requested with sizes %d and %d (worker %q)", ErrInvalidConfig, r.Name, regions[i].Size, r.Size, sp.Name)
				}
				continue
			}
			byName[r.Name] = len(regions)
			regions = append(regions, r)
		}
		return nil
	}
	for _, sp := range static {
		if err := add(sp); err != nil {
			return nil, false, err
		}
	}
	for _, sp := range actors.All() {
		if err := add(sp); err != nil {
			return nil, false, err
		}
	}
	return regions, any, nil
}

// Segment returns the current shared segment as the host sees it, or nil
// before ConsistentState or when no worker uses shared memory. After a
// reset it is a new segment, announced by a SegmentEvent: take it again
// then. The old generation is retired as soon as the last child that held
// it is reaped (shmactor.Segment.Retire): its memory is given back, and
// whatever host code still holds of it stays safe to touch (it reads
// zeros, never faults) while its Region fails with shmactor.ErrRetired,
// for the next RetiredSegmentsMapped retirements. After those it is
// unmapped, and touching it then faults: host code must not keep a
// segment, or slices of it, past the SegmentEvent that replaces it.
func (rt *Runtime) Segment() *shmactor.Segment { return rt.pm.group.cur.Load() }

func (pm *postmaster) buildSegment(reset bool) error {
	g := &pm.group
	gen := g.gen + 1
	seg, err := shmactor.Build(gen, g.regions)
	if err != nil {
		return fmt.Errorf("runtime: shared memory generation %d: %w", gen, err)
	}
	g.gen = gen
	old := g.seg
	g.seg = seg
	g.cur.Store(seg)
	pm.obs.segmentBuilt(seg, reset)
	if old != nil {
		g.old = append(g.old, old)
		pm.maybeRetire(old.Generation())
	}
	return nil
}

// RetiredSegmentsMapped is how many retired shared-memory generations the
// host keeps mapped (as private zeros, costing no memory) for host code
// that still holds one; the oldest beyond them is unmapped. Each mapping
// is one entry of the process's map count (vm.max_map_count), which
// resets must not use up.
const RetiredSegmentsMapped = 16

// maybeRetire retires an old generation once no child holds it: its memfd
// is closed and its memory freed, so resets do not pile segments up. Its
// mapping (private zeros by then) stays for host code that still holds it,
// until RetiredSegmentsMapped later generations are retired too.
func (pm *postmaster) maybeRetire(gen uint64) {
	g := &pm.group
	if gen == g.gen || g.holders[gen] > 0 {
		return
	}
	delete(g.holders, gen)
	for _, seg := range g.old {
		if seg.Generation() == gen {
			if err := seg.Retire(); err != nil {
				pm.rt.log.Warn("runtime: could not retire a shared-memory generation", "generation", gen, "err", err)
			}
			pm.rt.log.Info("runtime: shared memory generation retired", "generation", gen)
		}
	}
	retired := 0
	for _, seg := range g.old {
		if seg.Retired() {
			retired++
		}
	}
	keep := g.old[:0]
	for _, seg := range g.old {
		if seg.Retired() && retired > g.keepRetired {
			retired--
			if err := seg.Close(); err != nil {
				pm.rt.log.Warn("runtime: could not unmap a retired shared-memory generation", "generation", seg.Generation(), "err", err)
			}
			continue
		}
		keep = append(keep, seg)
	}
	clear(g.old[len(keep):])
	g.old = keep
}

// segmentFile returns a duplicate of the current segment's memfd for one
// child: the postmaster keeps it open until the child has exited, so the
// descriptor number queued for SCM_RIGHTS can never be reused for another
// file meanwhile.
func (pm *postmaster) segmentFile() (*os.File, error) {
	fd, err := unix.FcntlInt(pm.group.seg.File().Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("runtime: dup segment: %w", err)
	}
	return os.NewFile(uintptr(fd), "segment"), nil
}

// beginReset starts an all-for-one reset after crashed's crash, unless one
// is under way. It reports false when the reset is refused, because resets
// came more often than Config.GroupResetIntensity allows: then the group
// is failed.
func (pm *postmaster) beginReset(crashed *slot) bool {
	g := &pm.group
	now := pm.clock.Now()
	switch v, why := decideReset(g.failed, g.resetting, pm.rt.cfg.NoRestartAfterCrash, g.backoff, now); v {
	case resetFailed:
		return false
	case resetJoin:
		return true
	case resetGiveUp:
		pm.failGroup(crashed, why)
		return false
	}
	g.resetting = true
	g.resetStart = now
	pm.obs.resetBegan(crashed.spec.Name, g.gen)
	for _, s := range resetMembers(pm.slots, crashed) {
		pm.terminate(s, ReasonGroupReset, pm.rt.cfg.GroupStopTimeout)
	}
	pm.maybeFinishReset()
	return true
}

// maybeFinishReset completes a reset once no member has a child: a new
// generation, the phases re-entered for the group, the members queued in
// registration order (each starts once its own backoff, if any, is over).
func (pm *postmaster) maybeFinishReset() {
	g := &pm.group
	if !g.resetting {
		return
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && s.state.Alive() {
			return
		}
	}
	if pm.shutdown != 0 {
		g.resetting = false
		pm.obs.resetEnded()
		return
	}
	if err := pm.buildSegment(true); err != nil {
		pm.rt.log.Error("runtime: could not rebuild shared memory", "err", err)
		g.resetting = false
		pm.obs.resetEnded()
		pm.failGroup(nil, err)
		return
	}
	g.resetting = false
	g.awaitUp = true
	for _, p := range []phases.Phase{phases.ConsistentState, phases.RecoveryFinished} {
		if p <= pm.phase {
			pm.obs.phaseEntered(pm, p, true)
		}
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && s.state == Pending && s.timer == nil {
			pm.enqueue(s)
		}
	}
	pm.checkGroupUp()
}

// groupHeld reports whether a shared-memory member must wait: no segment
// yet, or a reset under way.
func (pm *postmaster) groupHeld() bool { return pm.group.resetting || pm.group.seg == nil }

// checkGroupUp records the reset's duration once every member that is to
// run again is running.
func (pm *postmaster) checkGroupUp() {
	g := &pm.group
	if !g.awaitUp {
		return
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && !s.terminal() && s.state != Running {
			return
		}
	}
	g.awaitUp = false
	pm.obs.resetDone(g.gen, pm.clock.Now().Sub(g.resetStart))
}

// failGroup gives the group up. Every member is failed; a critical one
// shuts the runtime down.
func (pm *postmaster) failGroup(cause *slot, err error) {
	g := &pm.group
	g.failed = true
	name := ""
	if cause != nil {
		name = cause.spec.Name
	}
	pm.obs.groupFailed(name, g.gen, err)
	for _, s := range pm.slots {
		if !s.spec.SharedMemory || s.terminal() || s == cause {
			continue
		}
		if s.state.Alive() {
			pm.terminate(s, ReasonGroupReset, pm.rt.cfg.GroupStopTimeout) // its exit marks it failed
			continue
		}
		pm.stopTimer(s)
		s.queued = false
		s.nextStart = time.Time{}
		pm.transition(s, Failed, WorkerEvent{})
		pm.escalate(s, "shared-memory group failed", s.lastExit())
	}
}
