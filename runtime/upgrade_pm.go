package runtime

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// The postmaster's side of an in-place upgrade: quieting it, taking its
// state, adopting an earlier image's state, and rolling the adopted
// workers onto the new code.

// upgradeMode is where the postmaster is in an upgrade.
type upgrade struct {
	quiet   chan error // an Upgrade waits for the postmaster to be quiet; nil = not upgrading
	rolling *roll      // a Roll under way; nil = none
	// held are the stops, reloads and shutdowns asked once the
	// postmaster is quiet and its children are being handed over: they
	// would act on those children. They are carried out when the upgrade
	// does not happen, and an Upgrade that finds any at its last check
	// before the exec calls itself off. One asked after that check, in the
	// moment of the exec itself, is lost with the old image.
	held []pmMsg
}

// handingOver reports whether an upgrade has found the postmaster quiet:
// its children are being handed to the next image.
func (pm *postmaster) handingOver() bool { return pm.up.quiet != nil && cap(pm.up.quiet) == 0 }

// hold keeps m for after the upgrade, if the children are being handed
// over and m is a stop, reload or shutdown; it reports whether it did.
// Before that (while the upgrade waits for quiet) they are carried out at
// once: a shutdown then calls the upgrade off (beginShutdown).
func (pm *postmaster) hold(m pmMsg) bool {
	if !pm.handingOver() {
		return false
	}
	switch m.(type) {
	case msgStop, msgReload, msgShutdown:
		pm.up.held = append(pm.up.held, m)
		return true
	}
	return false
}

// quiesce begins an upgrade: no start or refill from now on, the pool's
// children are killed (they would run the old binary), and the answer
// waits until nothing is under way.
func (pm *postmaster) quiesce(m msgUpgradeQuiesce) {
	if pm.shutdown != 0 {
		m.reply <- fmt.Errorf("%w: cannot upgrade", ErrShutdown)
		return
	}
	if pm.up.quiet != nil || pm.up.rolling != nil {
		m.reply <- fmt.Errorf("%w: an upgrade or a roll is under way", ErrUpgradeRefused)
		return
	}
	pm.up.quiet = m.reply
	pm.killIdle()
	pm.checkQuiet()
}

// upgrading reports whether starts are held for an upgrade.
func (pm *postmaster) upgrading() bool { return pm.up.quiet != nil }

// checkQuiet answers the waiting Upgrade once nothing is under way: no
// launch, no start, no stop, no reset, no pool child.
func (pm *postmaster) checkQuiet() {
	if pm.up.quiet == nil || cap(pm.up.quiet) == 0 {
		return
	}
	if len(pm.launching) > 0 || pm.starting > 0 || pm.group.resetting || pm.group.awaitUp ||
		len(pm.pool.idle) > 0 || len(pm.pool.starting) > 0 || pm.pool.spawns > 0 {
		return
	}
	for _, s := range pm.slots {
		if s.state == Stopping {
			return
		}
	}
	pm.up.quiet <- nil
	pm.up.quiet = make(chan error) // answered: still upgrading, nothing more to say
}

// resume ends an upgrade that did not happen, and carries out what was
// held meanwhile, in order.
func (pm *postmaster) resume() {
	held := pm.up.held
	pm.up.quiet, pm.up.held = nil, nil
	for _, m := range held {
		pm.handle(m)
	}
	pm.scheduleTick()
}

// finalSnapshot is the state handed to the next image, unless something
// was asked meanwhile that the upgrade must not swallow.
func (pm *postmaster) finalSnapshot() (*upgradeState, error) {
	switch {
	case pm.shutdown != 0:
		return nil, fmt.Errorf("%w: the runtime began shutting down", ErrUpgradeRefused)
	case len(pm.up.held) > 0:
		return nil, fmt.Errorf("%w: a stop, reload or shutdown was asked during the upgrade", ErrUpgradeRefused)
	}
	return pm.snapshot(true), nil
}

// snapshot is the postmaster's state for the next image. Without final it
// is a preview for the new binary's check: no descriptors.
func (pm *postmaster) snapshot(final bool) *upgradeState {
	st := &upgradeState{Format: stateFormat, Bridge: bridge.Version, Build: pm.rt.cfg.Version, Phase: pm.phase,
		NextGen: pm.nextGen, NextChild: pm.nextChild, LockFD: -1, HTTPFD: -1,
		Upgrades: uint64(counterValue(pm.rt.metrics.upgrades))}
	for _, s := range pm.slots {
		ss := slotState{Spec: describeSpec(s.spec), Code: s.code, Dynamic: s.dynamic, Gen: s.gen, State: s.state, Inc: s.inc,
			StopReq: s.stopReq, Backoff: s.backoff.State(), StartedAt: s.startedAt, Restarts: s.restarts,
			Exits: slices.Clone(s.exits), Activity: s.activity, ActAt: s.actAt}
		if s.state == Pending && s.timer != nil && s.timerKind == timerRestart {
			ss.NextStart = s.nextStart
		}
		if s.kid != nil {
			ss.Child, ss.Assigned, ss.SegGen = s.kid.c.ID(), s.kid.assigned, s.kid.segGen
		}
		st.Slots = append(st.Slots, ss)
	}
	g := &pm.group
	st.Group = groupState{Gen: g.gen, SegFD: -1, Failed: g.failed, Backoff: g.backoff.State()}
	if g.seg != nil {
		st.Group.Size, st.Group.Layout = g.seg.Size(), g.seg.Regions()
		if !final {
			st.Group.SegFD = 0 // the preview says there is one; the check needs no descriptor
		}
	}
	return st
}

