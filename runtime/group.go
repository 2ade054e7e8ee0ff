package runtime

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/shmactor"
)

// The shared-memory group and its all-for-one reset, after PostgreSQL's
// crash restart: when a worker holding shared memory crashes, it may have
// died mid-write, so no other holder can trust the segment. Every other
// member is stopped (SIGTERM, SIGKILL at Config.GroupStopTimeout), and only
// once the last one is reaped is a new segment generation built: a fresh
// memfd, never the old one zeroed, since a dying worker could still write
// to it. Then the phases are re-entered for the group and its members are
// started again through the server loop. Workers without shared memory are
// never touched.

// SegmentEvent is published when a segment generation is built: at
// ConsistentState, and after every all-for-one reset (Reset true). Host code
// that reads shared memory takes the new segment from Runtime.Segment.
type SegmentEvent struct {
	Generation uint64
	Size       int
	Reset      bool
	At         time.Time
}

// GroupResetEvent is published when an all-for-one reset begins (Cause is
// the crashed worker) and when the group is given up because resets came
// too often (Failed true).
type GroupResetEvent struct {
	Cause      string
	Generation uint64 // the generation being abandoned
	Failed     bool
	At         time.Time
}

func (SegmentEvent) event()    {}
func (GroupResetEvent) event() {}

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
// reset it is a new segment; the old one stays mapped until Shutdown, so
// host code holding it cannot fault, but it is no longer shared with any
// worker.
func (rt *Runtime) Segment() *shmactor.Segment { return rt.segment.Load() }

func (pm *postmaster) buildSegment(reset bool) error {
	gen := pm.segGen + 1
	seg, err := shmactor.Build(gen, pm.rt.regions)
	if err != nil {
		return fmt.Errorf("runtime: shared memory generation %d: %w", gen, err)
	}
	pm.segGen = gen
	if pm.seg != nil {
		pm.oldSegs = append(pm.oldSegs, pm.seg)
	}
	pm.seg = seg
	pm.rt.segment.Store(seg)
	pm.rt.metrics.segmentBytes.Set(float64(seg.Size()))
	pm.rt.metrics.segmentGeneration.Set(float64(gen))
	pm.rt.log.Info("runtime: shared memory segment built", "generation", gen, "bytes", seg.Size(), "reset", reset)
	pm.rt.publish(SegmentEvent{Generation: gen, Size: seg.Size(), Reset: reset, At: time.Now()})
	return nil
}

// segmentFile returns a duplicate of the current segment's memfd for one
// child: the proc keeps it open until it is reaped, so the descriptor number
// queued for SCM_RIGHTS can never be reused for another file meanwhile.
func (pm *postmaster) segmentFile() (*os.File, error) {
	fd, err := unix.FcntlInt(pm.seg.File().Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("runtime: dup segment: %w", err)
	}
	return os.NewFile(uintptr(fd), "segment"), nil
}

// beginReset starts an all-for-one reset after crashed's crash.
func (pm *postmaster) beginReset(crashed *slot) {
	if pm.resetting || pm.groupFailed {
		return // this exit is part of a reset under way
	}
	now := time.Now()
	if _, err := pm.groupBackoff.Next(now, 0, 0); errors.Is(err, actors.ErrIntensity) {
		pm.failGroup(crashed, err)
		return
	}
	pm.resetting = true
	pm.resetStart = now
	pm.rt.metrics.resets.Inc()
	pm.rt.status.resetBegun()
	pm.rt.log.Warn("runtime: shared-memory worker crashed; resetting the shared-memory group",
		"worker", crashed.spec.Name, "generation", pm.segGen)
	pm.rt.publish(GroupResetEvent{Cause: crashed.spec.Name, Generation: pm.segGen, At: now})
	for _, s := range pm.slots {
		if s != crashed && s.spec.SharedMemory {
			pm.stopForReset(s)
		}
	}
	pm.maybeFinishReset()
}

