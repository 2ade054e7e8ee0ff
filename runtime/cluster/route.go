package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// routeAddress is the actor address of the PIDs that Cluster.PID returns:
// such a PID resolves, in the runtime's actor system and in the member's,
// to the member that holds the worker now.
const routeAddress = "bgworker-cluster"

// deliverID is the id under which each member receives, from other
// members, the messages for one of its workers. Messages that arrive there
// are delivered to the local worker or answered with a dead letter, never
// sent on, so two members with different views cannot bounce a message.
func deliverID(name string) string { return "bgworker-deliver/" + name }

// installRoutes registers the resolvers and the delivery processes. The
// runtime's system gets two resolvers: one for Cluster.PID, one that
// sends to any host:port address through the member's remote, so that a
// worker's reply reaches a requester on another member.
func (c *Cluster) installRoutes() {
	rtsys := c.rt.System()
	resolveRoute := func(pid *actor.PID) (actor.Process, bool) {
		if pid.Address != routeAddress || !c.names[pid.Id] {
			return nil, false
		}
		return &routeProcess{c: c, name: pid.Id}, true
	}
	rtsys.ProcessRegistry.RegisterAddressResolver(resolveRoute)
	rtsys.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		if !strings.Contains(pid.Address, ":") {
			return nil, false
		}
		return c.csys.ProcessRegistry.Get(pid)
	})
	c.csys.ProcessRegistry.RegisterAddressResolver(resolveRoute)
	for name := range c.names {
		c.csys.ProcessRegistry.Add(&deliverProcess{c: c, name: name}, deliverID(name))
	}
}

// PID returns a PID by which any actor of this process (in the runtime's
// actor system or the member's) sends to the named cluster-scoped worker,
// wherever it runs: a message is delivered to the worker actor in its
// child process on the member that holds it now, and a request gets its
// response back. Like runtime.PID it follows the name across restarts and
// failovers. While no member runs the worker, requests get a dead letter
// and tells are dropped. Delivery is at most once.
func (c *Cluster) PID(name string) *actor.PID { return actor.NewPID(routeAddress, name) }

// holder returns the address of the member holding name in this member's
// view ("" for none) and whether that is this member.
func (c *Cluster) holder(name string) (string, bool) {
	pl, ok := c.snap.Load().placements[name]
	if !ok {
		return "", false
	}
	return pl.Address, pl.Here
}

// deliverLocal hands msg (an envelope or a plain message) to the worker's
// bridge in the runtime.
func (c *Cluster) deliverLocal(name string, msg any) {
	pid := c.rt.PID(name)
	p, _ := c.rt.System().ProcessRegistry.Get(pid)
	p.SendUserMessage(pid, msg)
}

// deadLetter answers the sender of msg, if any, with a dead letter.
func deadLetter(sys *actor.ActorSystem, msg any) {
	if _, _, sender := actor.UnwrapEnvelope(msg); sender != nil {
		sys.Root.Send(sender, &actor.DeadLetterResponse{})
	}
}

// remoteSender reports whether pid can be reached from another member.
func remoteSender(pid *actor.PID) bool { return pid == nil || strings.Contains(pid.Address, ":") }

// routeProcess is the target of a Cluster.PID.
type routeProcess struct {
	c    *Cluster
	name string
}

func (p *routeProcess) SendUserMessage(_ *actor.PID, msg any) {
	c := p.c
	addr, here := c.holder(p.name)
	switch {
	case here:
		c.deliverLocal(p.name, msg)
	case addr == "":
		deadLetter(c.rt.System(), msg)
	default:
		target := actor.NewPID(addr, deliverID(p.name))
		_, m, sender := actor.UnwrapEnvelope(msg)
		if remoteSender(sender) {
			c.csys.Root.Send(target, msg)
			return
		}
		// The sender is an actor of the runtime's system, which has no
		// remote address: relay its request and bring the answer back.
		c.goRuntime(func(ctx context.Context) {
			r, err := c.csys.Root.RequestFuture(target, m, c.cfg.RequestTimeout).Result()
			if err != nil {
				r = &actor.DeadLetterResponse{}
			}
			c.rt.System().Root.Send(sender, r)
		})
	}
}
func (p *routeProcess) SendSystemMessage(*actor.PID, any) {}
func (p *routeProcess) Stop(*actor.PID)                   {}

// deliverProcess receives, on the holder, the messages other members send
// to one of its workers.
type deliverProcess struct {
	c    *Cluster
	name string
}

func (p *deliverProcess) SendUserMessage(_ *actor.PID, msg any) {
	if _, here := p.c.holder(p.name); here {
		p.c.deliverLocal(p.name, msg)
		return
	}
	deadLetter(p.c.csys, msg)
}
func (p *deliverProcess) SendSystemMessage(*actor.PID, any) {}
func (p *deliverProcess) Stop(*actor.PID)                   {}

// Request sends msg to the named cluster-scoped worker, wherever it runs,
// and returns its response (or ctx's error). While the worker is placed
// nowhere or is not running where it is placed (during a failover), the
// request is tried again until ctx is done; a request that may have been
// delivered (a timeout) is never sent twice. Without a deadline in ctx,
// Config.RequestTimeout bounds it. Errors: ErrUnknown, ErrNotStarted,
// ErrNotPlaced or actor.ErrDeadLetter (wrapped with ctx's error) when ctx
// ended while the worker could not be reached, actor.ErrTimeout.
func (c *Cluster) Request(ctx context.Context, name string, msg any) (any, error) {
	if !c.names[name] {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	switch st {
	case 0:
		return nil, ErrNotStarted
	case 2, 3:
		return nil, ErrShutdown
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	var last error
	for {
		dl, _ := ctx.Deadline()
		timeout := time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("cluster: request to %q: %w (last: %v)", name, ctx.Err(), last)
		}
		addr, here := c.holder(name)
		var f *actor.Future
		switch {
		case here:
			f = c.rt.System().Root.RequestFuture(c.rt.PID(name), msg, timeout)
		case addr != "":
			f = c.csys.Root.RequestFuture(actor.NewPID(addr, deliverID(name)), msg, timeout)
		}
		if f != nil {
			r, err := f.Result()
			if !errors.Is(err, actor.ErrDeadLetter) {
				return r, err
			}
			last = actor.ErrDeadLetter
		} else {
			last = ErrNotPlaced
		}
		t := time.NewTimer(c.cfg.Interval / 4)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("cluster: request to %q: %w: %w", name, last, ctx.Err())
		}
	}
}
