package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/shmactor"
)

// pmMsg is the closed set of messages the postmaster handles.
type pmMsg interface{ pmMsg() }

type (
	msgTick    struct{}
	msgStart   struct{ reply chan error }
	msgAdvance struct {
		phase phases.Phase
		reply chan error
	}
	msgStartWorker struct {
		spec  actors.Spec
		code  string
		reply chan startReply
	}
	msgStop struct {
		name  string
		gen   uint64 // 0: whatever generation is current
		reply chan error
	}
	msgStatus struct{ reply chan []WorkerInfo }
	msgWait   struct {
		name    string
		gen     uint64
		started bool // wait for running (else for a terminal state)
		reply   chan waitReply
	}
	msgWatch struct {
		name  string
		gen   uint64
		pid   *actor.PID
		reply chan error
	}
	msgShutdown struct {
		mode  phases.ShutdownMode
		cause error
	}
	msgSpawned struct {
		s   *slot
		inc uint64
		p   *proc
		err error
	}
	msgProcIdle  struct{ p *proc }
	msgProcReady struct{ p *proc }
	msgProcFault struct {
		p   *proc
		err error
	}
	msgProcExited struct {
		p       *proc
		status  syscall.WaitStatus
		goodbye int
		readErr error
		at      time.Time
	}
	msgTimer struct {
		s    *slot
		inc  uint64
		kind timerKind
	}
)

func (msgTick) pmMsg()        {}
func (msgStart) pmMsg()       {}
func (msgAdvance) pmMsg()     {}
func (msgStartWorker) pmMsg() {}
func (msgStop) pmMsg()        {}
func (msgStatus) pmMsg()      {}
func (msgWait) pmMsg()        {}
func (msgWatch) pmMsg()       {}
func (msgShutdown) pmMsg()    {}
func (msgSpawned) pmMsg()     {}
func (msgProcIdle) pmMsg()    {}
func (msgProcReady) pmMsg()   {}
func (msgProcFault) pmMsg()   {}
func (msgProcExited) pmMsg()  {}
func (msgTimer) pmMsg()       {}

type timerKind uint8

const (
	timerRestart timerKind = iota + 1
	timerStartTimeout
	timerGrace
)

type startReply struct {
	gen uint64
	err error
}

type waitReply struct {
	pid  int
	exit *Exit
	err  error
}

type waiter struct {
	gen     uint64
	started bool
	reply   chan waitReply
}

const exitHistory = 8

// slot is one worker's entry in the postmaster's table. Only the
// postmaster touches it, while it handles a message (row excepted).
type slot struct {
	spec    actors.Spec
	code    string // registered name of the code the child runs
	dynamic bool
	gen     uint64 // handle generation: unique per StartWorker / registration
	order   int    // position in the table

	state     WorkerState
	inc       uint64 // incarnations started
	proc      *proc
	cause     string // why the postmaster is ending the current process, if it is
	stopReq   bool   // stop requested: no restart
	backoff   *actors.Backoff
	timer     *time.Timer
	timerKind timerKind
	nextStart time.Time
	queued    bool
	startedAt time.Time
	readyAt   time.Time
	restarts  int
	exits     []Exit
	waiters   []*waiter
	watchers  []*actor.PID
	route     *route // published in Runtime.routes while running

	// row is what Workers() reads without asking the postmaster: an
	// immutable WorkerInfo, replaced whenever the slot changes.
	row atomic.Pointer[WorkerInfo]
}

func (s *slot) terminal() bool {
	return s.state == Stopped || s.state == Failed || (s.state == Crashed && s.timer == nil && !s.queued)
}

