package runtime

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// postmaster is the root actor: it owns the worker table, the phase, the
// warm pool, the shared-memory group and the shutdown state. Nothing else
// mutates them; everything else reports to it by message (messages.go).
// It decides (decide.go) and does through the launcher (launch.Launcher):
// it never blocks on a child.
//
// Where each concern lives: the server loop and starts in serverloop.go,
// what follows an exit in exits.go, the all-for-one group in shmgroup.go,
// the warm pool in pool.go, stopping and shutdown in shutdown.go, and the
// one place every state change is logged, counted and published in
// observer.go.
type postmaster struct {
	rt       *Runtime
	clock    launch.Clock
	rand     func() float64  // the restart jitter's random numbers
	launcher launch.Launcher // set by Start
	obs      observer

	slots   []*slot
	table   atomic.Pointer[[]*slot] // copy of slots for Workers(), replaced when a row is added or replaced
	byName  map[string]*slot
	nextGen uint64
	phase   phases.Phase

	queue      []*slot              // pending starts, FIFO
	tickQueued bool                 // a server-loop iteration is in the mailbox
	ticks      atomic.Uint64        // server-loop iterations run, for tests: a throttled loop must not spin
	nextChild  uint64               // ids of launched children
	launching  map[uint64]launchFor // launches not yet answered
	starting   int                  // slots in Starting: spawned or assigned, not yet ready
	kids       map[uint64]*kid      // children spawned and not yet exited, by id

	pool  warmPool
	group shmGroup
	up    upgrade // an in-place upgrade or a roll under way

	shutdown     phases.ShutdownMode // zero = none begun
	shutdownDone bool
	cause        error // why the runtime shut itself down, if it did
	ctx          actor.Context
}

// launchFor is whom a launch is for: a slot's incarnation, or the pool.
type launchFor struct {
	s   *slot // nil: an idle child for the pool
	inc uint64
}

func newPostmaster(rt *Runtime, specs []actors.Spec, codes []string, clock launch.Clock) *postmaster {
	pm := &postmaster{rt: rt, clock: clock, byName: map[string]*slot{},
		launching: map[uint64]launchFor{}, kids: map[uint64]*kid{}}
	pm.obs = observer{rt: rt, m: rt.metrics, clock: clock}
	pm.pool.target = rt.cfg.WarmPool
	pm.group.holders = map[uint64]int{}
	pm.group.keepRetired = RetiredSegmentsMapped
	pm.group.backoff = actors.NewBackoff(actors.Fixed(0), rt.cfg.GroupResetIntensity)
	for i, sp := range specs {
		pm.add(sp, codes[i], false)
	}
	return pm
}

func (pm *postmaster) add(sp actors.Spec, code string, dynamic bool) *slot {
	pm.nextGen++
	s := &slot{spec: sp, code: code, dynamic: dynamic, gen: pm.nextGen, state: Registered,
		backoff: actors.NewBackoff(sp.Restart, sp.Intensity)}
	if old, ok := pm.byName[sp.Name]; ok {
		// A dynamic worker reusing the name of one that ended: the old row
		// leaves the table and the per-state counts.
		s.order = old.order
		pm.slots[old.order] = s
		pm.obs.replaced(old)
	} else {
		s.order = len(pm.slots)
		pm.slots = append(pm.slots, s)
	}
	pm.byName[sp.Name] = s
	pm.obs.registered(pm, s)
	pm.publishRow(s)
	table := slices.Clone(pm.slots)
	pm.table.Store(&table)
	return s
}

// Receive handles one message. It never blocks: spawning, reading and
// reaping happen in the launcher and come back as messages.
func (pm *postmaster) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case pmMsg:
		pm.ctx = ctx
		pm.handle(m)
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		pm.rt.log.Warn("runtime: postmaster got an unknown message", "type", fmt.Sprintf("%T", m))
	}
}

