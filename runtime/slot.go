package runtime

import (
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// exitHistory is how many exits a slot remembers.
const exitHistory = 8

// slot is one worker's entry in the postmaster's table: its spec, its
// state, its restart state, its current child. Only the postmaster touches
// it, while it handles a message (row excepted, which Workers reads).
type slot struct {
	spec    actors.Spec
	code    string // registered name of the code the child runs
	dynamic bool
	gen     uint64 // handle generation: unique per StartWorker / registration
	order   int    // position in the table

	state     WorkerState
	inc       uint64 // incarnations started; zero = never started
	kid       *kid   // its child while it has one; nil otherwise
	cause     string // why the postmaster is ending the current child, if it is; "" = it is not
	stopReq   bool   // stop requested: no restart
	reload    bool   // a reload asked while its child was being spawned: told once it has one
	backoff   *actors.Backoff
	timer     launch.Timer // pending restart, start timeout or grace; nil = none
	timerKind timerKind
	nextStart time.Time // when the pending restart is due; zero = none
	queued    bool      // in the server loop's queue
	startedAt time.Time // when the current (or last) incarnation began starting
	restarts  int
	exits     []Exit // the last exitHistory exits, oldest first
	activity  string // what the worker last said it is doing; "" = nothing since its last state change
	actAt     time.Time
	waiters   []*waiter
	watchers  []*actor.PID
	route     *route // published in Runtime.routes while running

	// row is what Workers() reads without asking the postmaster: an
	// immutable WorkerInfo, replaced whenever the slot changes.
	row atomic.Pointer[WorkerInfo]
}

// kid is the postmaster's record of one child: which slot it serves (nil
// while it is an idle pool child), and what the postmaster did to it.
type kid struct {
	c        launch.Child
	slot     *slot
	inc      uint64    // the slot's incarnation it runs
	cause    string    // why the postmaster is ending it, if it is
	segFile  *os.File  // its duplicate of the segment memfd, closed once it has exited
	segGen   uint64    // the generation of segFile
	assigned time.Time // when it was given its worker: the worker's uptime counts from here
	adopted  bool      // carried over from an earlier image by an upgrade: it runs that image's code
}

type waiter struct {
	gen     uint64
	started bool
	reply   chan waitReply
}

// terminal reports whether the slot has ended for good: stopped, failed,
// or crashed with no restart coming.
func (s *slot) terminal() bool {
	return s.state == Stopped || s.state == Failed || (s.state == Crashed && s.timer == nil && !s.queued)
}

func (s *slot) pid() int {
	if s.kid != nil {
		return s.kid.c.PID()
	}
	return 0
}

func (s *slot) lastExit() *Exit {
	if n := len(s.exits); n > 0 {
		e := s.exits[n-1]
		return &e
	}
	return nil
}

func (s *slot) info() WorkerInfo {
	wi := WorkerInfo{
		Name: s.spec.Name, Type: s.spec.TypeName(), State: s.state, Phase: s.spec.StartPhase(),
		SharedMemory: s.spec.SharedMemory, Dynamic: s.dynamic, Incarnation: s.inc, Restarts: s.restarts,
		NextStart: s.nextStart, Exits: slices.Clone(s.exits), PID: s.pid(),
		Activity: s.activity, ActivityAt: s.actAt,
	}
	if s.kid != nil {
		wi.Cgroup, wi.Isolation = s.kid.c.Cgroup(), s.kid.c.Isolation()
	}
	if s.inc > 0 {
		wi.StartedAt = s.startedAt
	}
	wi.LastExit = s.lastExit()
	return wi
}

// label is the slot's bounded metrics label: a registered worker's name,
// a dynamic worker's type.
func (s *slot) label() string {
	if s.dynamic {
		return s.spec.TypeName()
	}
	return s.spec.Name
}

// publishRow rebuilds the row Workers() reads for s. Every change to a
// field of the row is followed, in the same message, by publishRow: in
// transition for most, directly for the pid and the activity.
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

// armTimer replaces the slot's timer with one of kind, due in d.
func (pm *postmaster) armTimer(s *slot, kind timerKind, d time.Duration) {
	pm.stopTimer(s)
	inc, rt := s.inc, pm.rt
	s.timerKind = kind
	s.timer = pm.clock.AfterFunc(d, func() { rt.tell(msgTimer{s: s, inc: inc, kind: kind}) })
}

func (pm *postmaster) stopTimer(s *slot) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}
