package runtime

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// The warm pool: children started ahead of time that have completed the
// handshake and built their actor system, waiting idle for a worker. A
// child's exec and package init cost milliseconds; assigning an idle child
// costs one frame. Every child runs at most one worker in its life: an
// idle child becomes a worker's child and never returns to the pool.
//
// Idle children obey the rules running ones do: they are in their own
// process group, die with the postmaster, are reaped, are killed at
// shutdown, and count in the metrics. One that dies while idle is simply
// replaced; it never triggers a worker restart or an all-for-one reset.
// The pool refills through the server loop, under the same start throttle
// as workers, after the pending starts, and only while no worker is
// starting: refills are insurance for later starts and must not compete
// with the ones now.

// warmPool is the pool's state. The postmaster owns it.
type warmPool struct {
	target   int
	idle     []*kid // handshaken, waiting for a worker, oldest first
	starting []*kid // spawned, not yet idle
	spawns   int    // idle-child launches not yet answered
	retry    launch.Timer
	pids     atomic.Pointer[[]int] // the idle children's pids, for IdleChildren
}

// deficit is how many idle children the pool lacks.
func (p *warmPool) deficit() int { return p.target - len(p.idle) - len(p.starting) - p.spawns }

// publish republishes the idle pids.
func (p *warmPool) publish() {
	pids := make([]int, len(p.idle))
	for i, k := range p.idle {
		pids[i] = k.c.PID()
	}
	p.pids.Store(&pids)
}

// take removes and returns the oldest idle child, or nil.
func (p *warmPool) take() *kid {
	if len(p.idle) == 0 {
		return nil
	}
	k := p.idle[0]
	p.idle = slices.Delete(p.idle, 0, 1)
	p.publish()
	return k
}

// drop forgets k, wherever it is in the pool; it reports whether it was.
func (p *warmPool) drop(k *kid) bool {
	in := false
	if i := slices.Index(p.idle, k); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
		p.publish()
		in = true
	}
	if i := slices.Index(p.starting, k); i >= 0 {
		p.starting = slices.Delete(p.starting, i, i+1)
		in = true
	}
	return in
}

func (pm *postmaster) poolDeficit() int {
	if pm.shutdown != 0 {
		return 0
	}
	return pm.pool.deficit()
}

func (pm *postmaster) spawnIdle() {
	pm.pool.spawns++
	pm.launch(nil)
	pm.obs.pool(pm)
}

func (pm *postmaster) poolSpawned(c launch.Child, err error) {
	pm.pool.spawns--
	defer pm.obs.pool(pm)
	if err != nil {
		pm.rt.log.Error("runtime: could not start an idle child", "err", err)
		pm.maybeShutdownDone()
		// Retried by a later server-loop iteration; a timer keeps a
		// failing spawn (EMFILE) from spinning.
		if pm.pool.retry == nil && pm.shutdown == 0 {
			rt := pm.rt
			pm.pool.retry = pm.clock.AfterFunc(100*time.Millisecond, func() { rt.tell(msgTick{}) })
		}
		return
	}
	k := pm.adoptChild(c)
	if pm.shutdown != 0 {
		k.cause = ReasonShutdown
		c.Kill()
		return
	}
	pm.pool.starting = append(pm.pool.starting, k)
}

// idle handles a child's Idle report: a pool child is ready for a worker.
func (pm *postmaster) idle(k *kid) {
	if k.slot != nil {
		return // a cold child; its assignment is on its way
	}
	i := slices.Index(pm.pool.starting, k)
	if i < 0 {
		return
	}
	pm.pool.starting = slices.Delete(pm.pool.starting, i, i+1)
	pm.pool.idle = append(pm.pool.idle, k)
	pm.pool.publish()
	pm.obs.pool(pm)
	if len(pm.queue) > 0 {
		pm.scheduleTick() // a throttled start can take it
	}
}

// takeIdle returns an idle child for a worker, or nil, and lets the server
// loop refill the pool.
func (pm *postmaster) takeIdle() *kid {
	k := pm.pool.take()
	if k == nil {
		return nil
	}
	pm.obs.pool(pm)
	pm.scheduleTick()
	return k
}

// idleExited handles the exit of a child that never had a worker.
func (pm *postmaster) idleExited(k *kid, e launch.Exit) {
	pm.pool.drop(k)
	pm.obs.pool(pm)
	if pm.shutdown == 0 && k.cause != ReasonShutdown {
		// Died idle, or killed idle for a fault of its own (silence, a
		// protocol error): lost either way, and replaced.
		why := k.cause
		if why == "" {
			why = "died"
		}
		pm.rt.log.Warn("runtime: idle child lost; replacing it", "pid", k.c.PID(), "why", why, "status", fmt.Sprintf("%#x", uint32(e.Status)))
		pm.obs.idleLost()
	}
	if pm.poolDeficit() > 0 {
		pm.scheduleTick()
	}
}

// killIdle kills every pool child, at shutdown.
func (pm *postmaster) killIdle() {
	for _, k := range append(slices.Clone(pm.pool.idle), pm.pool.starting...) {
		k.cause = ReasonShutdown
		k.c.Kill()
	}
	if pm.pool.retry != nil {
		pm.pool.retry.Stop()
		pm.pool.retry = nil
	}
}

// IdleChildren returns the pids of the warm pool's idle children: spawned,
// handshaken and waiting for a worker.
func (rt *Runtime) IdleChildren() []int {
	if p := rt.pm.pool.pids.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}