// adopt carries on from an earlier image's state: the phase, every slot
// with its history, every child with its route, the segment, the
// counters; then the static workers the state lacks, and a pool of this
// binary's children.
func (pm *postmaster) adopt(m msgAdopt) {
	st, rt := m.st, pm.rt
	kids := map[uint64]launch.Child{}
	for _, c := range m.kids {
		kids[c.ID()] = c
	}
	pm.phase = st.Phase
	rt.phase.Store(uint32(st.Phase))
	pm.nextGen, pm.nextChild = st.NextGen, st.NextChild
	seg, err := adoptSegment(st.Group)
	if err != nil {
		m.reply <- fmt.Errorf("runtime: adopt the shared segment: %w", err)
		return
	}
	g := &pm.group
	g.gen, g.seg, g.failed = st.Group.Gen, seg, st.Group.Failed
	g.backoff = actors.RestoreBackoff(actors.Fixed(0), rt.cfg.GroupResetIntensity, st.Group.Backoff)
	if seg != nil {
		g.cur.Store(seg)
	}
	now := pm.clock.Now()
	var lost []*slot
	for _, ss := range st.Slots {
		sp, err := ss.Spec.spec(ss.Code)
		if err != nil {
			m.reply <- fmt.Errorf("%w: %v", ErrUpgradeRefused, err)
			return
		}
		s := &slot{spec: sp, code: ss.Code, dynamic: ss.Dynamic, gen: ss.Gen, order: len(pm.slots), state: ss.State,
			inc: ss.Inc, stopReq: ss.StopReq, backoff: actors.RestoreBackoff(sp.Restart, sp.Intensity, ss.Backoff),
			startedAt: ss.StartedAt, restarts: ss.Restarts, exits: ss.Exits, activity: ss.Activity, actAt: ss.ActAt}
		pm.slots = append(pm.slots, s)
		pm.byName[sp.Name] = s
		if ss.Child != 0 {
			c, ok := kids[ss.Child]
			if !ok {
				lost = append(lost, s) // exited across the exec: reported below
			} else {
				k := &kid{c: c, slot: s, inc: s.inc, assigned: ss.Assigned, segGen: ss.SegGen, adopted: true}
				pm.kids[c.ID()] = k
				s.kid = k
				if ss.SegGen != 0 {
					g.holders[ss.SegGen]++
				}
				if s.state == Running {
					s.route = &route{ep: c.Endpoint(), gen: s.gen}
					rt.routes.Store(sp.Name, s.route)
				}
			}
		}
		switch {
		case s.state == Pending && !ss.NextStart.IsZero():
			s.nextStart = ss.NextStart
			pm.armTimer(s, timerRestart, max(ss.NextStart.Sub(now), 0))
		case s.state == Pending:
			pm.queueSlot(s)
		}
		pm.publishRow(s)
	}
	pm.obs.adopted(pm, st, seg)
	for i, sp := range rt.static {
		if _, ok := pm.byName[sp.Name]; !ok {
			pm.add(sp, rt.staticCodes[i], false)
		}
	}
	table := slices.Clone(pm.slots)
	pm.table.Store(&table)
	for _, s := range pm.slots {
		if s.state == Registered && s.spec.StartPhase() <= pm.phase {
			pm.transition(s, Pending, WorkerEvent{})
			pm.queueSlot(s)
		}
	}
	for _, s := range lost {
		rt.log.Warn("runtime: a worker's child was gone after the upgrade", "worker", s.spec.Name)
		pm.afterExit(s, Exit{Reason: ReasonLost, Code: -1, At: now, Crash: true})
	}
	rt.log.Info("runtime: upgraded in place", "from", st.Build, "to", rt.cfg.Version, "workers", len(m.kids), "phase", pm.phase.String())
	pm.obs.table(pm)
	pm.scheduleTick() // the pool, of this binary's children, and any pending starts
	m.reply <- nil
}

