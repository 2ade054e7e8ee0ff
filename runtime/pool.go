package runtime

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The warm pool: children started ahead of time that have completed the
// handshake and built their actor system, waiting idle for a worker. A
// child's exec and package init cost milliseconds (FACTS.md: ~4 ms to main,
// ~8.5 ms to a running actor system); assigning an idle child costs one
// frame. Every child runs at most one worker in its life: an idle child
// becomes a worker's process and is never returned to the pool.
//
// Idle children obey the rules running ones do: they are in their own
// process group, die with the postmaster, are reaped, are killed at
// shutdown, and count in the metrics. One that dies while idle is simply
// replaced; it never triggers a worker restart or an all-for-one reset.
// The pool refills through the server loop, under the same start throttle
// as workers, after the pending starts.

// poolDeficit is how many idle children the pool lacks.
func (pm *postmaster) poolDeficit() int {
	if pm.shutdown != 0 {
		return 0
	}
	return pm.rt.cfg.WarmPool - len(pm.pool) - len(pm.poolStarting) - pm.poolSpawns
}

func (pm *postmaster) spawnIdle() {
	pm.nextProc++
	pm.spawning++
	pm.poolSpawns++
	rt := pm.rt
	rt.spawner.reqs <- spawnRequest{id: pm.nextProc, reply: func(p *proc, err error) {
		rt.tell(msgSpawned{p: p, err: err})
	}}
	pm.observePool()
}

func (pm *postmaster) poolSpawned(m msgSpawned) {
	pm.poolSpawns--
	defer pm.observePool()
	if m.err != nil {
		pm.rt.log.Error("runtime: could not start an idle child", "err", m.err)
		pm.maybeShutdownDone()
		// Retried by a later server-loop iteration; a timer keeps a
		// failing spawn (EMFILE) from spinning.
		pm.poolRetry()
		return
	}
	p := m.p
	pm.live++
	close(p.adopted)
	if pm.shutdown != 0 {
		p.cause = ReasonShutdown
		p.killGroup()
		return
	}
	pm.poolStarting = append(pm.poolStarting, p)
}

// poolRetry schedules a refill after a failed idle spawn.
func (pm *postmaster) poolRetry() {
	if pm.poolTimer != nil || pm.shutdown != 0 {
		return
	}
	rt := pm.rt
	pm.poolTimer = time.AfterFunc(100*time.Millisecond, func() { rt.tell(msgTick{}) })
}

// idle handles a child's Idle frame: a pool child is ready for a worker.
func (pm *postmaster) idle(p *proc) {
	if p.slot != nil {
		return // a cold child; its assignment is on its way
	}
	i := slices.Index(pm.poolStarting, p)
	if i < 0 {
		return
	}
	pm.poolStarting = slices.Delete(pm.poolStarting, i, i+1)
	pm.pool = append(pm.pool, p)
	p.idleReady.Store(true)
	pm.observePool()
	if len(pm.queue) > 0 && pm.ctx != nil {
		pm.scheduleTick(pm.ctx) // a throttled start can take it
	}
}

// takeIdle returns an idle child for a worker, or nil, and lets the server
// loop refill the pool.
func (pm *postmaster) takeIdle() *proc {
	if len(pm.pool) == 0 {
		return nil
	}
	p := pm.pool[0]
	pm.pool = slices.Delete(pm.pool, 0, 1)
	p.idleReady.Store(false)
	pm.observePool()
	if pm.ctx != nil {
		pm.scheduleTick(pm.ctx)
	}
	return p
}

// idleExited handles the exit of a child that never had a worker.
func (pm *postmaster) idleExited(ctx actor.Context, p *proc, m msgProcExited) {
	if i := slices.Index(pm.pool, p); i >= 0 {
		pm.pool = slices.Delete(pm.pool, i, i+1)
	}
	p.idleReady.Store(false)
	if i := slices.Index(pm.poolStarting, p); i >= 0 {
		pm.poolStarting = slices.Delete(pm.poolStarting, i, i+1)
	}
	pm.observePool()
	if pm.shutdown == 0 && p.cause == "" {
		pm.rt.log.Warn("runtime: idle child died; replacing it", "pid", p.pid, "status", fmt.Sprintf("%#x", uint32(m.status)))
		pm.rt.metrics.idleLost.Inc()
	}
	if pm.poolDeficit() > 0 {
		pm.scheduleTick(ctx)
	}
}

func (pm *postmaster) killIdle() {
	for _, p := range append(slices.Clone(pm.pool), pm.poolStarting...) {
		p.cause = ReasonShutdown
		p.killGroup()
	}
	if pm.poolTimer != nil {
		pm.poolTimer.Stop()
	}
}

func (pm *postmaster) observePool() {
	pm.rt.metrics.poolIdle.Set(float64(len(pm.pool)))
	pm.rt.metrics.poolStarting.Set(float64(len(pm.poolStarting) + pm.poolSpawns))
	pm.rt.status.pool(len(pm.pool), len(pm.poolStarting)+pm.poolSpawns)
}

// IdleChildren returns the pids of the warm pool's idle children: spawned,
// handshaken and waiting for a worker.
func (rt *Runtime) IdleChildren() []int {
	var pids []int
	rt.forEachProc(func(p *proc) {
		if p.idleReady.Load() {
			pids = append(pids, p.pid)
		}
	})
	return pids
}
