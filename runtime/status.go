package runtime

import (
	"sync/atomic"

	"github.com/bgworker/bgworker/phases"
)

// Runtime states, as Status.State names them.
const (
	StateNew          = "new"           // New returned it; Start not called yet
	StateRunning      = "running"       // started, not shutting down
	StateShuttingDown = "shutting_down" // a shutdown has begun (or a critical worker failed)
	StateShutDown     = "shut_down"     // Shutdown has released everything, or Start failed
)

// Status is the runtime as a whole, beside the per-worker rows of
// Workers: what an operator looks at first. GET /status serves it as JSON.
type Status struct {
	// State is one of StateNew, StateRunning, StateShuttingDown and
	// StateShutDown.
	State string `json:"state"`
	// Phase is the start phase entered last; zero ("none") before Start.
	Phase phases.Phase `json:"phase"`
	// Segment is the current shared-memory segment; zero values before
	// ConsistentState or when no worker uses shared memory.
	Segment SegmentStatus `json:"segment"`
	// Resets counts the all-for-one resets begun so far.
	Resets uint64 `json:"resets"`
	// Resetting is true from the start of an all-for-one reset until every
	// member of the shared-memory group runs again on the new segment.
	Resetting bool `json:"resetting"`
	// GroupFailed is true once the shared-memory group was given up
	// because resets came more often than Config.GroupResetIntensity.
	GroupFailed bool `json:"group_failed"`
	// Pool is the warm pool of idle children.
	Pool PoolStatus `json:"pool"`
}

// SegmentStatus describes the current shared-memory segment.
type SegmentStatus struct {
	Generation uint64 `json:"generation"` // zero = no segment; +1 per reset
	Bytes      int    `json:"bytes"`
}

// PoolStatus counts the warm pool's children.
type PoolStatus struct {
	Idle     int `json:"idle"`     // handshaken, waiting for a worker
	Starting int `json:"starting"` // spawned (or being spawned), not yet idle
	Target   int `json:"target"`   // Config.WarmPool; zero = no pool
}

// statusCells holds what Status reads and only the postmaster writes, as
// atomics, so that Status never waits for the postmaster. Each value is
// stored by the observer where the change is made. The phase and the
// segment have atomics of their own.
type statusCells struct {
	resets       atomic.Uint64
	resetting    atomic.Bool
	groupFailed  atomic.Bool
	poolIdle     atomic.Int64
	poolStarting atomic.Int64
}

// resetBegun records the start of an all-for-one reset.
func (c *statusCells) resetBegun() {
	c.resets.Add(1)
	c.resetting.Store(true)
}

// groupGivenUp records that the shared-memory group was failed.
func (c *statusCells) groupGivenUp() {
	c.resetting.Store(false)
	c.groupFailed.Store(true)
}

// pool records the warm pool's counts.
func (c *statusCells) pool(idle, starting int) {
	c.poolIdle.Store(int64(idle))
	c.poolStarting.Store(int64(starting))
}

// Status returns the runtime's state, phase, shared-memory segment, reset
// count and warm-pool counts. Like Workers, it never waits for the
// postmaster: each value is published where it changes, and Status reads
// the latest of each (the values are not one snapshot taken together).
// It may be called at any time, before Start and after Shutdown too.
func (rt *Runtime) Status() Status {
	rt.mu.Lock()
	state := rt.state
	rt.mu.Unlock()
	st := Status{
		State:       [...]string{StateNew, StateRunning, StateShuttingDown, StateShutDown}[state],
		Phase:       phases.Phase(rt.phase.Load()),
		Resets:      rt.status.resets.Load(),
		Resetting:   rt.status.resetting.Load(),
		GroupFailed: rt.status.groupFailed.Load(),
		Pool: PoolStatus{
			Idle:     int(rt.status.poolIdle.Load()),
			Starting: int(rt.status.poolStarting.Load()),
			Target:   rt.cfg.WarmPool,
		},
	}
	if seg := rt.pm.group.cur.Load(); seg != nil {
		st.Segment = SegmentStatus{Generation: seg.Generation(), Bytes: seg.Size()}
	}
	return st
}
