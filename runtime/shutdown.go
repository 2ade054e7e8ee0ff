package runtime

import (
	"fmt"
	"time"

	"github.com/bgworker/bgworker/phases"
)

// Stopping workers, one at a time or all at shutdown. One path stops a
// child whatever the reason (a stop request, a shutdown, an all-for-one
// reset): the terminate notice and SIGTERM, then SIGKILL when the grace
// period ends. Shutdown follows PostgreSQL's modes: no worker starts or
// restarts once it begins; smart waits for the workers to finish, fast
// stops them (the latest start phase first, each phase's workers
// together), immediate kills every child at once.

// terminate asks s's child to stop, recording cause as why ("" for a
// requested stop), and arms its kill after grace. A smart shutdown sets no
// deadline: the worker may take as long as it needs; an immediate one
// kills the child at once, however it was being stopped. A start whose
// spawn is still in flight is stopped when the spawn arrives.
func (pm *postmaster) terminate(s *slot, cause string, grace time.Duration) {
	if !s.state.Alive() {
		return
	}
	if s.state == Stopping {
		// Already being stopped: a reset's cause and its shorter deadline
		// take over from a requested stop; an immediate shutdown kills.
		if cause != "" && s.cause == "" {
			s.cause = cause
			if s.kid != nil && pm.shutdown != phases.Immediate {
				pm.armTimer(s, timerGrace, grace)
			}
		}
		if pm.shutdown == phases.Immediate && s.kid != nil {
			pm.stopTimer(s)
			s.kid.c.Kill()
		}
		return
	}
	if cause != "" {
		s.cause = cause
	}
	if s.kid == nil {
		// Spawn in flight: it is killed when it arrives (assign).
		pm.stopTimer(s)
		pm.transition(s, Stopping, WorkerEvent{})
		return
	}
	if pm.shutdown == phases.Immediate {
		pm.transition(s, Stopping, WorkerEvent{})
		s.kid.c.Kill()
		return
	}
	smart := pm.shutdown == phases.Smart && cause != ReasonGroupReset
	deadline := pm.clock.Now().Add(grace)
	if smart {
		deadline = time.Time{}
	}
	pm.transition(s, Stopping, WorkerEvent{})
	s.kid.c.Terminate(deadline)
	if !smart {
		pm.armTimer(s, timerGrace, grace)
	}
}

// beginShutdown starts or hardens a shutdown.
func (pm *postmaster) beginShutdown(mode phases.ShutdownMode, cause error) {
	if pm.shutdownDone {
		return // every child is reaped; a harder mode changes nothing
	}
	if cause != nil && pm.cause == nil {
		pm.cause = cause
	}
	if mode <= pm.shutdown {
		pm.maybeShutdownDone()
		return
	}
	pm.shutdown = mode
	if pm.up.quiet != nil && !pm.handingOver() {
		// An upgrade waits for quiet: it is called off, not waited for.
		pm.up.quiet <- fmt.Errorf("%w: the runtime began shutting down", ErrUpgradeRefused)
		pm.up.quiet = make(chan error)
	}
	pm.obs.shutdownBegan(mode)
	pm.queue = nil
	pm.killIdle()
	for _, s := range pm.slots {
		if !s.state.Alive() && !s.terminal() {
			pm.stopTimer(s)
			s.queued = false
			s.nextStart = time.Time{}
			pm.transition(s, Stopped, WorkerEvent{})
		}
	}
	if mode == phases.Immediate {
		for _, s := range pm.slots {
			pm.terminate(s, ReasonShutdown, 0)
		}
		for _, k := range pm.kids {
			k.c.Kill() // and every child that serves no slot
		}
	}
	pm.advanceShutdown()
	pm.maybeShutdownDone()
}

// advanceShutdown, in a fast or smart shutdown, stops the workers of the
// latest start phase that still has live workers: stop order is the
// reverse of phase order, and the workers of one phase stop together.
func (pm *postmaster) advanceShutdown() {
	if pm.shutdown != phases.Fast && pm.shutdown != phases.Smart {
		return
	}
	for _, ph := range phases.Reverse() {
		any := false
		for i := len(pm.slots) - 1; i >= 0; i-- {
			s := pm.slots[i]
			if s.spec.StartPhase() == ph && s.state.Alive() {
				any = true
				switch {
				case s.state != Stopping:
					pm.terminate(s, "", s.spec.GracePeriod())
				case pm.shutdown == phases.Fast && s.timer == nil && s.kid != nil:
					pm.armTimer(s, timerGrace, s.spec.GracePeriod()) // smart turned fast
				}
			}
		}
		if any {
			return
		}
	}
}

// maybeShutdownDone ends the shutdown once no child is left.
func (pm *postmaster) maybeShutdownDone() {
	if pm.shutdown == 0 || pm.shutdownDone || len(pm.launching) > 0 || len(pm.kids) > 0 {
		return
	}
	for _, s := range pm.slots {
		if s.state.Alive() {
			return
		}
	}
	pm.shutdownDone = true
	pm.obs.shutdownDone(pm.shutdown)
	pm.rt.finishShutdown(pm.rows(), pm.cause)
}
