package runtime

import (
	"errors"
	"os"
	"time"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// The server loop, after PostgreSQL's ServerLoop: each iteration starts at
// most Config.StartsPerIteration pending workers, then the postmaster
// yields to its mailbox, so status queries, registrations and shutdown
// are served between starts. At most Config.MaxStarting children start at
// once (a Go child's start is CPU-bound); while that many are starting and
// no idle child is left, the loop waits for a start to end (a slot leaving
// Starting, or an idle child joining the pool) rather than ticking.

// loopState is what an iteration's plan looks at.
type loopState struct {
	queued             int  // pending starts in the queue
	starting           int  // children starting now
	idle               int  // idle children in the pool
	poolDeficit        int  // idle children the pool lacks
	startsPerIteration int  // Config.StartsPerIteration
	maxStarting        int  // Config.MaxStarting
	shutdown           bool // no starts once a shutdown began
}

// loopPlan is what one iteration does.
type loopPlan struct {
	starts    int  // queued workers to take (each may still be skipped)
	refills   int  // idle children to launch
	throttled bool // the queue waits for a start slot to free
	again     bool // schedule another iteration
}

// planIteration decides one server-loop iteration: the starts it takes
// from the queue (a warm start takes an idle child and is not held back by
// MaxStarting), then the pool refills it can afford, and whether another
// iteration must follow (work left that is not waiting for a start slot).
// It is pure; serverLoop applies it.
func planIteration(st loopState) loopPlan {
	var p loopPlan
	if st.shutdown {
		return p
	}
	idle, starting := st.idle, st.starting
	for p.starts < st.queued && p.starts < st.startsPerIteration {
		if starting >= st.maxStarting && idle == 0 {
			p.throttled = true
			break
		}
		p.starts++
		starting++ // warm or cold, it is starting until ready
		if idle > 0 {
			idle--
		}
	}
	n := p.starts
	for n < st.startsPerIteration && p.refills < st.poolDeficit && st.starting == 0 && p.starts == 0 {
		p.refills++
		n++
	}
	p.again = st.queued > p.starts && !p.throttled || st.poolDeficit > p.refills && st.starting == 0 && p.starts == 0
	return p
}

// serverLoop is one iteration of the server loop.
func (pm *postmaster) serverLoop() {
	if pm.upgrading() {
		return // held: an upgrade takes the state as it is; the next image starts them
	}
	pm.pruneQueue()
	plan := planIteration(loopState{queued: len(pm.queue), starting: pm.starting, idle: len(pm.pool.idle),
		poolDeficit: pm.poolDeficit(), startsPerIteration: pm.rt.cfg.StartsPerIteration,
		maxStarting: pm.rt.cfg.MaxStarting, shutdown: pm.shutdown != 0})
	for range plan.starts {
		s := pm.queue[0]
		pm.queue = pm.queue[1:]
		s.queued = false
		pm.startSlot(s)
	}
	for range plan.refills {
		pm.spawnIdle()
	}
	if plan.again {
		pm.scheduleTick()
	}
	pm.obs.table(pm)
}

// pruneQueue drops from the queue every slot that cannot start now: no
// longer pending, waiting for its backoff, before its phase, or a
// shared-memory member held for the group's new generation (the reset
// queues it again when that generation exists; a backoff's timer, when it
// fires).
func (pm *postmaster) pruneQueue() {
	q := pm.queue[:0]
	for _, s := range pm.queue {
		if s.state != Pending || s.timer != nil || pm.shutdown != 0 || s.spec.StartPhase() > pm.phase ||
			s.spec.SharedMemory && pm.groupHeld() {
			s.queued = false
			continue
		}
		q = append(q, s)
	}
	clear(pm.queue[len(q):])
	pm.queue = q
}

// scheduleTick makes sure a server-loop iteration comes.
func (pm *postmaster) scheduleTick() {
	if !pm.tickQueued && pm.ctx != nil {
		pm.tickQueued = true
		pm.ctx.Send(pm.ctx.Self(), msgTick{})
	}
}

// enqueue queues s for the server loop and makes sure an iteration comes.
func (pm *postmaster) enqueue(s *slot) {
	pm.queueSlot(s)
	pm.scheduleTick()
}

// queueSlot appends s to the pending starts, once.
func (pm *postmaster) queueSlot(s *slot) {
	if !s.queued {
		s.queued = true
		pm.queue = append(pm.queue, s)
	}
}

// launch asks the launcher for a child for s's current incarnation (nil:
// an idle child for the pool).
func (pm *postmaster) launch(s *slot) {
	pm.nextChild++
	f, name := launchFor{s: s}, ""
	if s != nil {
		f.inc, name = s.inc, s.spec.Name
	}
	pm.launching[pm.nextChild] = f
	pm.launcher.Launch(pm.nextChild, name)
}

// startSlot starts s's next incarnation: on an idle child from the pool if
// there is one, on a new child otherwise.
func (pm *postmaster) startSlot(s *slot) {
	s.inc++
	if s.inc > 1 {
		s.restarts++
	}
	s.cause = ""
	s.startedAt = pm.clock.Now()
	s.nextStart = time.Time{}
	if k := pm.takeIdle(); k != nil {
		pm.transition(s, Starting, WorkerEvent{Cold: false})
		pm.assign(s, k)
		return
	}
	pm.transition(s, Starting, WorkerEvent{Cold: true})
	pm.launch(s)
}

// adoptChild records a child the launcher spawned.
func (pm *postmaster) adoptChild(c launch.Child) *kid {
	k := &kid{c: c}
	pm.kids[c.ID()] = k
	return k
}

func (pm *postmaster) spawned(m msgSpawned) {
	f, ok := pm.launching[m.id]
	if !ok {
		return
	}
	delete(pm.launching, m.id)
	s := f.s
	if s == nil {
		pm.poolSpawned(m.c, m.err)
		return
	}
	if m.err != nil {
		pm.rt.log.Error("runtime: could not start worker", "worker", s.spec.Name, "err", m.err)
		if s.inc == f.inc && (s.state == Starting || s.state == Stopping) {
			s.reload = false
			pm.afterExit(s, Exit{Reason: ReasonSpawnFailed, Code: -1, At: pm.clock.Now(), Crash: true, Stderr: m.err.Error()})
		}
		pm.maybeShutdownDone()
		return
	}
	k := pm.adoptChild(m.c)
	if s.inc != f.inc {
		k.slot, k.inc = s, f.inc
		k.cause = ReasonShutdown
		m.c.Kill()
		return
	}
	pm.assign(s, k)
}

// assign makes k the child of s and gives it its worker: a cold child
// right after its spawn, or an idle one taken from the warm pool.
func (pm *postmaster) assign(s *slot, k *kid) {
	k.slot, k.inc = s, s.inc
	k.assigned = pm.clock.Now() // the worker's uptime counts from here, not from the child's spawn
	s.kid = k
	pm.publishRow(s) // the pid, before any reply of this message
	// The start timeout counts from the moment the child exists, not from
	// the launch request, which may have a queue.
	if s.state == Starting && s.cause == "" {
		pm.armTimer(s, timerStartTimeout, s.spec.ReadyTimeout())
	}
	if s.state != Starting || pm.shutdown != 0 || s.cause != "" {
		// Stopped, timed out or shut down while the spawn was in flight:
		// the exit is reported against the slot like any other.
		if s.cause == "" {
			s.cause = ReasonShutdown
		}
		k.c.Kill()
		return
	}
	if err := k.c.Limit(s.spec.Limits); err != nil {
		s.cause = ReasonSpawnFailed
		pm.rt.log.Error("runtime: could not apply the worker's limits", "worker", s.spec.Name, "err", err)
		k.c.Kill()
		return
	}
	flags := uint8(0)
	if s.spec.Connect {
		flags |= bridge.FlagConnect
	}
	if s.spec.NotifyReady {
		flags |= bridge.FlagNotifyReady
	}
	a := bridge.Assign{Incarnation: s.inc, Flags: flags, Name: s.spec.Name, Code: s.code, Arg: s.spec.Arg}
	var segFile *os.File
	if s.spec.SharedMemory {
		f, err := pm.segmentFile()
		if err != nil {
			s.cause = ReasonSpawnFailed
			pm.rt.log.Error("runtime: no segment for shared-memory worker", "worker", s.spec.Name, "err", err)
			k.c.Kill()
			return
		}
		a.Flags |= bridge.FlagSharedMemory
		a.Segment = pm.group.gen
		segFile = f
		k.segFile, k.segGen = f, a.Segment
		pm.group.holders[a.Segment]++
	}
	if err := k.c.Assign(a, segFile); err != nil {
		if bridge.PeerGone(err) {
			// The child died, or is dying, before it could read its
			// assignment (an idle child killed the moment before): its
			// exit, on its way, says how, and the start timeout bounds the
			// wait.
			return
		}
		s.cause = ReasonSpawnFailed
		pm.rt.log.Error("runtime: could not hand the child its worker", "worker", s.spec.Name, "pid", k.c.PID(), "err", err)
		k.c.Kill()
		return
	}
	if s.reload {
		s.reload = false
		_ = k.c.Reload() // asked while the child was being spawned
	}
}

func (pm *postmaster) ready(k *kid) {
	s := k.slot
	if s == nil || s.kid != k || s.state != Starting {
		return
	}
	pm.stopTimer(s)
	s.route = &route{ep: k.c.Endpoint(), gen: s.gen}
	pm.rt.routes.Store(s.spec.Name, s.route)
	pm.obs.ready(s, pm.clock.Now().Sub(s.startedAt))
	pm.transition(s, Running, WorkerEvent{})
	if s.spec.SharedMemory {
		pm.checkGroupUp()
	}
}

// fault handles a child that broke the protocol or fell silent: it is
// killed, and its exit is recorded with the reason.
func (pm *postmaster) fault(k *kid, err error) {
	s := k.slot
	cause := ReasonProtocol
	if errors.Is(err, launch.ErrSilent) {
		cause = ReasonHeartbeat
	}
	if errors.Is(err, bridge.ErrProtocol) {
		pm.obs.protocolError()
	}
	name := ""
	if s != nil {
		name = s.spec.Name
		if s.kid == k && s.state == Stopping {
			// Asked to stop: its socket closing is expected. It exits by
			// itself or at the end of its grace period.
			return
		}
		if s.kid == k && s.cause == "" {
			s.cause = cause
		}
	}
	if k.cause == "" {
		k.cause = cause
	}
	if s == nil && pm.pool.drop(k) {
		// A pool child condemned is out of the pool now, not at its exit:
		// no worker may be handed to it meanwhile.
		pm.obs.pool(pm)
		pm.scheduleTick()
	}
	pm.rt.log.Warn("runtime: killing child", "worker", name, "pid", k.c.PID(), "reason", cause, "err", err)
	k.c.Kill()
}