func (pm *postmaster) handle(m pmMsg) {
	if pm.hold(m) {
		return
	}
	switch m := m.(type) {
	case msgTick:
		pm.tickQueued = false
		pm.pool.retry = nil
		pm.ticks.Add(1)
		pm.serverLoop()
	case msgStart:
		pm.enter(phases.PostmasterStart)
		pm.scheduleTick() // fills the warm pool
		m.reply <- nil
	case msgAdvance:
		m.reply <- pm.advance(m.phase)
	case msgStartWorker:
		m.reply <- pm.startWorker(m.spec, m.code, m.watcher)
	case msgStop:
		m.reply <- pm.stop(m.name, m.gen)
	case msgPing:
		close(m.reply)
	case msgWait:
		pm.wait(m)
	case msgUnwait:
		if s, ok := pm.byName[m.name]; ok {
			s.waiters = slices.DeleteFunc(s.waiters, func(w *waiter) bool { return w.reply == m.reply })
		}
	case msgWatch:
		s, err := pm.lookup(m.name, m.gen)
		if err == nil {
			s.watchers = append(s.watchers, m.pid)
		}
		m.reply <- err
	case msgReload:
		m.reply <- pm.reload()
	case msgShutdown:
		pm.beginShutdown(m.mode, m.cause)
	case msgFunc:
		m.fn(pm)
	case msgUpgradeQuiesce:
		pm.quiesce(m)
	case msgUpgradeResume:
		pm.resume()
	case msgAdopt:
		pm.adopt(m)
	case msgRoll:
		pm.startRoll(m)
	case msgTimer:
		pm.timer(m)
	case msgSpawned:
		pm.spawned(m)
	case msgIdle:
		if k := pm.kids[m.c.ID()]; k != nil {
			pm.idle(k)
		}
	case msgReady:
		if k := pm.kids[m.c.ID()]; k != nil {
			pm.ready(k)
		}
	case msgActivity:
		if k := pm.kids[m.c.ID()]; k != nil && k.slot != nil && k.slot.kid == k && k.slot.state == Running {
			k.slot.activity, k.slot.actAt = m.text, m.at
			pm.publishRow(k.slot)
		}
	case msgFault:
		if k := pm.kids[m.c.ID()]; k != nil {
			pm.fault(k, m.err)
		}
	case msgExited:
		if k := pm.kids[m.c.ID()]; k != nil {
			pm.exited(k, m.e)
		}
	}
	pm.checkQuiet()
	pm.checkRoll()
}

func (pm *postmaster) enter(p phases.Phase) {
	pm.phase = p
	pm.rt.phase.Store(uint32(p))
	pm.obs.phaseEntered(pm, p, false)
	if p == phases.ConsistentState && pm.group.enabled && pm.group.seg == nil {
		if err := pm.buildSegment(false); err != nil {
			pm.rt.log.Error("runtime: could not build shared memory", "err", err)
			pm.failGroup(nil, err)
		}
	}
	for _, s := range pm.slots {
		if s.state == Registered && s.spec.StartPhase() <= p {
			pm.transition(s, Pending, WorkerEvent{})
			pm.enqueue(s)
		}
	}
}

func (pm *postmaster) advance(p phases.Phase) error {
	switch {
	case !p.Valid():
		return fmt.Errorf("%w: unknown phase %d", ErrPhase, uint8(p))
	case pm.shutdown != 0:
		return fmt.Errorf("%w: cannot advance to %v", ErrShutdown, p)
	case p < pm.phase && pm.rt.adopt != nil:
		return nil // a host's main after an upgrade walks the phases again: they are entered already
	case p < pm.phase:
		return fmt.Errorf("%w: %v is behind the current phase %v", ErrPhase, p, pm.phase)
	}
	for next := pm.phase + 1; next <= p; next++ {
		pm.enter(next)
	}
	return nil
}

func (pm *postmaster) lookup(name string, gen uint64) (*slot, error) {
	s, ok := pm.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownWorker, name)
	}
	if gen != 0 && s.gen != gen {
		return nil, fmt.Errorf("%w: %q", ErrStaleHandle, name)
	}
	return s, nil
}

// liveSlots counts the workers that are not stopped or failed: what
// MaxWorkers caps.
func (pm *postmaster) liveSlots() int {
	n := 0
	for _, s := range pm.slots {
		if !s.terminal() {
			n++
		}
	}
	return n
}

func (pm *postmaster) startWorker(sp actors.Spec, code string, watcher *actor.PID) startReply {
	if pm.shutdown != 0 {
		return startReply{err: fmt.Errorf("%w: cannot start %q", ErrShutdown, sp.Name)}
	}
	if old, ok := pm.byName[sp.Name]; ok && !old.terminal() {
		return startReply{err: fmt.Errorf("%w: %q is %v", ErrDuplicateWorker, sp.Name, old.state)}
	}
	if n := pm.liveSlots(); n >= pm.rt.cfg.MaxWorkers {
		return startReply{err: fmt.Errorf("%w: %d of %d slots in use; %q not started", ErrTooManyWorkers, n, pm.rt.cfg.MaxWorkers, sp.Name)}
	}
	s := pm.add(sp, code, true)
	if watcher != nil {
		s.watchers = append(s.watchers, watcher)
		pm.notifyWatchers(s, WorkerEvent{Name: s.spec.Name, Type: s.spec.TypeName(), To: Registered, At: pm.clock.Now()})
	}
	pm.rt.log.Info("runtime: dynamic worker registered", "worker", sp.Name, "type", sp.TypeName())
	if sp.StartPhase() <= pm.phase {
		pm.transition(s, Pending, WorkerEvent{})
		pm.queueSlot(s)
		if !pm.tickQueued {
			// The server loop is idle: run its iteration now rather than
			// after one more pass through the mailbox. Otherwise the
			// queued iteration will see it.
			pm.serverLoop()
		}
	}
	return startReply{gen: s.gen}
}