// postmaster is the root actor: it owns the worker table, the phase and
// the shutdown state. Nothing else mutates them; everything else reports to
// it by message.
type postmaster struct {
	rt       *Runtime
	slots    []*slot
	table    atomic.Pointer[[]*slot] // copy of slots for Workers(), replaced when a row is added or replaced
	byName   map[string]*slot
	nextGen  uint64
	nextProc uint64
	phase    phases.Phase
	started  bool

	queue        []*slot // pending starts, FIFO
	tickQueued   bool
	ticks        atomic.Uint64 // server-loop iterations run, for tests: a throttled loop must not spin
	spawning     int           // spawn requests not yet answered
	starting     int           // slots in Starting: spawned or assigned, not yet ready
	pool         []*proc       // idle children, handshaken, waiting for a worker
	poolStarting []*proc       // idle children spawned, not yet idle
	poolSpawns   int           // idle-child spawns in flight
	poolTimer    *time.Timer
	live         int // processes spawned and not yet reaped
	shutdown     phases.ShutdownMode
	shutdownDone bool
	cause        error
	ctx          actor.Context // the postmaster's context, valid inside Receive

	// The shared-memory group.
	seg          *shmactor.Segment
	segGen       uint64
	oldSegs      []*shmactor.Segment // mapped until shutdown: host code may hold them
	resetting    bool                // a reset is waiting for members to be reaped
	awaitGroup   bool                // a reset is waiting for members to run again
	resetStart   time.Time
	groupBackoff *actors.Backoff // counts resets against GroupResetIntensity
	groupFailed  bool
}

func newPostmaster(rt *Runtime, specs []actors.Spec, codes []string) *postmaster {
	pm := &postmaster{rt: rt, byName: map[string]*slot{},
		groupBackoff: actors.NewBackoff(actors.Fixed(0), rt.cfg.GroupResetIntensity)}
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
		pm.rt.metrics.workers.WithLabelValues(old.state.String()).Dec()
	} else {
		s.order = len(pm.slots)
		pm.slots = append(pm.slots, s)
	}
	pm.byName[sp.Name] = s
	pm.rt.metrics.observeState(s, 0, Registered)
	pm.publishRow(s)
	table := slices.Clone(pm.slots)
	pm.table.Store(&table)
	return s
}

// publishRow rebuilds the row Workers() reads for s. Every change to a
// field of the row is followed, in the same message, by publishRow: in
// setStateEv for most, directly for the pid (adopt, exited).
func (pm *postmaster) publishRow(s *slot) {
	wi := s.info()
	s.row.Store(&wi)
}

// rows returns the published rows, in table order: each row is
// consistent, and every change a caller has been told of (an event, a
// WaitStarted or WaitStopped answer) is in it.
func (pm *postmaster) rows() []WorkerInfo {
	t := pm.table.Load()
	if t == nil {
		return nil
	}
	out := make([]WorkerInfo, 0, len(*t))
	for _, s := range *t {
		wi := *s.row.Load()
		wi.Exits = slices.Clone(wi.Exits)
		if wi.LastExit != nil {
			e := *wi.LastExit
			wi.LastExit = &e
		}
		out = append(out, wi)
	}
	return out
}

// Receive handles one message. It never blocks: spawning, reading and
// reaping happen elsewhere and come back as messages.
func (pm *postmaster) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case pmMsg:
		pm.ctx = ctx
		pm.handle(ctx, m)
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		pm.rt.log.Warn("runtime: postmaster got an unknown message", "type", fmt.Sprintf("%T", m))
	}
}

func (pm *postmaster) handle(ctx actor.Context, m pmMsg) {
	switch m := m.(type) {
	case msgTick:
		pm.tickQueued = false
		pm.poolTimer = nil
		pm.ticks.Add(1)
		pm.serverLoop(ctx)
	case msgStart:
		pm.started = true
		pm.enter(ctx, phases.PostmasterStart, false)
		pm.scheduleTick(ctx) // fills the warm pool
		m.reply <- nil
	case msgAdvance:
		m.reply <- pm.advance(ctx, m.phase)
	case msgStartWorker:
		m.reply <- pm.startWorker(ctx, m.spec, m.code)
	case msgStop:
		m.reply <- pm.stop(m.name, m.gen)
	case msgStatus:
		m.reply <- pm.rows()
	case msgWait:
		pm.wait(m)
	case msgWatch:
		s, err := pm.lookup(m.name, m.gen)
		if err == nil {
			s.watchers = append(s.watchers, m.pid)
		}
		m.reply <- err
	case msgShutdown:
		pm.beginShutdown(m.mode, m.cause)
	case msgSpawned:
		pm.spawned(m)
	case msgProcIdle:
		pm.idle(m.p)
	case msgProcReady:
		pm.ready(m.p)
	case msgProcFault:
		pm.fault(m.p, m.err)
	case msgProcExited:
		pm.exited(ctx, m)
	case msgTimer:
		pm.timer(ctx, m)
	}
}

