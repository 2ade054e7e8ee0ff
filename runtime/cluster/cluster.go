package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime"
)

// workerKind is the protoactor kind that every member hosting
// cluster-scoped workers announces; placements hash over those members.
const workerKind = "bgworker-worker"

// Errors of the Cluster's methods.
var (
	ErrNotStarted = errors.New("cluster: not started")
	ErrShutdown   = errors.New("cluster: shut down")
	ErrNotPlaced  = errors.New("cluster: worker not placed on any member")
	ErrUnknown    = errors.New("cluster: no such cluster-scoped worker")
)

// Cluster is this process's membership in a cluster of runtimes: one
// postmaster per machine is one member. Create it with New before the
// runtime starts, Start it after, and Shutdown it before the runtime.
// Its methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	rt    *runtime.Runtime
	log   *slog.Logger
	csys  *actor.ActorSystem // the member's own actor system, with the remote
	pc    *pcluster.Cluster
	specs []actors.Spec
	names map[string]bool
	grace time.Duration // StopTimeout of a worker whose spec has none

	pid     *actor.PID // the member actor
	snap    atomic.Pointer[snapshot]
	metrics *metrics

	mu    sync.Mutex
	state int // 0 new, 1 started, 2 shut down, 3 its Start failed
	subs  []*func(Event)

	ctx    context.Context // cancelled by Shutdown once it gives up waiting; bounds the runtime calls
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines calling the runtime
	tickWG sync.WaitGroup
	stopT  chan struct{}
}

// New prepares rt to be a member: it adds GET /cluster to rt's HTTP
// endpoint, the cluster-scoped workers to rt.Workers, and the cluster's
// metrics to rt's registry. It must be called before rt.Start (it fails
// with an error wrapping runtime.ErrAlreadyStarted after). Nothing is
// bound or sent until Start.
func New(rt *runtime.Runtime, cfg Config) (*Cluster, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	specs := cfg.Workers
	if specs == nil {
		specs = registered()
	}
	c := &Cluster{cfg: cfg, rt: rt, log: cfg.Logger.With("member", cfg.Name), names: map[string]bool{},
		grace: cfg.Lease / 4, stopT: make(chan struct{})}
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		if _, ok := actors.Lookup(s.Name); !ok {
			return nil, fmt.Errorf("%w: worker %q is not registered or defined in this binary: add it with cluster.Register", ErrInvalidConfig, s.Name)
		}
		if c.names[s.Name] {
			return nil, fmt.Errorf("%w: worker %q listed twice", ErrInvalidConfig, s.Name)
		}
		if s.StopTimeout > c.grace {
			return nil, fmt.Errorf("%w: worker %q: StopTimeout %v exceeds a quarter of the Lease (%v); a holder that loses its lease must have its worker reaped before the lease runs out", ErrInvalidConfig, s.Name, s.StopTimeout, c.grace)
		}
		if s.StopTimeout == 0 {
			// The default grace period (5 s) would outlast the lease: the
			// holder's stop would always be due, and it would give the
			// worker up as soon as it took it.
			s.StopTimeout = c.grace
		}
		c.names[s.Name] = true
		c.specs = append(c.specs, s)
	}
	if err := rt.HandleHTTP("/cluster", c.httpHandler()); err != nil {
		return nil, fmt.Errorf("cluster: New must be called before the runtime starts: %w", err)
	}
	host, port, _ := splitHostPort(cfg.Bind)
	c.csys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(demote{h: cfg.Logger.Handler()})
	}), actor.WithDeadLetterThrottleInterval(100*time.Millisecond))
	provider := cfg.Provider
	if provider == nil {
		provider = &StaticPeers{}
	}
	kinds := append([]*pcluster.Kind{pcluster.NewKind(workerKind, actor.PropsFromFunc(func(actor.Context) {}))}, cfg.Kinds...)
	// The advertised address is Bind as written, so that every member
	// names every other exactly as Peers does.
	pcfg := pcluster.Configure(cfg.ClusterName, provider, disthash.New(), remote.Configure(host, port, remote.WithAdvertisedHost(cfg.Bind)),
		pcluster.WithKinds(kinds...), pcluster.WithRequestTimeout(cfg.RequestTimeout))
	c.pc = pcluster.New(c.csys, pcfg)
	c.metrics = newMetrics(rt.Registerer())
	c.installRoutes()
	rt.DecorateWorkers(c.decorate)
	c.snap.Store(&snapshot{placements: map[string]Placement{}})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start joins the cluster: it binds Config.Bind, starts protoactor's
