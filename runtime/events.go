package runtime

import (
	"time"

	"github.com/bgworker/bgworker/phases"
)

// Event is published on the runtime's event stream for every phase change,
// every worker state change, every shared-memory generation and reset, and
// the shutdown. The types are the ones in this file.
// Subscribe with Runtime.Subscribe; tests wait on events instead of sleeping.
type Event interface{ event() }

// WorkerEvent is one state change of one worker.
type WorkerEvent struct {
	Name        string
	Type        string
	Incarnation uint64
	PID         int // the process, when there is one
	From, To    WorkerState
	Exit        *Exit         // set when the change was caused by an exit
	Backoff     time.Duration // with To == Pending after an exit: the wait before the restart
	Cold        bool          // with To == Starting: no idle child was available
	At          time.Time
}

// PhaseEvent is published when the runtime enters a phase.
type PhaseEvent struct {
	Phase phases.Phase
	Reset bool // re-entered by an all-for-one reset
	// Adopted: published once by the new image of an in-place upgrade for
	// the phase it took over; nothing was entered again.
	Adopted bool
	At      time.Time
}

// ShutdownEvent is published when a shutdown begins or gets harder, and
// once more with Done when every child has been reaped.
type ShutdownEvent struct {
	Mode phases.ShutdownMode
	Done bool
	At   time.Time
}

// SegmentEvent is published when a segment generation is built: at
// ConsistentState, and after every all-for-one reset (Reset true). Host code
// that reads shared memory takes the new segment from Runtime.Segment.
type SegmentEvent struct {
	Generation uint64
	Size       int
	Reset      bool
	// Adopted: published once by the new image of an in-place upgrade for
	// the segment it took over; nothing was built.
	Adopted bool
	At      time.Time
}

// GroupResetEvent is published when an all-for-one reset begins (Cause is
// the crashed worker) and when the group is given up because resets came
// too often (Failed true).
type GroupResetEvent struct {
	Cause      string
	Generation uint64 // the generation being abandoned
	Failed     bool
	At         time.Time
}

func (WorkerEvent) event()     {}
func (PhaseEvent) event()      {}
func (ShutdownEvent) event()   {}
func (SegmentEvent) event()    {}
func (GroupResetEvent) event() {}