// serverLoop is one iteration of the server loop: start at most
// StartsPerIteration pending workers, then yield to the mailbox so status
// queries and other requests are served between starts.
func (pm *postmaster) serverLoop(ctx actor.Context) {
	n, throttled := 0, false
	for len(pm.queue) > 0 && n < pm.rt.cfg.StartsPerIteration {
		if pm.starting >= pm.rt.cfg.MaxStarting && len(pm.pool) == 0 {
			// Resumed when a start completes (setStateEv) or an idle
			// child joins the pool (idleReady), not by ticking: a tick
			// here would spin the postmaster for as long as it waits.
			throttled = true
			break
		}
		s := pm.queue[0]
		pm.queue = pm.queue[1:]
		s.queued = false
		if s.state != Pending || s.timer != nil || pm.shutdown != 0 || s.spec.StartPhase() > pm.phase {
			continue
		}
		if s.spec.SharedMemory && (pm.resetting || pm.seg == nil) {
			continue // held: maybeFinishReset starts it on the new generation
		}
		pm.startSlot(s)
		n++
	}
	// The pool refills only while no worker is starting: refills are
	// insurance for later starts and must not compete with the ones now.
	for n < pm.rt.cfg.StartsPerIteration && pm.poolDeficit() > 0 && pm.starting == 0 {
		pm.spawnIdle()
		n++
	}
	if len(pm.queue) > 0 && !throttled || pm.poolDeficit() > 0 && pm.starting == 0 {
		pm.scheduleTick(ctx)
	}
	pm.rt.metrics.pending.Set(float64(len(pm.queue)))
}

func (pm *postmaster) scheduleTick(ctx actor.Context) {
	if !pm.tickQueued {
		pm.tickQueued = true
		ctx.Send(ctx.Self(), msgTick{})
	}
}

// enqueue queues s for the server loop and makes sure an iteration comes.
func (pm *postmaster) enqueue(ctx actor.Context, s *slot) {
	pm.queueSlot(s)
	pm.scheduleTick(ctx)
}

// queueSlot appends s to the pending starts, once.
func (pm *postmaster) queueSlot(s *slot) {
	if !s.queued {
		s.queued = true
		pm.queue = append(pm.queue, s)
	}
}

func (pm *postmaster) enter(ctx actor.Context, p phases.Phase, reset bool) {
	pm.phase = p
	pm.rt.phase.Store(uint32(p))
	pm.rt.metrics.phase.Set(float64(p))
	pm.rt.log.Info("runtime: phase entered", "phase", p.String())
	pm.rt.publish(PhaseEvent{Phase: p, Reset: reset, At: time.Now()})
	if p == phases.ConsistentState && pm.rt.hasShm && pm.seg == nil {
		if err := pm.buildSegment(false); err != nil {
			pm.rt.log.Error("runtime: could not build shared memory", "err", err)
			pm.failGroup(nil, err)
		}
	}
	for _, s := range pm.slots {
		if s.state == Registered && s.spec.StartPhase() <= p {
			pm.setState(s, Pending, nil)
			pm.enqueue(ctx, s)
		}
	}
}

