package cluster

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/cluster/internal/wire"
)

// memberActorName is the name of the actor that every member runs: it
// sends and answers heartbeats, keeps the grants, and places the workers.
const memberActorName = "bgworker-cluster"

// Messages of the member actor that stay in this process.
type (
	tick        struct{}
	peerCheck   struct{ addr string }
	topologyMsg struct{ t *pcluster.ClusterTopology }
	workerEvent struct{ e runtime.WorkerEvent }
	startedMsg  struct {
		name  string
		token uint64
		h     *runtime.Handle
		err   error
	}
	stoppedMsg struct {
		name  string
		token uint64
	}
	stopDue struct {
		name  string
		token uint64
	}
	retryMsg       struct{ name string }
	acquireTimeout struct {
		name  string
		token uint64
	}
	deferredAcquire struct {
		req    *wire.Acquire
		sender *actor.PID
	}
	offerDue struct{ name, gone string }
	paSync   struct{}
	leaveMsg struct{ done chan struct{} }
)

// phase is where this member is, as a holder, with one worker.
type phase uint8

const (
	idle      phase = iota // not held here
	acquiring              // asked the grantors under token
	holding                // a quorum granted: the worker is started or running here
	stopping               // its process is being stopped; released once reaped
)

// peer is another member, as this member sees it.
type peer struct {
	addr      string
	info      *wire.Member // nil until its first heartbeat or answer
	lastRecv  time.Time    // receipt of its latest heartbeat
	lastAcked time.Time    // send time of our latest heartbeat it answered in time
	lastRound uint64       // the round of its latest heartbeat (from its current id)
	up        bool
	since     time.Time // when it came up (or went down) in this view
	timer     *time.Timer
}

// heard returns the latest evidence that the peer was alive.
func (p *peer) heard() time.Time {
	if p.lastAcked.After(p.lastRecv) {
		return p.lastAcked
	}
	return p.lastRecv
}

// worker is one cluster-scoped worker, as this member sees it: its grant
// (this member as grantor) and its placement here (this member as holder).
type worker struct {
	spec    actors.Spec
	g       grant
	ph      phase
	token   uint64          // the token asked for or held
	sent    time.Time       // when the acquire was sent
	granted map[string]bool // member ids that granted the acquire
	asked   int             // grantors asked, this member included
	refused int
	wait    time.Duration // the shortest remaining grant among refusals
	known   uint64        // the highest token heard of from any grantor
	expired bool          // the grant this member took over had run out (a failover)
	dead    time.Time     // holding: the lease ends here in this member's view
	stopT   *time.Timer
	retryT  *time.Timer
	offerT  *time.Timer     // a grantor's offer of the lease, due when the grant to a member gone runs out
	offer   offer           // the latest offer of the lease to this member, as a holder
	started bool            // StartWorker has answered for the current token
	h       *runtime.Handle // its handle, when the start succeeded
	state   runtime.WorkerState
	pid     int
	// What the holder's heartbeats say, when another member holds it.
	waiting map[string]*actor.PID // members refused an acquire while the grant was held: told when it is released
	remote  struct {
		holder memberRef
		token  uint64
		state  string
		pid    int64
		at     time.Time
	}
}

// offer is a grant of a worker's lease that a grantor sent this member
// unasked (wire.Offer).
type offer struct {
	from, addr string    // the grantor
	token      uint64    // zero: none
	counted    time.Time // the grant counts from here (zero: unknown, ask for it)
	at         time.Time // received
}

// round is one heartbeat sent to every peer, kept until its answers are
// too late to count.
type round struct {
	sent    time.Time
	tokens  map[string]uint64 // the leases it renewed
	granted map[string]int    // worker → grantors that renewed (this member included)
}

// memberActor is the protoactor actor at the heart of a member. All the
// state of heartbeats, grants and placements lives here and is touched by
// its mailbox alone; the runtime's blocking calls run in goroutines that
// report back by message.
type memberActor struct {
	c       *Cluster
	self    memberRef
	info    *wire.Member
	lt      leaseTimes
	static  bool
	peers   map[string]*peer // by address, without this member
	order   []string         // peers in Config order
	workers map[string]*worker
	names   []string // workers in Config order
	topo    []*pcluster.Member
	rdv     *pcluster.Rendezvous
	rn      uint64
	rounds  map[uint64]*round
	sentAt  map[uint64]time.Time // send time of each round of the last lease, for offers
	leaving bool
	// protoactor's member list, while it is behind this view: the members
	// to give it, and the member events to publish once it has them.
	paBehind  bool
	paMembers []*pcluster.Member
	paEvents  []MemberEvent
	paT       *time.Timer
	// leaveDone is closed once a leave has stopped every worker here.
	leaveDone chan struct{}
	ctx       actor.Context
	now       func() time.Time
	// grantsFrom is when this member begins to grant leases: one lease
	// after it started. A member that restarted has forgotten what its
	// last process granted; until every such grant has run out, a grant
	// of its own could make a second quorum beside a live one.
	grantsFrom time.Time
}

// granting reports whether this member grants leases at now (see
// grantsFrom).
func (m *memberActor) granting(now time.Time) bool { return !now.Before(m.grantsFrom) }

