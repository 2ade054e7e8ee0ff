package runtime

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
)

// The postmaster's decisions about an ended run, as pure functions of the
// run's end, the slot's situation, its restart state and the clock: what
// the exit was (classify), what a shared-memory member's crash does to its
// group (decideReset) and whom a reset takes down (resetMembers), and
// what follows the exit for the worker (decideExit). The postmaster
// applies them (exits.go, shmgroup.go); nothing here has an effect beyond
// the Backoff it is given. decide_test.go holds their tables.

// exitCause is what the postmaster knew when a child ended: why it ended
// the child itself, if it did, and whether the worker said goodbye.
type exitCause struct {
	status  syscall.WaitStatus
	goodbye int    // the code the goodbye announced; -1 = none
	cause   string // why the postmaster ended it; "" = it did not
	shm     bool   // the worker holds shared memory
	oom     bool   // the kernel's OOM killer ended it
}

// classify turns how a child ended into an Exit. A shared-memory worker
// that exits 0 or 1 without its goodbye is a crash: it may have died
// mid-write, as PostgreSQL assumes of a backend that exits without
// releasing its slot.
func classify(c exitCause) Exit {
	ws := c.status
	ex := Exit{Code: -1}
	switch {
	case ws.Exited():
		ex.Code = ws.ExitStatus()
	case ws.Signaled():
		ex.Signal = sigName(ws.Signal())
	}
	cause := c.cause
	if cause == ReasonKilled && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL) {
		// The grace period ran out as the worker exited by itself: its
		// own status tells how it ended.
		cause = ""
	}
	if c.oom && cause == "" {
		cause = ReasonOOMKilled
	}
	if cause != "" {
		ex.Reason = cause
		ex.Crash = cause != ReasonShutdown && cause != ReasonGroupReset && cause != ReasonKilled && cause != ReasonRolled
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
		if c.goodbye != ex.Code && c.shm {
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

// resetVerdict is what a shared-memory member's crash does to its group.
type resetVerdict int

const (
	resetBegin  resetVerdict = iota // begin an all-for-one reset
	resetJoin                       // a reset is under way: the crash is part of it
	resetFailed                     // the group was given up already
	resetGiveUp                     // give the group up now (the error says why)
)

// decideReset decides what a member's crash does to the group: nothing
// more once the group is failed or while a reset is under way; with
// NoRestartAfterCrash (PostgreSQL's restart_after_crash = off), or past
// the group's reset intensity (b, which it charges), the group is given
// up; otherwise a reset begins.
func decideReset(failed, resetting, noRestartAfterCrash bool, b *actors.Backoff, now time.Time) (resetVerdict, error) {
	switch {
	case failed:
		return resetFailed, nil
	case resetting:
		return resetJoin, nil
	case noRestartAfterCrash:
		return resetGiveUp, errors.New("runtime: NoRestartAfterCrash is set (PostgreSQL's restart_after_crash = off)")
	}
	if _, err := b.Next(now, 0, 0); errors.Is(err, actors.ErrIntensity) {
		return resetGiveUp, err
	}
	return resetBegin, nil
}

// resetMembers is who an all-for-one reset after crashed's crash takes
// down: every other shared-memory worker, in registration order, whatever
// its state (terminating one that has no child does nothing).
func resetMembers(slots []*slot, crashed *slot) []*slot {
	var out []*slot
	for _, s := range slots {
		if s != crashed && s.spec.SharedMemory {
			out = append(out, s)
		}
	}
	return out
}

// exitSituation is what decideExit needs to know besides the exit.
type exitSituation struct {
	stopping    bool // the postmaster was stopping this worker (state Stopping)
	stopReq     bool // a stop was requested: never restart
	shutdown    bool // the runtime is shutting down
	shm         bool // a member of the shared-memory group
	groupFailed bool // the group is given up (resets past GroupResetIntensity)
	critical    bool // losing it for good shuts the runtime down
	rolled      bool // Roll stopped it to start it on the new code
}

// exitDecision is what follows a run's end.
type exitDecision struct {
	// crashed: the slot passes through Crashed first (its own event).
	crashed bool
	// to is the state that follows: Stopped, Pending, Failed, or Crashed
	// for a crashed worker that is not restarted.
	to WorkerState
	// delay is, with to == Pending, the backoff before the restart.
	delay time.Duration
	// hold is, with to == Pending, a shared-memory member that waits for
	// the group's new generation before it may start.
	hold bool
	// escalate, when not empty, says why a critical worker is lost for
	// good: the runtime shuts itself down.
	escalate string
	// why says, for the log, why a worker is not restarted.
	why string
}

// decideExit decides what follows ex for a worker in situation sit, with
// restart state b (which it advances when it charges a restart), at now;
// rnd in [0, 1) is the jitter's random number.
//
// In order: a worker whose stop was requested, or the runtime shutting
// down, is stopped. A shared-memory member follows the group (whose reset
// after a member's crash the postmaster has already begun): failed with it,
// held for the new generation when it was taken down by the group's
// reset (its restart is not charged: it did not fail). A worker being
// stopped otherwise is stopped. A clean exit 0 is done. Anything else is
// charged to the worker's restart policy: a crash first passes through
// Crashed, then the worker is pending for its backoff, or stays crashed (never
// restart) or is failed (intensity exceeded); a critical worker lost for good
// escalates.
func decideExit(ex Exit, sit exitSituation, b *actors.Backoff, now time.Time, rnd float64) exitDecision {
	if sit.shutdown || sit.stopReq {
		return exitDecision{to: Stopped}
	}
	if sit.rolled && ex.Reason == ReasonRolled {
		// Stopped to run the new code: started again at once, not charged;
		// the roll queues it (a shared-memory group once all are down).
		return exitDecision{to: Pending, hold: true}
	}
	if sit.shm {
		switch {
		case sit.groupFailed:
			d := exitDecision{to: Failed, why: "shared-memory group failed"}
			if sit.critical {
				d.escalate = d.why
			}
			return d
		case ex.Reason == ReasonGroupReset:
			return exitDecision{to: Pending, hold: true}
		}
	}
	if sit.stopping {
		return exitDecision{to: Stopped}
	}
	if !ex.Crash && ex.Code == actors.ExitDone && ex.Reason == ReasonExit0 {
		return exitDecision{to: Stopped}
	}
	d := exitDecision{crashed: ex.Crash}
	delay, err := b.Next(now, ex.Uptime, rnd)
	switch {
	case errors.Is(err, actors.ErrNoRestart):
		d.to, d.why = Stopped, "not restarted after "+ex.Reason+" (policy never)"
		if ex.Crash {
			d.to = Crashed
		}
	case err != nil:
		d.to, d.why = Failed, err.Error()
	default:
		d.to, d.delay, d.hold = Pending, delay, sit.shm && ex.Crash
		return d
	}
	if sit.critical {
		d.escalate = d.why
	}
	return d
}