func (pm *postmaster) advance(ctx actor.Context, p phases.Phase) error {
	switch {
	case !p.Valid():
		return fmt.Errorf("%w: unknown phase %d", ErrPhase, uint8(p))
	case pm.shutdown != 0:
		return fmt.Errorf("%w: cannot advance to %v", ErrShutdown, p)
	case p < pm.phase:
		return fmt.Errorf("%w: %v is behind the current phase %v", ErrPhase, p, pm.phase)
	}
	for next := pm.phase + 1; next <= p; next++ {
		pm.enter(ctx, next, false)
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

func (pm *postmaster) liveSlots() int {
	n := 0
	for _, s := range pm.slots {
		if !s.terminal() {
			n++
		}
	}
	return n
}

func (pm *postmaster) startWorker(ctx actor.Context, sp actors.Spec, code string) startReply {
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
	pm.rt.log.Info("runtime: dynamic worker registered", "worker", sp.Name, "type", sp.TypeName())
	if sp.StartPhase() <= pm.phase {
		pm.setState(s, Pending, nil)
		pm.queueSlot(s)
		if !pm.tickQueued {
			// The server loop is idle: run its iteration now rather than
			// after one more pass through the mailbox. Otherwise the
			// queued iteration will see it.
			pm.serverLoop(ctx)
		}
	}
	return startReply{gen: s.gen}
}

// startSlot asks the spawner for a process for s.
func (pm *postmaster) startSlot(s *slot) {
	s.inc++
	if s.inc > 1 {
		s.restarts++
	}
	s.cause = ""
	s.startedAt = time.Now()
	s.nextStart = time.Time{}
	if p := pm.takeIdle(); p != nil {
		pm.setStateEv(s, Starting, WorkerEvent{Cold: false})
		pm.adopt(s, p)
		return
	}
	pm.setStateEv(s, Starting, WorkerEvent{Cold: true})
	pm.nextProc++
	pm.spawning++
	inc := s.inc
	rt := pm.rt
	rt.spawner.reqs <- spawnRequest{id: pm.nextProc, reply: func(p *proc, err error) {
		rt.tell(msgSpawned{s: s, inc: inc, p: p, err: err})
	}}
}

func (pm *postmaster) spawned(m msgSpawned) {
	pm.spawning--
	s := m.s
	if s == nil {
		pm.poolSpawned(m)
		return
	}
	if m.err != nil {
		pm.rt.log.Error("runtime: could not start worker", "worker", s.spec.Name, "err", m.err)
		if s.inc == m.inc && s.state == Starting {
			pm.afterExit(s, Exit{Reason: ReasonSpawnFailed, Code: -1, At: time.Now(), Crash: true, Stderr: m.err.Error()})
		}
		pm.maybeShutdownDone()
		return
	}
	p := m.p
	pm.live++
	close(p.adopted)
	if s.inc != m.inc {
		p.slot, p.inc = s, m.inc
		p.cause = ReasonShutdown
		p.killGroup()
		return
	}
	pm.adopt(s, p)
}

// adopt makes p the process of s and assigns it its worker: a cold child
// right after its spawn, or an idle one taken from the warm pool.
func (pm *postmaster) adopt(s *slot, p *proc) {
	p.slot, p.inc = s, s.inc
	s.proc = p
	pm.publishRow(s) // the pid, before any reply of this message
	// The start timeout counts from the moment the process exists, not
	// from the hand-off to the spawner, which may have a queue.
	if s.state == Starting && s.cause == "" {
		pm.armTimer(s, timerStartTimeout, s.spec.ReadyTimeout())
	}
	if s.state != Starting || pm.shutdown != 0 || s.cause != "" {
		// Stopped, timed out or shut down while the spawn was in flight:
		// the exit is reported against the slot like any other.
		if s.cause == "" {
			s.cause = ReasonShutdown
		}
		p.killGroup()
		return
	}
	if err := p.applyLimits(s.spec.Limits); err != nil {
		s.cause = ReasonSpawnFailed
		pm.rt.log.Error("runtime: could not apply the worker's limits", "worker", s.spec.Name, "err", err)
		p.killGroup()
		return
	}
	flags := uint8(0)
	if s.spec.Connect {
		flags |= bridge.FlagConnect
	}
	a := bridge.Assign{Incarnation: s.inc, Flags: flags, Name: s.spec.Name, Code: s.code, Arg: s.spec.Arg}
	var segFile *os.File
	if s.spec.SharedMemory {
		f, err := pm.segmentFile()
		if err != nil {
			s.cause = ReasonSpawnFailed
			pm.rt.log.Error("runtime: no segment for shared-memory worker", "worker", s.spec.Name, "err", err)
			p.killGroup()
			return
		}
		a.Flags |= bridge.FlagSharedMemory
		a.Segment = pm.seg.Generation()
		segFile = f
		p.segFile = f
	}
	if err := p.assignNow(a, segFile); err != nil {
		s.cause = ReasonProtocol
		p.killGroup()
	}
}

func (pm *postmaster) ready(p *proc) {
	s := p.slot
	if s == nil || s.proc != p || s.state != Starting {
		return
	}
	pm.stopTimer(s)
	s.readyAt = time.Now()
	s.route = &route{p: p, gen: s.gen}
	pm.rt.routes.Store(s.spec.Name, s.route)
	pm.rt.metrics.observeReady(s, s.readyAt.Sub(s.startedAt))
	pm.setState(s, Running, nil)
	if s.spec.SharedMemory {
		pm.checkGroupUp()
	}
}

func (pm *postmaster) fault(p *proc, err error) {
	s := p.slot
	cause := ReasonProtocol
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cause = ReasonHeartbeat
	}
	if errors.Is(err, bridge.ErrProtocol) {
		pm.rt.metrics.protocolErrors.Inc()
	}
	name := ""
	if s != nil {
		name = s.spec.Name
		if s.proc == p && s.state == Stopping {
			// Asked to stop: its socket closing is expected. It exits by
			// itself or at the end of its grace period.
			return
		}
		if s.proc == p && s.cause == "" {
			s.cause = cause
		}
	}
	if p.cause == "" {
		p.cause = cause
	}
	pm.rt.log.Warn("runtime: killing child", "worker", name, "pid", p.pid, "reason", cause, "err", err)
	p.killGroup()
}

func (pm *postmaster) exited(ctx actor.Context, m msgProcExited) {
	pm.live--
	p := m.p
	if p.segFile != nil {
		p.segFile.Close()
	}
	s := p.slot
	if s == nil {
		pm.idleExited(ctx, p, m)
		pm.maybeShutdownDone()
		return
	}
	if s.proc != p {
		pm.maybeShutdownDone()
		pm.advanceShutdown()
		return
	}
	s.proc = nil
	pm.publishRow(s)
	if s.route != nil {
		pm.rt.routes.CompareAndDelete(s.spec.Name, s.route)
		s.route = nil
	}
	cause := s.cause
	if cause == "" {
		cause = p.oomCause(m.status)
	}
	ex := classify(m.status, m.goodbye, cause, s.spec.SharedMemory)
	ex.At, ex.PID = m.at, p.pid
	ex.Uptime = m.at.Sub(p.spawn)
	if ex.Crash || ex.Code > 0 {
		ex.Stderr = p.tail.String()
	}
	if ex.Crash && s.state == Stopping && cause == ReasonKilled {
		ex.Crash = false // killed at the end of a stop we asked for
	}
	pm.afterExit(s, ex)
	pm.advanceShutdown()
	pm.maybeShutdownDone()
	_ = ctx
}

// afterExit applies the exit contract and the restart policy to a slot whose
// process just ended (or failed to spawn).
func (pm *postmaster) afterExit(s *slot, ex Exit) {
	pm.stopTimer(s)
	s.exits = append(s.exits, ex)
	if len(s.exits) > exitHistory {
		s.exits = slices.Delete(s.exits, 0, len(s.exits)-exitHistory)
	}
	pm.rt.metrics.observeExit(s, ex)
	ev := WorkerEvent{Exit: &ex}
	if s.spec.SharedMemory {
		if pm.afterShmExit(s, ex, ev) {
			return
		}
		defer pm.maybeFinishReset()
	}
	if pm.shutdown != 0 || s.stopReq || s.state == Stopping {
		pm.setStateEv(s, Stopped, ev)
		return
	}
	wasReady := !s.readyAt.IsZero() && s.readyAt.After(s.startedAt)
	if !ex.Crash && ex.Code == actors.ExitDone && ex.Reason == ReasonExit0 {
		pm.setStateEv(s, Stopped, ev)
		return
	}
	d, err := s.backoff.Next(ex.At, ex.Uptime, rand.Float64())
	if ex.Crash {
		pm.setStateEv(s, Crashed, ev)
		ev = WorkerEvent{}
	}
	switch {
	case errors.Is(err, actors.ErrNoRestart):
		if !ex.Crash {
			pm.setStateEv(s, Stopped, ev)
		}
		pm.rt.log.Info("runtime: worker not restarted (policy never)", "worker", s.spec.Name)
		pm.escalate(s, "not restarted after "+ex.Reason)
	case err != nil:
		pm.setStateEv(s, Failed, ev)
		pm.rt.log.Error("runtime: worker failed", "worker", s.spec.Name, "err", err)
		pm.escalate(s, err.Error())
	default:
		s.nextStart = time.Now().Add(d)
		ev.Backoff = d
		pm.setStateEv(s, Pending, ev)
		pm.armTimer(s, timerRestart, d)
	}
	_ = wasReady
}

// escalate shuts the runtime down when a critical worker is lost for good.
func (pm *postmaster) escalate(s *slot, why string) {
	if !s.spec.Critical {
		return
	}
	err := fmt.Errorf("%w: %q: %s", ErrCriticalWorker, s.spec.Name, why)
	pm.rt.log.Error("runtime: critical worker lost; shutting down", "worker", s.spec.Name, "err", err)
	pm.beginShutdown(phases.Fast, err)
}

func (pm *postmaster) timer(ctx actor.Context, m msgTimer) {
	s := m.s
	if s.timer == nil || s.timerKind != m.kind || s.inc != m.inc {
		return // stale: cancelled or superseded
	}
	s.timer = nil
	switch m.kind {
	case timerRestart:
		if s.state == Pending && pm.shutdown == 0 {
			pm.enqueue(ctx, s)
		}
	case timerStartTimeout:
		if s.state == Starting {
			s.cause = ReasonStartTimeout
			pm.rt.log.Warn("runtime: worker did not report ready in time; killing it", "worker", s.spec.Name, "timeout", s.spec.ReadyTimeout())
			if s.proc != nil {
				s.proc.killGroup()
			} // else: killed when the spawn arrives
		}
	case timerGrace:
		if s.state == Stopping && s.proc != nil {
			if s.cause != ReasonGroupReset {
				s.cause = ReasonKilled
			}
			pm.rt.log.Warn("runtime: worker did not stop within its grace period; killing it", "worker", s.spec.Name, "grace", s.spec.GracePeriod())
			s.proc.killGroup()
		}
	}
}

func (pm *postmaster) armTimer(s *slot, kind timerKind, d time.Duration) {
	pm.stopTimer(s)
	inc, rt := s.inc, pm.rt
	s.timerKind = kind
	s.timer = time.AfterFunc(d, func() { rt.tell(msgTimer{s: s, inc: inc, kind: kind}) })
}

func (pm *postmaster) stopTimer(s *slot) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// stop asks one worker to stop: SIGTERM and the terminate notice, SIGKILL
// after its grace period. A worker waiting to start is stopped at once.
func (pm *postmaster) stop(name string, gen uint64) error {
	s, err := pm.lookup(name, gen)
	if err != nil {
		return err
	}
	s.stopReq = true
	switch {
	case s.state.Alive():
		pm.terminate(s)
	case !s.terminal():
		pm.stopTimer(s)
		s.nextStart = time.Time{}
		pm.setState(s, Stopped, nil)
	}
	return nil
}

func (pm *postmaster) terminate(s *slot) {
	if s.state == Stopping || s.proc == nil {
		if s.state == Starting && s.proc == nil {
			// Spawn in flight: it is killed when it arrives.
			pm.stopTimer(s)
			pm.setState(s, Stopping, nil)
		}
		return
	}
	grace := s.spec.GracePeriod()
	deadline := time.Now().Add(grace)
	smart := pm.shutdown == phases.Smart
	if smart {
		deadline = time.Time{} // smart: the worker may take as long as it needs
	}
	pm.setState(s, Stopping, nil)
	_ = s.proc.send(func(b []byte) []byte { return bridge.AppendTerminate(b, deadline.UnixNano()) })
	s.proc.signal(syscall.SIGTERM)
	if !smart {
		pm.armTimer(s, timerGrace, grace)
	}
}

func (s *slot) info() WorkerInfo {
	wi := WorkerInfo{
		Name: s.spec.Name, Type: s.spec.TypeName(), State: s.state, Phase: s.spec.StartPhase(),
		SharedMemory: s.spec.SharedMemory, Dynamic: s.dynamic, Incarnation: s.inc, Restarts: s.restarts,
		NextStart: s.nextStart, Exits: slices.Clone(s.exits),
	}
	if s.proc != nil {
		wi.PID = s.proc.pid
		wi.Cgroup = s.proc.cgroupPath()
	}
	if s.inc > 0 {
		wi.StartedAt = s.startedAt
	}
	if n := len(s.exits); n > 0 {
		e := s.exits[n-1]
		wi.LastExit = &e
	}
	return wi
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
		r.pid = s.proc.pid
	case w.started && (s.state == Stopped || s.state == Stopping) && s.stopReq:
		r.err = fmt.Errorf("%w: %q", ErrStoppedBeforeStart, s.spec.Name)
		r.exit = ex
	case w.started && pm.shutdown != 0:
		r.err = fmt.Errorf("%w: %q not started", ErrShutdown, s.spec.Name)
	case w.started && ex != nil:
		r.err = fmt.Errorf("%w: %q: %s", ErrStartFailed, s.spec.Name, ex.Reason)
		r.exit = ex
	case w.started && s.terminal():
		r.err = fmt.Errorf("%w: %q is %v", ErrStartFailed, s.spec.Name, s.state)
	case !w.started && s.terminal():
		r.exit = s.lastExit()
	default:
		return false
	}
	w.reply <- r
	return true
}

