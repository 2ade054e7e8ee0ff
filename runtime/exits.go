package runtime

import (
	"slices"

	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// What the postmaster does when a child has exited: it classifies the exit
// (decide.go: classify), records it against the slot the child served,
// asks the group to reset if a shared-memory member crashed, decides what
// follows (decide.go: decideExit) and applies it.

// exited handles the report that a child is gone and reaped.
func (pm *postmaster) exited(k *kid, e launch.Exit) {
	delete(pm.kids, k.c.ID())
	if k.segFile != nil {
		k.segFile.Close()
		pm.group.holders[k.segGen]--
		pm.maybeRetire(k.segGen)
	}
	s := k.slot
	if s == nil {
		pm.idleExited(k, e)
		pm.maybeShutdownDone()
		return
	}
	if s.kid != k {
		pm.maybeShutdownDone()
		pm.advanceShutdown()
		return
	}
	s.kid, s.reload = nil, false
	pm.publishRow(s)
	if s.route != nil {
		pm.rt.routes.CompareAndDelete(s.spec.Name, s.route)
		s.route = nil
	}
	ex := classify(exitCause{status: e.Status, goodbye: e.Goodbye, cause: s.cause, shm: s.spec.SharedMemory, oom: e.OOM})
	ex.At, ex.PID = e.At, k.c.PID()
	ex.Uptime = e.At.Sub(k.assigned)
	if ex.Crash || ex.Code > 0 {
		ex.Stderr = e.Tail
	}
	pm.afterExit(s, ex)
	pm.advanceShutdown()
	pm.maybeShutdownDone()
}

// afterExit applies the exit contract and the restart policy to a slot whose
// child just ended (or failed to spawn).
func (pm *postmaster) afterExit(s *slot, ex Exit) {
	pm.stopTimer(s)
	s.exits = append(s.exits, ex)
	if len(s.exits) > exitHistory {
		s.exits = slices.Delete(s.exits, 0, len(s.exits)-exitHistory)
	}
	pm.obs.exited(s, ex)
	sit := exitSituation{stopping: s.state == Stopping, stopReq: s.stopReq, shutdown: pm.shutdown != 0,
		shm: s.spec.SharedMemory, groupFailed: pm.group.failed, critical: s.spec.Critical, rolled: pm.rolled(s)}
	if sit.shm && ex.Crash && !sit.shutdown && !sit.stopReq && ex.Reason != ReasonGroupReset {
		sit.groupFailed = !pm.beginReset(s)
	}
	d := decideExit(ex, sit, s.backoff, ex.At, pm.rand())
	ev := WorkerEvent{Exit: &ex}
	if d.crashed {
		pm.transition(s, Crashed, ev)
		ev = WorkerEvent{}
	}
	switch d.to {
	case Pending:
		s.nextStart = pm.clock.Now().Add(d.delay)
		ev.Backoff = d.delay
		pm.transition(s, Pending, ev)
		if d.delay > 0 || !d.hold {
			pm.armTimer(s, timerRestart, d.delay)
		}
	case Crashed:
		// Already there; not restarted.
	default:
		pm.transition(s, d.to, ev)
	}
	if d.why != "" {
		pm.rt.log.Info("runtime: worker not restarted", "worker", s.spec.Name, "why", d.why)
	}
	if d.escalate != "" {
		pm.escalate(s, d.escalate, &ex)
	}
	if sit.shm {
		pm.maybeFinishReset()
	}
}
