package runtime

import (
	"log/slog"
	"slices"
	"time"

	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/internal/launch"
	"github.com/bgworker/bgworker/shmactor"
)

// Every change the postmaster makes is logged, counted and published in
// one place: transition for a worker's state, and the observer's methods
// for the rest. The postmaster's metrics follow from these calls and
// nothing else, and the metrics code never reads the postmaster's fields.
// Two counters are not the postmaster's: the bridge's traffic, read from
// the launcher, and undeliverable messages, counted where routing drops
// one (routing.go).

// observer turns the postmaster's changes into log lines, metrics and
// events.
type observer struct {
	rt    *Runtime
	m     *metrics
	clock launch.Clock
}

// transition moves a slot to a new state: the one event of that move, its
// log line and metrics, then the watchers and the waiters it settles. The
// slot's row is republished first: whoever hears of the change may look.
func (pm *postmaster) transition(s *slot, to WorkerState, ev WorkerEvent) {
	from := s.state
	s.state = to
	s.activity, s.actAt = "", time.Time{} // every state change clears it
	pm.publishRow(s)
	if from == Starting {
		pm.starting--
		if len(pm.queue) > 0 || pm.poolDeficit() > 0 {
			pm.scheduleTick() // a start slot is free again
		}
	}
	if to == Starting {
		pm.starting++
	}
	ev.Name, ev.Type, ev.Incarnation, ev.From, ev.To, ev.At = s.spec.Name, s.spec.TypeName(), s.inc, from, to, pm.clock.Now()
	ev.PID = s.pid()
	o := &pm.obs
	attrs := []slog.Attr{slog.String("worker", ev.Name), slog.String("from", from.String()), slog.String("to", to.String()), slog.Uint64("incarnation", ev.Incarnation)}
	if ev.PID != 0 {
		attrs = append(attrs, slog.Int("pid", ev.PID))
	}
	if ev.Exit != nil {
		attrs = append(attrs, slog.String("reason", ev.Exit.Reason), slog.Int("code", ev.Exit.Code))
	}
	if ev.Backoff > 0 {
		attrs = append(attrs, slog.Duration("backoff", ev.Backoff))
	}
	level := slog.LevelInfo
	if to == Crashed || to == Failed {
		level = slog.LevelWarn
	}
	o.rt.log.LogAttrs(nil, level, "runtime: worker state", attrs...)
	o.m.transition(s.label(), from, to, s.inc > 1, ev.Backoff)
	o.table(pm)
	o.rt.publish(ev)
	pm.notifyWatchers(s, ev)
	s.waiters = slices.DeleteFunc(s.waiters, func(w *waiter) bool { return pm.resolveWaiter(s, w, ev.Exit) })
}

// notifyWatchers sends ev to the slot's watchers (PostgreSQL's
// bgw_notify_pid).
func (pm *postmaster) notifyWatchers(s *slot, ev WorkerEvent) {
	for _, w := range s.watchers {
		pm.rt.system.Root.Send(w, ev)
	}
}

// registered counts a new slot in its first state.
func (o *observer) registered(pm *postmaster, s *slot) {
	o.m.transition(s.label(), 0, Registered, false, 0)
	o.m.known(s.label())
	o.table(pm)
}

// replaced takes a slot whose name a new dynamic worker took out of the
// per-state counts.
func (o *observer) replaced(old *slot) { o.m.leave(old.state) }

// table updates the table-wide gauges.
func (o *observer) table(pm *postmaster) { o.m.table(pm.liveSlots(), len(pm.queue)) }

func (o *observer) exited(s *slot, ex Exit) { o.m.exit(s.label(), ex) }

func (o *observer) ready(s *slot, took time.Duration) { o.m.ready(s.label(), took) }

func (o *observer) protocolError() { o.m.protocolErrors.Inc() }

func (o *observer) idleLost() { o.m.idleLost.Inc() }

func (o *observer) pool(pm *postmaster) {
	idle, starting := len(pm.pool.idle), len(pm.pool.starting)+pm.pool.spawns
	o.m.pool(idle, starting)
	o.rt.status.pool(idle, starting)
}

func (o *observer) phaseEntered(pm *postmaster, p phases.Phase, reset bool) {
	o.m.phase.Set(float64(p))
	if !reset {
		o.rt.log.Info("runtime: phase entered", "phase", p.String())
	}
	o.rt.publish(PhaseEvent{Phase: p, Reset: reset, At: pm.clock.Now()})
}

// adopted records what the new image of an in-place upgrade took over:
// the phase, the segment (nil without one), every slot's state, the
// carried counters and status, and the upgrade itself; the phase and the
// segment are published once, as adopted, for subscribers that start with
// this image.
func (o *observer) adopted(pm *postmaster, st *upgradeState, seg *shmactor.Segment) {
	o.m.restore(st.Counters)
	o.rt.status.resets.Store(uint64(counterValue(o.m.resets)))
	o.rt.status.groupFailed.Store(st.Group.Failed)
	o.m.phase.Set(float64(st.Phase))
	for _, s := range pm.slots {
		o.m.transition(s.label(), 0, s.state, false, 0)
		o.m.known(s.label())
	}
	o.m.upgrades.Inc()
	now := pm.clock.Now()
	o.rt.publish(PhaseEvent{Phase: st.Phase, Adopted: true, At: now})
	if seg != nil {
		o.m.segment(seg.Generation(), seg.Size())
		o.rt.publish(SegmentEvent{Generation: seg.Generation(), Size: seg.Size(), Adopted: true, At: now})
	}
}

func (o *observer) segmentBuilt(seg *shmactor.Segment, reset bool) {
	o.m.segment(seg.Generation(), seg.Size())
	o.rt.log.Info("runtime: shared memory segment built", "generation", seg.Generation(), "bytes", seg.Size(), "reset", reset)
	o.rt.publish(SegmentEvent{Generation: seg.Generation(), Size: seg.Size(), Reset: reset, At: o.clock.Now()})
}

func (o *observer) resetBegan(cause string, gen uint64) {
	o.m.resets.Inc()
	o.rt.status.resetBegun()
	o.rt.log.Warn("runtime: shared-memory worker crashed; resetting the shared-memory group", "worker", cause, "generation", gen)
	o.rt.publish(GroupResetEvent{Cause: cause, Generation: gen, At: o.clock.Now()})
}

// resetEnded: the reset under way ended without the group coming back
// (a shutdown began).
func (o *observer) resetEnded() { o.rt.status.resetting.Store(false) }

func (o *observer) resetDone(gen uint64, took time.Duration) {
	o.rt.status.resetting.Store(false)
	o.m.resetSeconds.Observe(took.Seconds())
	o.rt.log.Info("runtime: shared-memory group is back", "generation", gen, "took", took)
}

func (o *observer) groupFailed(cause string, gen uint64, err error) {
	o.rt.status.groupGivenUp()
	o.rt.log.Error("runtime: shared-memory group failed", "err", err, "worker", cause)
	o.rt.publish(GroupResetEvent{Cause: cause, Generation: gen, Failed: true, At: o.clock.Now()})
}

func (o *observer) shutdownBegan(mode phases.ShutdownMode) {
	o.rt.log.Info("runtime: shutdown", "mode", mode.String())
	o.rt.publish(ShutdownEvent{Mode: mode, At: o.clock.Now()})
}

func (o *observer) shutdownDone(mode phases.ShutdownMode) {
	o.rt.publish(ShutdownEvent{Mode: mode, Done: true, At: o.clock.Now()})
}