// cluster member (which takes about a second), then heartbeats and
// placement. rt must have started. A second call fails.
func (c *Cluster) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	if c.state != 0 {
		c.mu.Unlock()
		return fmt.Errorf("cluster: Start called twice or after Shutdown")
	}
	c.state = 1
	c.mu.Unlock()
	if _, err := c.rt.WorkersContext(ctx); err != nil {
		c.mu.Lock()
		c.state = 0 // may be called again once the runtime runs
		c.mu.Unlock()
		return fmt.Errorf("cluster: start the runtime first: %w", err)
	}
	func() {
		// protoactor-go panics when it cannot bind or its provider fails.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("cluster: start member at %s: %v", c.cfg.Bind, r)
			}
		}()
		c.pc.StartMember()
	}()
	if err != nil {
		c.failStart()
		return err
	}
	// protoactor's gossip is not used here (membership comes from the
	// heartbeats, placement from the leases), and at this version it reads
	// the member list and the block list without their locks while the
	// provider updates them (data races under -race). Stop it before the
	// first topology update.
	c.pc.Gossip.Shutdown()
	m := newMemberActor(c)
	pid, err := c.csys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return m }), memberActorName)
	if err != nil {
		c.failStart()
		return fmt.Errorf("cluster: spawn the member actor: %w", err)
	}
	c.pid = pid
	c.csys.EventStream.Subscribe(func(evt any) {
		if t, ok := evt.(*pcluster.ClusterTopology); ok {
			c.csys.Root.Send(pid, topologyMsg{t: t})
		}
	})
	unsub := c.rt.Subscribe(func(e runtime.Event) {
		if we, ok := e.(runtime.WorkerEvent); ok && c.names[we.Name] {
			c.csys.Root.Send(pid, workerEvent{e: we})
		}
	})
	c.tickWG.Add(1)
	go func() {
		defer c.tickWG.Done()
		defer unsub()
		t := time.NewTicker(c.cfg.Interval)
		defer t.Stop()
		c.csys.Root.Send(pid, tick{})
		for {
			select {
			case <-t.C:
				c.csys.Root.Send(pid, tick{})
			case <-c.stopT:
				return
			case <-c.rt.Done():
				// The runtime stopped by itself (a critical worker): it
				// runs nothing more, so this member stops heartbeating.
				// Its leases lapse and the others take its workers over,
				// as from a member that died.
				c.log.Error("cluster: the runtime stopped; no more heartbeats from this member", "err", c.rt.Err())
				return
			}
		}
	}()
	c.log.Info("cluster: member started", "address", c.csys.Address(), "id", c.csys.ID, "peers", c.cfg.Peers, "quorum", c.cfg.Quorum)
	return nil
}

// Shutdown leaves the cluster: the workers placed here are stopped and
// reaped, their leases released (so that their new owners start them at
// once), the peers told that this member is gone, and the remote closed.
// Call it before the runtime's Shutdown. If ctx ends first, it gives up
// waiting for the workers (the runtime's shutdown still reaps them) and
// returns ctx's error. Later calls return nil.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	st := c.state
	c.state = 2
	c.mu.Unlock()
	switch st {
	case 0:
		c.csys.Shutdown()
		c.rt.DecorateWorkers(nil)
		return nil
	case 2, 3:
		return nil
	}
	var ctxErr error
	done := make(chan struct{})
	c.csys.Root.Send(c.pid, leaveMsg{done: done})
	select {
	case <-done:
	case <-ctx.Done():
		ctxErr = fmt.Errorf("cluster: shutdown: %w", ctx.Err())
	}
	close(c.stopT)
	c.tickWG.Wait()
	c.cancel()
	c.wg.Wait()
	_ = c.csys.Root.StopFuture(c.pid).Wait()
	c.rt.DecorateWorkers(nil)
	c.pc.Shutdown(false) // not graceful: protoactor's graceful leave sleeps 2 s; the leases are released already
	c.log.Info("cluster: member left")
	return ctxErr
}

// failStart releases what a failed Start took; Shutdown has nothing left
// to do. protoactor may have half-started its member, so only the actor
// system is stopped (its remote may have no server to stop).
func (c *Cluster) failStart() {
	c.mu.Lock()
	c.state = 3
	c.mu.Unlock()
	c.rt.DecorateWorkers(nil)
	c.csys.Shutdown()
}

// goRuntime runs fn, which calls the runtime, on a goroutine of its own.
func (c *Cluster) goRuntime(fn func(ctx context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn(c.ctx)
	}()
}

// Event is what Subscribe delivers: a MemberEvent, a PlacementEvent or a
// WorkerReady.
type Event interface{ clusterEvent() }

// MemberEvent is a member coming up or going down in this member's view.
type MemberEvent struct {
	Member, Address, ID string
	Up                  bool
	At                  time.Time
}

// PlacementEvent is a worker placed on this member (Here) under a token,
// or stopped and released here (!Here).
type PlacementEvent struct {
	Worker, Member string
	Token          uint64
	Here           bool
	At             time.Time
}

// WorkerReady is a cluster-scoped worker placed here reporting ready.
type WorkerReady struct {
	Worker, Member string
	Token          uint64
	PID            int
	At             time.Time
}

func (MemberEvent) clusterEvent()    {}
func (PlacementEvent) clusterEvent() {}
func (WorkerReady) clusterEvent()    {}

// Subscribe calls fn with every Event of this member until the returned
// function is called. fn runs inside the member's actor: it must be quick
// and must not call the Cluster.
func (c *Cluster) Subscribe(fn func(Event)) (unsubscribe func()) {
	p := &fn
	c.mu.Lock()
	c.subs = append(c.subs, p)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, s := range c.subs {
			if s == p {
				c.subs = append(c.subs[:i:i], c.subs[i+1:]...)
				return
			}
		}
	}
}

func (c *Cluster) emit(e Event) {
	c.mu.Lock()
	subs := c.subs
	c.mu.Unlock()
	for _, s := range subs {
		(*s)(e)
	}
}

// System returns the member's own actor system (the one with the remote),
// for protoactor grains and raw remote requests.
func (c *Cluster) System() *actor.ActorSystem { return c.csys }

// Protoactor returns protoactor's cluster of this member.
func (c *Cluster) Protoactor() *pcluster.Cluster { return c.pc }

// Name returns this member's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// demote logs protoactor's records at debug level: its remote reports a
// lost connection to a member that died as an error, which here is the
// ordinary course of a failover (the member's own lines say what happened).
type demote struct{ h slog.Handler }

func (d demote) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}
func (d demote) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}
func (d demote) WithAttrs(a []slog.Attr) slog.Handler { return demote{h: d.h.WithAttrs(a)} }
func (d demote) WithGroup(n string) slog.Handler      { return demote{h: d.h.WithGroup(n)} }