func newMemberActor(c *Cluster) *memberActor {
	m := &memberActor{c: c, peers: map[string]*peer{}, workers: map[string]*worker{}, rounds: map[uint64]*round{}, sentAt: map[uint64]time.Time{},
		now: time.Now, static: c.cfg.Provider == nil, rdv: pcluster.NewRendezvous(),
		lt: leaseTimes{lease: c.cfg.Lease, margin: c.cfg.Lease / 10, interval: c.cfg.Interval}}
	for _, a := range c.cfg.Peers {
		if a != c.cfg.Bind {
			m.peers[a] = &peer{addr: a}
			m.order = append(m.order, a)
		}
	}
	for _, s := range c.specs {
		m.workers[s.Name] = &worker{spec: s}
		m.names = append(m.names, s.Name)
	}
	return m
}

func (m *memberActor) Receive(ctx actor.Context) {
	m.ctx = ctx
	now := m.now()
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		m.grantsFrom = now.Add(m.lt.lease)
		m.self = memberRef{id: m.c.csys.ID, name: m.c.cfg.Name, addr: m.c.csys.Address()}
		m.info = &wire.Member{Id: m.self.id, Name: m.self.name, Address: m.self.addr,
			Kinds: m.c.pc.GetClusterKinds(), StartedUnixNano: now.UnixNano()}
		if m.static {
			m.updateTopology(now, "", nil)
		}
	case tick:
		m.heartbeat(now)
	case *wire.Heartbeat:
		m.onHeartbeat(now, msg)
	case *wire.HeartbeatAck:
		m.onAck(now, msg)
	case peerCheck:
		m.onPeerCheck(now, msg.addr)
	case *pcluster.ClusterTopology:
		m.onTopology(now, msg)
	case topologyMsg:
		m.onTopology(now, msg.t)
	case *wire.Acquire:
		m.onAcquire(now, msg, ctx.Sender())
	case deferredAcquire:
		m.onAcquire(now, msg.req, msg.sender)
	case *wire.Offer:
		m.onOffer(now, msg)
	case paSync:
		m.paT = nil
		m.syncProtoactor(now)
	case offerDue:
		if w := m.workers[msg.name]; w != nil {
			w.offerT = nil
			m.offer(now, w, msg.gone) // nothing if renewed meanwhile
		}
	case *wire.AcquireReply:
		m.onAcquireReply(now, msg)
	case *wire.Release:
		m.onRelease(now, msg)
	case acquireTimeout:
		if w := m.workers[msg.name]; w != nil && w.ph == acquiring && w.token == msg.token {
			m.abandon(now, w, "no quorum within the timeout")
		}
	case retryMsg:
		if w := m.workers[msg.name]; w != nil {
			w.retryT = nil
		}
		m.reconcile(now)
	case startedMsg:
		m.onStarted(now, msg)
	case stoppedMsg:
		m.onStopped(now, msg)
	case stopDue:
		if w := m.workers[msg.name]; w != nil && w.ph == holding && w.token == msg.token {
			m.c.log.Warn("cluster: lease not renewed by a quorum; stopping the worker before it runs out",
				"worker", msg.name, "token", msg.token, "lease_end", w.dead)
			m.c.metrics.leaseLosses.WithLabelValues(msg.name).Inc()
			m.stop(now, w)
		}
	case workerEvent:
		m.onWorkerEvent(now, msg.e)
	case leaveMsg:
		m.leaving, m.leaveDone = true, msg.done
		m.reconcile(now) // owner() is "" while leaving: every holder stops
		m.finishLeave()
	case *actor.Stopping:
		m.stopTimers()
	}
	if m.paBehind && !m.starting() {
		m.syncProtoactor(now)
	}
	m.publish(now)
}

