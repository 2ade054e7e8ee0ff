package runtime

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// pmMsg is the closed set of messages the postmaster handles: the API's
// requests, its own timers and ticks, and the launcher's reports. Each
// implements the marker method, and postmaster.handle switches over them
// all.
type pmMsg interface{ pmMsg() }

// Requests from the API. Each carries the channel its answer goes to.
type (
	msgStart   struct{ reply chan error }
	msgAdvance struct {
		phase phases.Phase
		reply chan error
	}
	msgStartWorker struct {
		spec    actors.Spec
		code    string
		watcher *actor.PID // with StartWatched: gets every event from the first
		reply   chan startReply
	}
	msgStop struct {
		name  string
		gen   uint64 // 0: whatever generation is current
		reply chan error
	}
	msgPing struct{ reply chan struct{} } // answered at once: the postmaster is serving
	msgWait struct {
		name    string
		gen     uint64
		started bool // wait for running (else for a terminal state)
		reply   chan waitReply
	}
	msgUnwait struct {
		name  string
		reply chan waitReply // the waiter's reply channel: its identity
	}
	msgWatch struct {
		name  string
		gen   uint64
		pid   *actor.PID
		reply chan error
	}
	msgReload   struct{ reply chan int } // answered with the number of workers told
	msgShutdown struct {
		mode  phases.ShutdownMode
		cause error
	}
	msgFunc struct{ fn func(pm *postmaster) } // runs fn inside the postmaster (tests, snapshots)
	// The in-place upgrade's: quiet the postmaster (answered once nothing
	// is under way), carry on after an upgrade that did not happen, adopt
	// an earlier image's state, and roll the workers onto the new code.
	msgUpgradeQuiesce struct{ reply chan error }
	msgUpgradeResume  struct{}
	msgAdopt          struct {
		st    *upgradeState
		kids  []launch.Child
		reply chan error
	}
	msgRoll struct {
		policy RollPolicy
		reply  chan error
	}
)

// The postmaster's own: the next server-loop iteration, and its timers.
type (
	msgTick  struct{}
	msgTimer struct {
		s    *slot
		inc  uint64
		kind timerKind
	}
)

// Reports of the launcher (launch.Reporter), in order for each child.
type (
	msgSpawned struct {
		id  uint64
		c   launch.Child
		err error
	}
	msgIdle     struct{ c launch.Child }
	msgReady    struct{ c launch.Child }
	msgActivity struct {
		c    launch.Child
		at   time.Time
		text string
	}
	msgFault struct {
		c   launch.Child
		err error
	}
	msgExited struct {
		c launch.Child
		e launch.Exit
	}
)

func (msgStart) pmMsg()          {}
func (msgAdvance) pmMsg()        {}
func (msgStartWorker) pmMsg()    {}
func (msgStop) pmMsg()           {}
func (msgPing) pmMsg()           {}
func (msgWait) pmMsg()           {}
func (msgUnwait) pmMsg()         {}
func (msgWatch) pmMsg()          {}
func (msgReload) pmMsg()         {}
func (msgShutdown) pmMsg()       {}
func (msgFunc) pmMsg()           {}
func (msgUpgradeQuiesce) pmMsg() {}
func (msgUpgradeResume) pmMsg()  {}
func (msgAdopt) pmMsg()          {}
func (msgRoll) pmMsg()           {}
func (msgTick) pmMsg()           {}
func (msgTimer) pmMsg()          {}
func (msgSpawned) pmMsg()        {}
func (msgIdle) pmMsg()           {}
func (msgReady) pmMsg()          {}
func (msgActivity) pmMsg()       {}
func (msgFault) pmMsg()          {}
func (msgExited) pmMsg()         {}

type timerKind uint8

const (
	timerRestart      timerKind = iota + 1 // a backoff ended: start again
	timerStartTimeout                      // no ready within StartTimeout: kill
	timerGrace                             // no exit within the grace period: kill
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

// reporter turns the launcher's reports into postmaster messages. Reports
// of a child's progress run the postmaster's mailbox on the reporting
// goroutine when it is idle (Runtime.tellAndRun); the spawn report comes
// from the spawner's locked thread and a fault from the watchdog, which
// must not, so those are only sent.
type reporter struct{ rt *Runtime }

func (r reporter) Spawned(id uint64, c launch.Child, err error) {
	r.rt.tell(msgSpawned{id: id, c: c, err: err})
}
func (r reporter) Idle(c launch.Child)  { r.rt.tellAndRun(msgIdle{c: c}) }
func (r reporter) Ready(c launch.Child) { r.rt.tellAndRun(msgReady{c: c}) }
func (r reporter) Activity(c launch.Child, at time.Time, text string) {
	r.rt.tell(msgActivity{c: c, at: at, text: text})
}
func (r reporter) Fault(c launch.Child, err error)      { r.rt.tell(msgFault{c: c, err: err}) }
func (r reporter) Exited(c launch.Child, e launch.Exit) { r.rt.tellAndRun(msgExited{c: c, e: e}) }