func (s *slot) lastExit() *Exit {
	if n := len(s.exits); n > 0 {
		e := s.exits[n-1]
		return &e
	}
	return nil
}

func (pm *postmaster) setState(s *slot, to WorkerState, ex *Exit) {
	pm.setStateEv(s, to, WorkerEvent{Exit: ex})
}

// setStateEv moves a slot to a new state and publishes the one event of
// that transition: log line, metrics, subscribers, watchers, waiters.
func (pm *postmaster) setStateEv(s *slot, to WorkerState, ev WorkerEvent) {
	from := s.state
	s.state = to
	// The row first: whoever hears of this change below may look.
	pm.publishRow(s)
	if from == Starting {
		pm.starting--
		if (len(pm.queue) > 0 || pm.poolDeficit() > 0) && pm.ctx != nil {
			pm.scheduleTick(pm.ctx) // a start slot is free again
		}
	}
	if to == Starting {
		pm.starting++
	}
	ev.Name, ev.Type, ev.Incarnation, ev.From, ev.To, ev.At = s.spec.Name, s.spec.TypeName(), s.inc, from, to, time.Now()
	if s.proc != nil {
		ev.PID = s.proc.pid
	}
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
	pm.rt.log.LogAttrs(nil, level, "runtime: worker state", attrs...)
	pm.rt.metrics.observeState(s, from, to)
	pm.rt.publish(ev)
	for _, w := range s.watchers {
		pm.rt.system.Root.Send(w, ev)
	}
	s.waiters = slices.DeleteFunc(s.waiters, func(w *waiter) bool { return pm.resolveWaiter(s, w, ev.Exit) })
}