// stopForReset takes one member down: SIGTERM and the terminate notice,
// SIGKILL at the group deadline. A spawn in flight is killed on arrival.
func (pm *postmaster) stopForReset(s *slot) {
	if !s.state.Alive() || s.state == Stopping && s.cause != "" {
		return
	}
	s.cause = ReasonGroupReset
	if s.proc == nil {
		return // spawned() sees the cause and kills it
	}
	d := pm.rt.cfg.GroupStopTimeout
	deadline := time.Now().Add(d)
	pm.setState(s, Stopping, nil)
	_ = s.proc.send(func(b []byte) []byte { return bridge.AppendTerminate(b, deadline.UnixNano()) })
	s.proc.signal(syscall.SIGTERM)
	pm.armTimer(s, timerGrace, d)
}

// maybeFinishReset completes a reset once no member has a process: a new
// generation, the phases re-entered for the group, the members started.
func (pm *postmaster) maybeFinishReset() {
	if !pm.resetting {
		return
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && s.state.Alive() {
			return
		}
	}
	if pm.shutdown != 0 {
		pm.resetting = false
		return
	}
	if err := pm.buildSegment(true); err != nil {
		pm.rt.log.Error("runtime: could not rebuild shared memory", "err", err)
		pm.resetting = false
		pm.failGroup(nil, err)
		return
	}
	pm.resetting = false
	pm.awaitGroup = true
	for _, p := range []phases.Phase{phases.ConsistentState, phases.RecoveryFinished} {
		if p <= pm.phase {
			pm.rt.publish(PhaseEvent{Phase: p, Reset: true, At: time.Now()})
		}
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && s.state == Pending && s.timer == nil {
			pm.enqueue(pm.ctx, s)
		}
	}
	pm.checkGroupUp()
}

// checkGroupUp records the reset's duration once every member that is to
// run again is running.
func (pm *postmaster) checkGroupUp() {
	if !pm.awaitGroup {
		return
	}
	for _, s := range pm.slots {
		if s.spec.SharedMemory && !s.terminal() && s.state != Running {
			return
		}
	}
	pm.awaitGroup = false
	pm.rt.status.resetting.Store(false)
	d := time.Since(pm.resetStart)
	pm.rt.metrics.resetSeconds.Observe(d.Seconds())
	pm.rt.log.Info("runtime: shared-memory group is back", "generation", pm.segGen, "took", d)
}

// failGroup gives the group up: resets came more often than
// Config.GroupResetIntensity allows. Every member is failed; a critical one
// shuts the runtime down.
func (pm *postmaster) failGroup(cause *slot, err error) {
	pm.groupFailed = true
	pm.rt.status.groupGivenUp()
	name := ""
	if cause != nil {
		name = cause.spec.Name
	}
	pm.rt.log.Error("runtime: shared-memory group failed", "err", err, "worker", name)
	pm.rt.publish(GroupResetEvent{Cause: name, Generation: pm.segGen, Failed: true, At: time.Now()})
	for _, s := range pm.slots {
		if !s.spec.SharedMemory || s.terminal() || s == cause {
			continue
		}
		if s.state.Alive() {
			pm.stopForReset(s) // its exit marks it failed
			continue
		}
		pm.stopTimer(s)
		s.queued = false
		s.nextStart = time.Time{}
		pm.setState(s, Failed, nil)
		pm.escalate(s, "shared-memory group failed")
	}
}

// afterShmExit applies the group rules to a shared-memory worker's exit. It
// returns true when it has settled the slot's state.
func (pm *postmaster) afterShmExit(s *slot, ex Exit, ev WorkerEvent) bool {
	if pm.shutdown != 0 || s.stopReq {
		return false
	}
	if pm.groupFailed {
		pm.setStateEv(s, Failed, ev)
		pm.escalate(s, "shared-memory group failed")
		return true
	}
	if ex.Reason == ReasonGroupReset {
		// Collateral of a reset: held in pending, backoff history kept,
		// started again once the new generation exists.
		pm.setStateEv(s, Pending, ev)
		pm.maybeFinishReset()
		return true
	}
	if ex.Crash {
		pm.beginReset(s)
		if pm.groupFailed {
			pm.setStateEv(s, Failed, ev)
			pm.escalate(s, "shared-memory group failed")
			return true
		}
	}
	return false
}