func (m *memberActor) stopTimers() {
	if m.paT != nil {
		m.paT.Stop()
	}
	for _, p := range m.peers {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	for _, w := range m.workers {
		if w.stopT != nil {
			w.stopT.Stop()
		}
		if w.retryT != nil {
			w.retryT.Stop()
		}
		if w.offerT != nil {
			w.offerT.Stop()
		}
	}
}

// after sends msg to this actor in d.
func (m *memberActor) after(d time.Duration, msg any) *time.Timer {
	self, root := m.ctx.Self(), m.c.csys.Root
	return time.AfterFunc(d, func() { root.Send(self, msg) })
}

func (m *memberActor) peerPID(addr string) *actor.PID { return actor.NewPID(addr, memberActorName) }

// targets are the members that heartbeats go to: every configured peer
// (so that a silent one can come back), or the provider's topology.
func (m *memberActor) targets() []string {
	if m.static {
		return m.order
	}
	var out []string
	for _, t := range m.topo {
		if a := t.Address(); a != m.self.addr {
			out = append(out, a)
		}
	}
	return out
}

// heartbeat sends one round: the health check of every peer and the
// renewal of every lease held here.
func (m *memberActor) heartbeat(now time.Time) {
	if m.leaving {
		return
	}
	m.rn++
	r := &round{sent: now, tokens: map[string]uint64{}, granted: map[string]int{}}
	hb := &wire.Heartbeat{From: m.info, Round: m.rn}
	for _, name := range m.names {
		w := m.workers[name]
		if w.ph != holding {
			continue
		}
		if !w.g.renew(now, m.self, w.token, m.lt.lease) {
			continue // this member no longer grants itself: cannot happen while it holds
		}
		r.tokens[name] = w.token
		r.granted[name] = 1
		hb.Leases = append(hb.Leases, &wire.Lease{Worker: name, Token: w.token, State: w.state.String(), Pid: int64(w.pid)})
		m.renewed(now, w, r, name)
	}
	m.rounds[m.rn] = r
	for n, old := range m.rounds {
		if now.Sub(old.sent) > m.c.cfg.Timeout {
			delete(m.rounds, n)
		}
	}
	m.sentAt[m.rn] = now
	for n, t := range m.sentAt {
		if now.Sub(t) > m.lt.lease {
			delete(m.sentAt, n)
		}
	}
	for _, a := range m.targets() {
		m.ctx.Request(m.peerPID(a), hb)
	}
	// A holder of a grant here whose heartbeats are overdue may be gone:
	// its lease is offered on when the grant runs out (see offer).
	for _, name := range m.names {
		w := m.workers[name]
		h := w.g.holder.id
		if w.offerT != nil || h == "" || h == m.self.id || !w.g.held(now) {
			continue
		}
		if p := m.peerByID(h); p != nil && now.Sub(p.heard()) > 2*m.c.cfg.Interval {
			w.offerT = m.after(w.g.remaining(now), offerDue{name: name, gone: h})
		}
	}
}

// peerByID returns the peer whose current id is id, or nil.
func (m *memberActor) peerByID(id string) *peer {
	for _, p := range m.peers {
		if p.info != nil && p.info.Id == id {
			return p
		}
	}
	return nil
}

// renewed extends w's lease when round r has its quorum.
func (m *memberActor) renewed(now time.Time, w *worker, r *round, name string) {
	if r.granted[name] != m.c.cfg.Quorum || w.ph != holding || w.token != r.tokens[name] {
		return
	}
	if d := m.lt.holderDeadline(r.sent); d.After(w.dead) {
		w.dead = d
		m.armStop(now, w)
	}
}

func (m *memberActor) armStop(now time.Time, w *worker) {
	if w.stopT != nil {
		w.stopT.Stop()
	}
	w.stopT = m.after(m.lt.stopAt(w.dead, w.spec.GracePeriod()).Sub(now), stopDue{name: w.spec.Name, token: w.token})
}

func (m *memberActor) peerOf(info *wire.Member) *peer {
	if info == nil || info.Address == m.self.addr {
		return nil
	}
	p := m.peers[info.Address]
	if p == nil {
		if m.static {
			return nil // not one of Peers: ignored
		}
		p = &peer{addr: info.Address}
		m.peers[info.Address] = p
	}
	if p.info != nil && p.info.Id != info.Id {
		p.lastRound = 0
		if p.up {
			// The peer restarted under a new id: the old one is gone.
			m.c.log.Info("cluster: member restarted", "address", p.addr, "old_id", p.info.Id, "new_id", info.Id)
			p.up = false
			old := p.info.Id
			p.info = info
			m.updateTopology(m.now(), old, nil)
		}
	}
	p.info = info
	return p
}

func (m *memberActor) ref(info *wire.Member) memberRef {
	return memberRef{id: info.GetId(), name: info.GetName(), addr: info.GetAddress()}
}

// alive marks evidence that p lives and re-arms its down check.
func (m *memberActor) alive(now time.Time, p *peer) {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timer = m.after(p.heard().Add(m.lt.lease).Sub(now), peerCheck{addr: p.addr})
	if !p.up && m.static {
		p.up, p.since = true, now
		m.c.log.Info("cluster: member up", "member", p.info.GetName(), "address", p.addr, "id", p.info.GetId())
		m.updateTopology(now, "", &MemberEvent{Member: p.info.GetName(), Address: p.addr, ID: p.info.GetId(), Up: true, At: now})
	}
}

// downAt returns when p is taken as down: once nothing has come from it
// for the lease, and no grant that it asked for here still runs. Such a
// grant can outlast p's latest heartbeat by up to an interval (granted on
// a lease request sent after it, or deferred until a previous grant ran
// out); nothing p held can move before it runs out, and so, taken as
// down, p holds nothing here that it asked for: its leases are free, and
// offered to their new owners, at once. A grant offered to p unasked does
// not hold its detection back; it is offered on when it runs out.
func (m *memberActor) downAt(p *peer) time.Time {
	due := p.heard().Add(m.lt.lease)
	for _, name := range m.names {
		if g := m.workers[name].g; p.info != nil && g.holder.id == p.info.Id && !g.offered && g.expires.After(due) {
			due = g.expires
		}
	}
	return due
}

// onPeerCheck takes p as down at downAt.
func (m *memberActor) onPeerCheck(now time.Time, addr string) {
	p := m.peers[addr]
	if p == nil || !p.up {
		return
	}
	if due := m.downAt(p); now.Before(due) {
		if p.timer != nil {
			p.timer.Stop()
		}
		p.timer = m.after(due.Sub(now), peerCheck{addr: addr})
		return
	}
	m.down(now, p, "no heartbeat within the lease")
}

func (m *memberActor) down(now time.Time, p *peer, why string) {
	if !p.up {
		return
	}
	p.up, p.since = false, now
	m.c.log.Info("cluster: member down", "member", p.info.GetName(), "address", p.addr, "why", why)
	ev := MemberEvent{Member: p.info.GetName(), Address: p.addr, ID: p.info.GetId(), Up: false, At: now}
	if m.static {
		m.updateTopology(now, p.info.GetId(), &ev)
		return
	}
	m.c.emit(ev)
}

// updateTopology gives protoactor's member list the members up in this
// view (static peers only); gone is the id of a member that has just gone
// down ("" for none), ev the event to publish once protoactor's list has
// the change (nil for none). Placements are reconciled first, on the
// members that protoactor's list will hold (those up, less any it has
// blocked), and the leases gone held offered to their new owners. A worker
// placed here by the change starts before protoactor's list is updated
// (which takes a fraction of a millisecond, with its endpoint and grain
// bookkeeping): the update waits until the worker is running, at most
// Config.Timeout.
func (m *memberActor) updateTopology(now time.Time, gone string, ev *MemberEvent) {
	ms := []*pcluster.Member{toMember(m.info)}
	for _, a := range m.order {
		if p := m.peers[a]; p.up && p.info != nil {
			ms = append(ms, toMember(p.info))
		}
	}
	bl := m.c.pc.Remote.BlockList()
	active := make([]*pcluster.Member, 0, len(ms))
	for _, mb := range ms {
		if !bl.IsBlocked(mb.Id) {
			active = append(active, mb)
		}
	}
	m.setTopology(now, active)
	m.offerLeases(now, gone)
	m.paBehind, m.paMembers = true, ms
	if ev != nil {
		m.paEvents = append(m.paEvents, *ev)
	}
	if !m.starting() {
		m.syncProtoactor(now)
		return
	}
	// The events of this member's view go out now; protoactor's list
	// follows.
	for _, e := range m.paEvents {
		m.c.emit(e)
	}
	m.paEvents = nil
	if m.paT == nil {
		m.paT = m.after(m.c.cfg.Timeout, paSync{})
	}
}

// starting reports whether a worker is being placed here: its lease asked
// for, or held and the worker not yet running (nor ended).
func (m *memberActor) starting() bool {
	for _, w := range m.workers {
		if w.ph == acquiring || (w.ph == holding && w.state < runtime.Running) {
			return true
		}
	}
	return false
}

// syncProtoactor gives protoactor's member list the members of this view,
// and publishes the member events that waited for it.
func (m *memberActor) syncProtoactor(now time.Time) {
	if !m.paBehind {
		return
	}
	if m.paT != nil {
		m.paT.Stop()
		m.paT = nil
	}
	m.c.pc.MemberList.UpdateClusterTopology(m.paMembers)
	evs := m.paEvents
	m.paBehind, m.paMembers, m.paEvents = false, nil, nil
	m.setTopology(now, m.c.pc.MemberList.Members().Members())
	for _, e := range evs {
		m.c.emit(e)
	}
}

func toMember(info *wire.Member) *pcluster.Member {
	host, port, _ := splitHostPort(info.Address)
	return &pcluster.Member{Id: info.Id, Host: host, Port: int32(port), Kinds: info.Kinds}
}

func (m *memberActor) onTopology(now time.Time, t *pcluster.ClusterTopology) {
	if m.static {
		// protoactor's list changes only by updateTopology here: this is
		// its echo, perhaps of a view older than the current one.
		return
	}
	for _, left := range t.Left {
		if p := m.peers[left.Address()]; p != nil {
			p.up, p.since = false, now
		}
	}
	for _, mb := range t.Members {
		if p := m.peers[mb.Address()]; p != nil && !p.up {
			p.up, p.since = true, now
		}
	}
	m.setTopology(now, t.Members)
	for _, left := range t.Left {
		m.offerLeases(now, left.Id)
	}
}

func (m *memberActor) setTopology(now time.Time, members []*pcluster.Member) {
	var withKind []*pcluster.Member
	for _, mb := range members {
		if mb.HasKind(workerKind) {
			withKind = append(withKind, mb)
		}
	}
	m.topo = withKind
	m.rdv.UpdateMembers(withKind)
	m.c.metrics.members.Set(float64(len(members)))
	m.reconcile(now)
}

// owner returns the address of the member that owns name in this view:
// rendezvous hashing over the members (disthash's), and nobody while
// fewer than a quorum are up.
func (m *memberActor) owner(name string) string {
	if len(m.topo) < m.c.cfg.Quorum || m.leaving {
		return ""
	}
	return m.rdv.GetByClusterIdentity(&pcluster.ClusterIdentity{Identity: name, Kind: workerKind})
}

// reconcile starts what this member now owns and stops what it does not,
// on every change of the topology, a grant or a worker.
func (m *memberActor) reconcile(now time.Time) {
	for _, name := range m.names {
		w := m.workers[name]
		mine := m.owner(name) == m.self.addr
		switch {
		case w.ph == idle && mine && w.retryT == nil:
			m.acquire(now, w)
		case w.ph == acquiring && !mine:
			m.abandon(now, w, "the placement moved")
		case w.ph == holding && !mine:
			m.c.log.Info("cluster: placement moved; stopping the worker here", "worker", name, "owner", m.owner(name))
			m.stop(now, w)
		}
	}
}

// acquire asks every member up for name's lease under a new token. An
// offer of the lease that is still fresh gives the token, and counts as
// its grantor's grant without asking it again: with a quorum of two, the
// worker is placed here at once.
func (m *memberActor) acquire(now time.Time, w *worker) {
	token, of := m.acquireToken(now, w)
	w.offer = offer{}
	prev, wasHeld := w.g.holder, w.g.held(now)
	if !m.granting(now) {
		m.retry(w, m.grantsFrom.Sub(now)) // not even to itself, until its quiet lease is over
		return
	}
	if !w.g.acquire(now, m.self, token, m.lt.lease) {
		// Held by another member in this member's own view: ask again
		// when that grant runs out (or is released).
		m.retry(w, w.g.remaining(now))
		return
	}
	w.expired = !wasHeld && prev.id != "" && prev.id != m.self.id
	w.ph, w.token, w.sent, w.granted, w.refused, w.wait = acquiring, token, now, map[string]bool{m.self.id: true}, 0, 0
	w.asked = 1
	if of.token != 0 && m.countable(now, w, of.counted) {
		w.granted[of.from] = true
		w.sent = of.counted
		w.asked++
	} else {
		of.from = "" // ask it too: it answers with the grant it offered
	}
	req := &wire.Acquire{Worker: w.spec.Name, Token: token, Holder: m.info}
	for _, a := range m.targets() {
		if p := m.peers[a]; p != nil && p.up && (of.from == "" || p.info.GetId() != of.from) {
			m.ctx.Request(m.peerPID(a), req)
			w.asked++
		}
	}
	if !m.checkQuorum(now, w) {
		w.stopT = m.after(m.c.cfg.Timeout, acquireTimeout{name: w.spec.Name, token: token})
	}
}

// acquireToken returns the token that an acquire of w asks under at now,
// and the offer that gives it (the zero offer when none does): one above
// every token granted here and heard of, or the token of w's offer when
// that is still good. An offer's token is good when it is above every
// token granted here and no lower than the highest heard of (which may be
// the offer's own, from its grantor's answer), and when it came less than
// a lease (less the margin) ago: its grant lasts a lease at most.
func (m *memberActor) acquireToken(now time.Time, w *worker) (uint64, offer) {
	of := w.offer
	if of.token == 0 || of.token <= w.g.max || of.token < w.known || now.Sub(of.at) >= m.lt.lease-m.lt.margin {
		return max(w.g.max, w.known) + 1, offer{}
	}
	return of.token, of
}

// countable reports whether a grant counted from counted leaves a holder
// of w at least a heartbeat to renew it before it would have to stop.
func (m *memberActor) countable(now time.Time, w *worker, counted time.Time) bool {
	return !counted.IsZero() && now.Add(m.c.cfg.Interval).Before(m.lt.stopAt(m.lt.holderDeadline(counted), w.spec.GracePeriod()))
}

func (m *memberActor) retry(w *worker, d time.Duration) {
	if w.retryT != nil {
		w.retryT.Stop()
	}
	if d <= 0 {
		d = m.c.cfg.Interval / 4
	}
	// A release may not reach this member (it was sent before the refusal
	// here was recorded): ask again at least every two heartbeats.
	d = min(d, 2*m.c.cfg.Interval)
	w.retryT = m.after(d, retryMsg{name: w.spec.Name})
}

// checkQuorum moves an acquiring worker on once its fate is known.
func (m *memberActor) checkQuorum(now time.Time, w *worker) bool {
	switch {
	case len(w.granted) >= m.c.cfg.Quorum:
		if w.stopT != nil {
			w.stopT.Stop()
		}
		m.hold(now, w)
		return true
	case w.asked-w.refused < m.c.cfg.Quorum:
		m.abandon(now, w, "refused by too many grantors")
		return true
	}
	return false
}

func (m *memberActor) onAcquireReply(now time.Time, r *wire.AcquireReply) {
	w := m.workers[r.Worker]
	if w == nil {
		return
	}
	if g := r.GetCurrent(); g.GetToken() > w.known {
		w.known = g.GetToken()
	}
	if w.ph != acquiring || w.token != r.Token {
		if r.Granted && !(w.ph == holding && w.token == r.Token) {
			// A late grant for an acquire given up: hand it back.
			m.ctx.Send(m.peerPID(r.From.GetAddress()), &wire.Release{Worker: r.Worker, Token: r.Token, HolderId: m.self.id})
		}
		return
	}
	if cur := r.GetCurrent(); !r.Granted && cur.GetHolderId() == m.self.id && cur.GetToken() > w.token {
		// The grantor offered this member the lease under a higher token
		// meanwhile: ask again under that one, at once.
		if w.offer.token < cur.GetToken() {
			w.offer = offer{from: r.From.GetId(), addr: r.From.GetAddress(), token: cur.GetToken(), at: now}
		}
		m.giveUp(w, "offered a higher token")
		m.acquire(now, w)
		return
	}
	if r.Granted {
		w.granted[r.From.GetId()] = true
	} else {
		w.refused++
		if rem := time.Duration(r.GetCurrent().GetRemainingNs()); rem > 0 && (w.wait == 0 || rem < w.wait) {
			w.wait = rem
		}
	}
	m.checkQuorum(now, w)
}

// abandon gives up an acquire: the grants it got are handed back and it
// is tried again later.
func (m *memberActor) abandon(now time.Time, w *worker, why string) {
	m.giveUp(w, why)
	m.retry(w, w.wait)
}

// giveUp ends an acquire and hands back the grants it got.
func (m *memberActor) giveUp(w *worker, why string) {
	m.c.log.Debug("cluster: acquire given up", "worker", w.spec.Name, "token", w.token, "why", why,
		"granted", len(w.granted), "refused", w.refused, "asked", w.asked, "wait", w.wait, "known", w.known)
	if w.stopT != nil {
		w.stopT.Stop()
	}
	rel := &wire.Release{Worker: w.spec.Name, Token: w.token, HolderId: m.self.id}
	w.g.release(m.self.id, w.token)
	for _, a := range m.targets() {
		m.ctx.Send(m.peerPID(a), rel)
	}
	w.ph = idle
}

// hold starts the worker here: a quorum granted its lease.
func (m *memberActor) hold(now time.Time, w *worker) {
	w.ph, w.dead, w.started, w.h, w.state, w.pid = holding, m.lt.holderDeadline(w.sent), false, nil, 0, 0
	m.armStop(now, w)
	name, token := w.spec.Name, w.token
	m.c.metrics.changes.WithLabelValues(name).Inc()
	if w.expired {
		m.c.metrics.failovers.WithLabelValues(name).Inc()
	}
	m.c.log.Info("cluster: placed here", "worker", name, "token", token, "failover", w.expired)
	m.c.emit(PlacementEvent{Worker: name, Member: m.self.name, Token: token, Here: true, At: now})
	spec := w.spec
	spec.Run, spec.Props, spec.Regions = nil, nil, nil
	spec.Type = w.spec.Name
	spec.Arg = encodeArg(token, m.self.name, w.spec.Arg)
	if spec.StopTimeout == 0 {
		spec.StopTimeout = m.c.grace
	}
	self := m.ctx.Self()
	m.c.goRuntime(func(ctx context.Context) {
		h, err := m.c.rt.StartWorker(ctx, spec)
		m.c.csys.Root.Send(self, startedMsg{name: name, token: token, h: h, err: err})
	})
}

func (m *memberActor) onStarted(now time.Time, s startedMsg) {
	w := m.workers[s.name]
	if w == nil || w.token != s.token || w.started || (w.ph != holding && w.ph != stopping) {
		return
	}
	w.started, w.h = true, s.h
	if s.err != nil {
		m.c.log.Error("cluster: start of a placed worker failed", "worker", s.name, "token", s.token, "err", s.err)
		w.ph = stopping
		m.retry(w, 2*m.c.cfg.Interval) // not again at once: a start that fails may fail again
		m.onStopped(now, stoppedMsg{name: s.name, token: s.token})
		return
	}
	if w.ph == stopping {
		m.stopProcess(w)
	}
}

// stop ends the worker here; once it is reaped its lease is released and
// the placement reconciled again. A worker whose start has not answered
// yet is stopped when it does.
func (m *memberActor) stop(now time.Time, w *worker) {
	if w.stopT != nil {
		w.stopT.Stop()
	}
	w.ph = stopping
	if w.started {
		m.stopProcess(w)
	}
}

// stopProcess terminates the worker's process and reports once it is
// reaped. If the runtime is shutting down, that is once every child is.
func (m *memberActor) stopProcess(w *worker) {
	name, token, h, self := w.spec.Name, w.token, w.h, m.ctx.Self()
	rt := m.c.rt
	m.c.goRuntime(func(ctx context.Context) {
		err := h.Terminate(ctx)
		if err == nil || errors.Is(err, runtime.ErrStaleHandle) {
			_, err = h.WaitStopped(ctx)
		}
		if err != nil && ctx.Err() == nil {
			// The runtime is shutting down: its children are being
			// stopped, and only once they are all reaped is none left.
			select {
			case <-rt.Done():
			case <-ctx.Done():
			}
		}
		m.c.csys.Root.Send(self, stoppedMsg{name: name, token: token})
	})
}

func (m *memberActor) onStopped(now time.Time, s stoppedMsg) {
	w := m.workers[s.name]
	if w == nil || w.token != s.token || w.ph != stopping {
		return
	}
	m.c.log.Info("cluster: worker stopped here", "worker", s.name, "token", s.token)
	m.c.emit(PlacementEvent{Worker: s.name, Member: m.self.name, Token: s.token, Here: false, At: now})
	m.c.metrics.changes.WithLabelValues(s.name).Inc()
	rel := &wire.Release{Worker: s.name, Token: s.token, HolderId: m.self.id}
	w.g.release(m.self.id, s.token)
	for _, a := range m.targets() {
		m.ctx.Send(m.peerPID(a), rel)
	}
	w.ph, w.state, w.pid, w.h, w.started = idle, 0, 0, nil, false
	m.reconcile(now)
	m.finishLeave()
}

func (m *memberActor) onWorkerEvent(now time.Time, e runtime.WorkerEvent) {
	w := m.workers[e.Name]
	if w == nil {
		return
	}
	w.state, w.pid = e.To, e.PID
	if !e.To.Alive() {
		w.pid = 0
	}
	if e.To == runtime.Running {
		m.c.emit(WorkerReady{Worker: e.Name, Member: m.self.name, Token: w.token, PID: e.PID, At: e.At})
	}
}

// onHeartbeat is a peer's health check and the renewal of its leases.
func (m *memberActor) onHeartbeat(now time.Time, hb *wire.Heartbeat) {
	p := m.peerOf(hb.From)
	if p == nil {
		return
	}
	ack := &wire.HeartbeatAck{From: m.info, Round: hb.Round}
	h := m.ref(hb.From)
	for _, l := range hb.Leases {
		w := m.workers[l.Worker]
		if w == nil {
			ack.Rejected = append(ack.Rejected, &wire.Grant{Worker: l.Worker})
			continue
		}
		if !m.granting(now) || !w.g.renew(now, h, l.Token, m.lt.lease) {
			ack.Rejected = append(ack.Rejected, m.grantOf(now, w))
			continue
		}
		w.remote.holder, w.remote.token, w.remote.state, w.remote.pid, w.remote.at = h, l.Token, l.State, l.Pid, now
	}
	m.ctx.Respond(ack)
	p.lastRound = hb.Round
	if hb.Leaving {
		p.lastRecv, p.lastAcked = time.Time{}, time.Time{}
		m.down(now, p, "left")
		return
	}
	p.lastRecv = now
	m.alive(now, p)
}

func (m *memberActor) grantOf(now time.Time, w *worker) *wire.Grant {
	return &wire.Grant{Worker: w.spec.Name, Token: w.g.max, HolderId: w.g.holder.id, HolderName: w.g.holder.name,
		RemainingNs: int64(w.g.remaining(now))}
}

func (m *memberActor) onAck(now time.Time, a *wire.HeartbeatAck) {
	p := m.peerOf(a.From)
	r := m.rounds[a.Round]
	if p == nil || r == nil || now.Sub(r.sent) > m.c.cfg.Timeout {
		return // too late: the health check failed
	}
	rejected := map[string]bool{}
	for _, g := range a.Rejected {
		rejected[g.Worker] = true
		if w := m.workers[g.Worker]; w != nil && g.Token > w.known {
			w.known = g.Token
		}
	}
	for name := range r.tokens {
		if !rejected[name] {
			r.granted[name]++
			m.renewed(now, m.workers[name], r, name)
		}
	}
	if r.sent.After(p.lastAcked) {
		p.lastAcked = r.sent
	}
	m.alive(now, p)
}

// onAcquire is a grantor's answer to an acquire. One that waits only for a
// grant about to run out (within Timeout) is answered when it has.
func (m *memberActor) onAcquire(now time.Time, req *wire.Acquire, sender *actor.PID) {
	w := m.workers[req.Worker]
	reply := &wire.AcquireReply{Worker: req.Worker, Token: req.Token, From: m.info}
	if w != nil && !m.granting(now) {
		// Refused until its quiet lease is over; the acquirer waits that long.
		reply.Current = m.grantOf(now, w)
		reply.Current.RemainingNs = max(reply.Current.RemainingNs, int64(m.grantsFrom.Sub(now)))
	} else if w != nil {
		h := m.ref(req.Holder)
		reply.Granted = w.g.acquire(now, h, req.Token, m.lt.lease)
		if !reply.Granted && w.g.held(now) && w.g.holder.id != h.id && req.Token > w.g.max &&
			w.g.remaining(now) <= m.c.cfg.Timeout && sender != nil {
			m.after(w.g.remaining(now), deferredAcquire{req: req, sender: sender})
			return
		}
		reply.Current = m.grantOf(now, w)
		if !reply.Granted && w.g.held(now) && sender != nil {
			if w.waiting == nil {
				w.waiting = map[string]*actor.PID{}
			}
			w.waiting[req.Holder.GetId()] = sender
		}
		if reply.Granted && w.ph == holding {
			// Cannot happen: this member grants itself while it holds.
			m.c.log.Error("cluster: granted a lease this member holds", "worker", req.Worker)
		}
	} else {
		reply.Current = &wire.Grant{Worker: req.Worker}
	}
	if sender != nil {
		m.ctx.Send(sender, reply)
	}
}

// onRelease frees a grant whose worker has been reaped, and tells the
// members refused while it was held that they may ask again. A release
// heard of from another grantor (already applied here, or not ours) only
// ends the wait for a retry.
func (m *memberActor) onRelease(now time.Time, r *wire.Release) {
	w := m.workers[r.Worker]
	if w == nil {
		return
	}
	if w.g.release(r.HolderId, r.Token) {
		for id, pid := range w.waiting {
			if id != m.self.id {
				m.ctx.Send(pid, r)
			}
		}
		w.waiting = nil
	}
	if w.ph == idle && w.retryT != nil {
		w.retryT.Stop()
		w.retryT = nil
		m.reconcile(now)
	}
}

// offerLeases offers each lease that the member gone, just taken as down,
// held here to the worker's new owner, once the grant has run out here:
// at once for those run out already (the usual case, since a member is
// taken as down no earlier than its grants here run out), when they do
// for the others.
func (m *memberActor) offerLeases(now time.Time, gone string) {
	if gone == "" {
		return
	}
	for _, name := range m.names {
		w := m.workers[name]
		if w.g.holder.id != gone {
			continue
		}
		if w.g.held(now) {
			if w.offerT != nil {
				w.offerT.Stop()
			}
			w.offerT = m.after(w.g.remaining(now), offerDue{name: name, gone: gone})
			continue
		}
		m.offer(now, w, gone)
	}
}

// offer grants w's lease, unasked, to its next owner (see successor),
// when the grant here was last the member gone's and has run out, and the
// next owner is another member that is up and has sent a heartbeat. The
// grant is an ordinary one (the lease is free here and the token is above
// any granted here), made before the owner asks; the owner counts it from
// its heartbeat round received last here, which it sent before this grant.
func (m *memberActor) offer(now time.Time, w *worker, gone string) {
	if m.leaving || gone == "" || w.g.holder.id != gone || w.g.held(now) {
		return
	}
	addr := m.successor(now, w.spec.Name, gone)
	p := m.peers[addr]
	if addr == "" || addr == m.self.addr || p == nil || !p.up || p.info == nil || p.lastRound == 0 || p.info.Id == gone {
		return
	}
	token := max(w.g.max, w.known) + 1
	if !m.granting(now) || !w.g.offer(now, m.ref(p.info), token, m.lt.lease) {
		return
	}
	m.ctx.Send(m.peerPID(addr), &wire.Offer{Worker: w.spec.Name, Token: token, From: m.info, HolderId: p.info.Id, Round: p.lastRound})
}

// successor returns the address of the member that owns name once the
// member gone is taken as down: the owner in this view if gone is down
// here already. While gone is still up here, it is the owner among the
// others only once gone has been silent (no heartbeat, no answer) for the
// lease less an interval: a member that heartbeats every interval and
// answers every heartbeat has all but certainly stopped, and is taken as
// down within the interval. "" for none.
func (m *memberActor) successor(now time.Time, name, gone string) string {
	rest := make([]*pcluster.Member, 0, len(m.topo))
	for _, mb := range m.topo {
		if mb.Id != gone {
			rest = append(rest, mb)
		}
	}
	if len(rest) == len(m.topo) {
		return m.owner(name)
	}
	if p := m.peerByID(gone); p == nil || now.Sub(p.heard()) < m.lt.lease-m.c.cfg.Interval {
		return ""
	}
	if len(rest) < m.c.cfg.Quorum || m.leaving {
		return ""
	}
	r := pcluster.NewRendezvous()
	r.UpdateMembers(rest)
	return r.GetByClusterIdentity(&pcluster.ClusterIdentity{Identity: name, Kind: workerKind})
}

// onOffer takes a grant offered unasked. It counts at once toward an
// acquire under its token; an idle member keeps it for its next acquire
// (which it starts now if it owns the worker), for at most a lease. An
// offer that this member cannot use (to an earlier process at its
// address, while leaving, or under a token below one granted here since)
// is handed back.
func (m *memberActor) onOffer(now time.Time, o *wire.Offer) {
	w := m.workers[o.Worker]
	if w == nil {
		return
	}
	from := o.From.GetId()
	counted, known := m.sentAt[o.Round]
	if !known {
		counted = time.Time{}
	}
	switch {
	case o.HolderId != m.self.id || m.leaving:
	case w.ph == acquiring && w.token == o.Token:
		if !w.granted[from] && m.countable(now, w, counted) {
			w.granted[from] = true
			if counted.Before(w.sent) {
				w.sent = counted
			}
			m.checkQuorum(now, w)
		} // otherwise the acquire sent to it is answered with this grant
		return
	case w.ph == holding && w.token == o.Token:
		return
	case o.Token <= w.g.max:
		// A higher token was granted here since: of no use.
	case w.ph == idle || (w.ph == acquiring && o.Token > w.token):
		// While acquiring under a lower token, the grantor refuses that
		// one (it holds this offer for us), and the acquire starts again
		// under the offered token.
		w.offer = offer{from: from, addr: o.From.GetAddress(), token: o.Token, counted: counted, at: now}
		if w.ph == idle {
			if w.retryT != nil {
				w.retryT.Stop()
				w.retryT = nil
			}
			m.reconcile(now)
		}
		return
	}
	m.ctx.Send(m.peerPID(o.From.GetAddress()), &wire.Release{Worker: o.Worker, Token: o.Token, HolderId: o.HolderId})
}

// finishLeave ends a leave once no worker is held or stopping here: the
// peers are told this member is gone, and leaveDone is closed.
func (m *memberActor) finishLeave() {
	if !m.leaving || m.leaveDone == nil {
		return
	}
	for _, w := range m.workers {
		if w.ph == holding || w.ph == stopping {
			return
		}
	}
	hb := &wire.Heartbeat{From: m.info, Round: m.rn + 1, Leaving: true}
	for _, a := range m.targets() {
		m.ctx.Send(m.peerPID(a), hb)
	}
	m.stopTimers()
	close(m.leaveDone)
	m.leaveDone = nil
}

// publish stores the status that /cluster, Workers and Request read.
func (m *memberActor) publish(now time.Time) {
	s := &snapshot{self: m.self, placements: map[string]Placement{}}
	s.members = append(s.members, MemberStatus{ID: m.self.id, Name: m.self.name, Address: m.self.addr, Alive: !m.leaving,
		Since: time.Unix(0, m.info.GetStartedUnixNano())})
	for _, a := range m.sortedPeers() {
		p := m.peers[a]
		ms := MemberStatus{Address: a, Alive: p.up, Since: p.since}
		if p.info != nil {
			ms.ID, ms.Name = p.info.Id, p.info.Name
		}
		s.members = append(s.members, ms)
	}
	for _, name := range m.names {
		w := m.workers[name]
		pl := Placement{Worker: name}
		switch {
		case w.ph == holding:
			pl.Member, pl.MemberID, pl.Address, pl.Token, pl.Here = m.self.name, m.self.id, m.self.addr, w.token, true
			pl.State, pl.PID = w.state, w.pid
		case w.g.held(now) && w.g.holder.id != m.self.id:
			pl.Member, pl.MemberID, pl.Address, pl.Token = w.g.holder.name, w.g.holder.id, w.g.holder.addr, w.g.token
			if w.remote.holder.id == w.g.holder.id && w.remote.token == w.g.token {
				_ = pl.State.UnmarshalText([]byte(w.remote.state))
			}
		}
		s.placements[name] = pl
		s.order = append(s.order, name)
	}
	held := 0
	for _, w := range m.workers {
		if w.ph == holding {
			held++
		}
	}
	m.c.metrics.placements.Set(float64(held))
	m.c.snap.Store(s)
}

func (m *memberActor) sortedPeers() []string {
	out := make([]string, 0, len(m.peers))
	for a := range m.peers {
		out = append(out, a)
	}
	if m.static {
		return m.order
	}
	sort.Strings(out)
	return out
}