// beginShutdown starts or hardens a shutdown. No worker starts or restarts
// once it begins.
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
	pm.rt.log.Info("runtime: shutdown", "mode", mode.String())
	pm.rt.publish(ShutdownEvent{Mode: mode, At: time.Now()})
	pm.queue = nil
	pm.killIdle()
	for _, s := range pm.slots {
		if !s.state.Alive() && !s.terminal() {
			pm.stopTimer(s)
			s.queued = false
			s.nextStart = time.Time{}
			pm.setState(s, Stopped, nil)
		}
	}
	if mode == phases.Immediate {
		for _, s := range pm.slots {
			if s.state.Alive() && s.proc != nil {
				s.cause = ReasonShutdown
				pm.setState(s, Stopping, nil)
				s.proc.killGroup()
			}
		}
		pm.rt.forEachProc(func(p *proc) { p.killGroup() })
	}
	pm.advanceShutdown()
	pm.maybeShutdownDone()
}

// advanceShutdown, in a fast shutdown, stops the workers of the latest start
// phase that still has live workers: stop order is the reverse of phase
// order, and the workers of one phase stop together.
func (pm *postmaster) advanceShutdown() {
	if pm.shutdown != phases.Fast && pm.shutdown != phases.Smart {
		return
	}
	for ph := phases.RecoveryFinished; ph >= phases.PostmasterStart; ph-- {
		any := false
		for i := len(pm.slots) - 1; i >= 0; i-- {
			s := pm.slots[i]
			if s.spec.StartPhase() == ph && s.state.Alive() {
				any = true
				switch {
				case s.state != Stopping:
					pm.terminate(s)
				case pm.shutdown == phases.Fast && s.timer == nil && s.proc != nil:
					pm.armTimer(s, timerGrace, s.spec.GracePeriod()) // smart turned fast
				}
			}
		}
		if any {
			return
		}
	}
}