// readopt takes back this image's own children after an upgrade that did
// not happen (Upgrade's reattach): the same children, served by a new
// launcher.
func (pm *postmaster) readopt(kids []launch.Child) {
	byID := map[uint64]launch.Child{}
	for _, c := range kids {
		byID[c.ID()] = c
	}
	for id, k := range pm.kids {
		c, ok := byID[id]
		if !ok {
			continue // exited meanwhile; its exit is reported by the new launcher, or was
		}
		k.c = c
		if s := k.slot; s != nil && s.kid == k && s.route != nil {
			s.route = &route{ep: c.Endpoint(), gen: s.gen}
			pm.rt.routes.Store(s.spec.Name, s.route)
		}
	}
}

// RollPolicy says how Roll restarts the workers onto the new code.
type RollPolicy struct {
	// Pause is the wait after one worker (or the shared-memory group) is
	// running again before the next is restarted. Zero = none.
	Pause time.Duration
}

// Roll restarts, one by one, every worker still running the code of an
// earlier image (after an in-place upgrade), so that each runs this
// binary's code: each is stopped (terminate notice, SIGTERM, its grace
// period) and started again at once, through the warm pool, which holds
// this binary's children, with no restart charged to its policy. The
// workers go in start-phase order, then registration order; the
// shared-memory workers go together, as one unit, on the same segment (a
// roll is not a crash: the segment is kept). Roll returns once every worker
// was rolled, or ctx's error; it is a no-op without such workers.
func (rt *Runtime) Roll(ctx context.Context, policy RollPolicy) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	rt.tell(msgRoll{policy: policy, reply: reply})
	err := rt.await(ctx, reply)
	if ctx.Err() != nil {
		rt.tell(msgFunc{fn: func(pm *postmaster) { pm.up.rolling = nil }})
	}
	return err
}

// roll is a Roll under way.
type roll struct {
	policy RollPolicy
	units  [][]*slot // what is rolled together, in order
	cur    []*slot   // the unit being rolled; nil = none
	reply  chan error
	pause  launch.Timer
}

func (pm *postmaster) startRoll(m msgRoll) {
	if pm.shutdown != 0 || pm.upgrading() || pm.up.rolling != nil {
		m.reply <- fmt.Errorf("runtime: roll: a shutdown, an upgrade or a roll is under way")
		return
	}
	old := func(s *slot) bool { return s.state == Running && s.kid != nil && s.kid.adopted }
	var units [][]*slot
	var shm []*slot
	for _, ph := range phases.All() {
		for _, s := range pm.slots {
			if s.spec.StartPhase() != ph || !old(s) {
				continue
			}
			if s.spec.SharedMemory {
				if len(shm) == 0 {
					units = append(units, nil) // the group's place in the order
				}
				shm = append(shm, s)
				continue
			}
			units = append(units, []*slot{s})
		}
	}
	for i, u := range units {
		if u == nil {
			units[i] = shm
		}
	}
	pm.up.rolling = &roll{policy: m.policy, units: units, reply: m.reply}
	pm.rollNext()
}

// rollNext stops the next unit, or ends the roll.
func (pm *postmaster) rollNext() {
	r := pm.up.rolling
	if r == nil {
		return
	}
	if len(r.units) == 0 {
		pm.up.rolling = nil
		pm.rt.log.Info("runtime: every worker runs this binary's code")
		r.reply <- nil
		return
	}
	r.cur, r.units = r.units[0], r.units[1:]
	for _, s := range r.cur {
		pm.rt.log.Info("runtime: rolling worker onto this binary's code", "worker", s.spec.Name)
		pm.terminate(s, ReasonRolled, s.spec.GracePeriod())
	}
}

// rolled reports whether s's exit is part of the roll under way.
func (pm *postmaster) rolled(s *slot) bool {
	r := pm.up.rolling
	return r != nil && slices.Contains(r.cur, s)
}

// checkRoll moves the roll on once its unit is running again on new
// children; a shared-memory unit is started again only once all its
// members are down.
func (pm *postmaster) checkRoll() {
	r := pm.up.rolling
	if r == nil || r.cur == nil || r.pause != nil {
		return
	}
	down := true
	for _, s := range r.cur {
		if s.state.Alive() && (s.kid == nil || s.kid.adopted) {
			down = false
		}
	}
	if down {
		for _, s := range r.cur {
			if s.state == Pending && s.timer == nil && !s.queued {
				pm.enqueue(s)
			}
		}
	}
	for _, s := range r.cur {
		if s.terminal() {
			continue // ended for good meanwhile: nothing to roll
		}
		if s.state != Running || s.kid == nil || s.kid.adopted {
			return
		}
	}
	r.cur = nil
	if r.policy.Pause > 0 {
		rt := pm.rt
		r.pause = pm.clock.AfterFunc(r.policy.Pause, func() {
			rt.tell(msgFunc{fn: func(pm *postmaster) {
				if pm.up.rolling == r {
					r.pause = nil
					pm.rollNext()
				}
			}})
		})
		return
	}
	pm.rollNext()
}