// stop asks one worker to stop for good: SIGTERM and the terminate notice,
// SIGKILL after its grace period. A worker waiting to start is stopped at
// once.
func (pm *postmaster) stop(name string, gen uint64) error {
	s, err := pm.lookup(name, gen)
	if err != nil {
		return err
	}
	s.stopReq = true
	switch {
	case s.state.Alive():
		pm.terminate(s, "", s.spec.GracePeriod())
	case !s.terminal():
		pm.stopTimer(s)
		s.nextStart = time.Time{}
		pm.transition(s, Stopped, WorkerEvent{})
	}
	return nil
}

// reload tells every running worker to reload its configuration, and
// every starting one: a worker still in its setup (NotifyReady) must not
// miss a reload it would have read after it. The notice follows the
// assignment on the same stream; a start whose child is still being
// spawned is told once the child is assigned.
func (pm *postmaster) reload() int {
	n := 0
	for _, s := range pm.slots {
		switch {
		case (s.state == Running || s.state == Starting) && s.kid != nil:
			if err := s.kid.c.Reload(); err == nil {
				n++
			}
		case s.state == Starting:
			s.reload = true
			n++
		}
	}
	pm.rt.log.Info("runtime: reload", "workers", n)
	return n
}

// escalate shuts the runtime down when a critical worker is lost for good;
// ex is the exit that lost it (nil when it was not running), carried by
// the runtime's Err as an *ExitError.
func (pm *postmaster) escalate(s *slot, why string, ex *Exit) {
	if !s.spec.Critical {
		return
	}
	err := exitError(fmt.Errorf("%w: %q: %s", ErrCriticalWorker, s.spec.Name, why), ex)
	pm.rt.log.Error("runtime: critical worker lost; shutting down", "worker", s.spec.Name, "err", err)
	pm.beginShutdown(phases.Fast, err)
}

func (pm *postmaster) timer(m msgTimer) {
	s := m.s
	if s.timer == nil || s.timerKind != m.kind || s.inc != m.inc {
		return // stale: cancelled or superseded
	}
	s.timer = nil
	switch m.kind {
	case timerRestart:
		if s.state == Pending && pm.shutdown == 0 {
			pm.enqueue(s)
		}
	case timerStartTimeout:
		if s.state == Starting {
			s.cause = ReasonStartTimeout
			pm.rt.log.Warn("runtime: worker did not report ready in time; killing it", "worker", s.spec.Name, "timeout", s.spec.ReadyTimeout())
			if s.kid != nil {
				s.kid.c.Kill()
			} // else: killed when the spawn arrives
		}
	case timerGrace:
		if s.state == Stopping && s.kid != nil {
			if s.cause != ReasonGroupReset && s.cause != ReasonRolled {
				s.cause = ReasonKilled
			}
			pm.rt.log.Warn("runtime: worker did not stop within its grace period; killing it", "worker", s.spec.Name)
			s.kid.c.Kill()
		}
	}
}

func (pm *postmaster) wait(m msgWait) {
	s, err := pm.lookup(m.name, m.gen)
	if err != nil {
		m.reply <- waitReply{err: err}
		return
	}
	w := &waiter{gen: s.gen, started: m.started, reply: m.reply}
	if !pm.resolveWaiter(s, w, nil) {
		s.waiters = append(s.waiters, w)
	}
}

// resolveWaiter answers w if the slot's state settles it.
func (pm *postmaster) resolveWaiter(s *slot, w *waiter, ex *Exit) bool {
	var r waitReply
	switch {
	case w.started && s.state == Running:
		r.pid = s.pid()
	case w.started && (s.state == Stopped || s.state == Stopping) && s.stopReq:
		r.err = exitError(fmt.Errorf("%w: %q", ErrStoppedBeforeStart, s.spec.Name), ex)
		r.exit = ex
	case w.started && pm.shutdown != 0:
		r.err = fmt.Errorf("%w: %q not started", ErrShutdown, s.spec.Name)
	case w.started && ex != nil:
		r.err = exitError(fmt.Errorf("%w: %q", ErrStartFailed, s.spec.Name), ex)
		r.exit = ex
	case w.started && s.terminal():
		r.err = exitError(fmt.Errorf("%w: %q is %v", ErrStartFailed, s.spec.Name, s.state), s.lastExit())
	case !w.started && s.terminal():
		r.exit = s.lastExit()
	default:
		return false
	}
	w.reply <- r
	return true
}

// published finds, in the table Workers reads, the slot of name with
// handle generation gen (any generation when gen is zero), without asking
// the postmaster: for the calls that must not wait for it.
func (pm *postmaster) published(name string, gen uint64) (*slot, error) {
	t := pm.table.Load()
	if t == nil {
		return nil, ErrNotStarted
	}
	for _, s := range *t {
		if s.spec.Name == name {
			if gen != 0 && s.gen != gen {
				return nil, fmt.Errorf("%w: %q", ErrStaleHandle, name)
			}
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownWorker, name)
}