func (pm *postmaster) maybeShutdownDone() {
	if pm.shutdown == 0 || pm.shutdownDone || pm.spawning > 0 || pm.live > 0 {
		return
	}
	for _, s := range pm.slots {
		if s.state.Alive() {
			return
		}
	}
	pm.shutdownDone = true
	pm.rt.publish(ShutdownEvent{Mode: pm.shutdown, Done: true, At: time.Now()})
	pm.rt.finishShutdown(pm.rows(), pm.cause)
}

// classify turns a wait status, the goodbye (-1 = none) and the
// postmaster's own cause into an Exit. A shared-memory worker that exits
// 0 or 1 without its goodbye is a crash: it may have died mid-write, as
// PostgreSQL assumes of a backend that exits without releasing its slot.
func classify(ws syscall.WaitStatus, goodbye int, cause string, shm bool) Exit {
	ex := Exit{Code: -1}
	switch {
	case ws.Exited():
		ex.Code = ws.ExitStatus()
	case ws.Signaled():
		ex.Signal = sigName(ws.Signal())
	}
	if cause == ReasonKilled && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL) {
		// The grace period ran out as the worker exited by itself: its
		// own status tells how it ended.
		cause = ""
	}
	if cause != "" {
		ex.Reason = cause
		ex.Crash = cause != ReasonShutdown && cause != ReasonGroupReset
		return ex
	}
	switch {
	case ws.Signaled():
		ex.Reason, ex.Crash = reasonSignalPrefix+ex.Signal, true
	case ex.Code == 0 || ex.Code == 1:
		ex.Reason = ReasonExit0
		if ex.Code == 1 {
			ex.Reason = ReasonExit1
		}
		if goodbye != ex.Code && shm {
			ex.Reason, ex.Crash = ReasonNoGoodbye, true
		}
	case ex.Code == 2:
		ex.Reason, ex.Crash = ReasonExit2, true
	default:
		ex.Reason, ex.Crash = ReasonExitOther, true
	}
	return ex
}

func sigName(s syscall.Signal) string {
	n := unix.SignalName(s)
	if len(n) > 3 && n[:3] == "SIG" {
		return n[3:]
	}
	if n == "" {
		return fmt.Sprintf("%d", int(s))
	}
	return n
}
