package runtime

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
)

// Wait statuses as the kernel reports them: an exit code in the high byte,
// a terminating signal in the low bits.
func exitedWith(code int) syscall.WaitStatus { return syscall.WaitStatus(code << 8) }
func killedBy(s syscall.Signal) syscall.WaitStatus {
	return syscall.WaitStatus(s)
}

// classify: how a child ended, and what the postmaster knew, make one Exit.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause exitCause
		want  Exit
	}{
		{"exit 0 with goodbye", exitCause{status: exitedWith(0), goodbye: 0}, Exit{Code: 0, Reason: ReasonExit0}},
		{"exit 1 with goodbye", exitCause{status: exitedWith(1), goodbye: 1}, Exit{Code: 1, Reason: ReasonExit1}},
		{"exit 0 without goodbye, plain worker", exitCause{status: exitedWith(0), goodbye: -1}, Exit{Code: 0, Reason: ReasonExit0}},
		{"exit 0 without goodbye, shared memory", exitCause{status: exitedWith(0), goodbye: -1, shm: true},
			Exit{Code: 0, Reason: ReasonNoGoodbye, Crash: true}},
		{"exit 1 announcing 0, shared memory", exitCause{status: exitedWith(1), goodbye: 0, shm: true},
			Exit{Code: 1, Reason: ReasonNoGoodbye, Crash: true}},
		{"exit 1 with goodbye, shared memory", exitCause{status: exitedWith(1), goodbye: 1, shm: true}, Exit{Code: 1, Reason: ReasonExit1}},
		{"panic", exitCause{status: exitedWith(2), goodbye: -1}, Exit{Code: 2, Reason: ReasonExit2, Crash: true}},
		{"other code", exitCause{status: exitedWith(7), goodbye: -1}, Exit{Code: 7, Reason: ReasonExitOther, Crash: true}},
		{"SIGKILL from outside", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1},
			Exit{Code: -1, Signal: "KILL", Reason: "signal:KILL", Crash: true}},
		{"SIGSEGV", exitCause{status: killedBy(syscall.SIGSEGV), goodbye: -1},
			Exit{Code: -1, Signal: "SEGV", Reason: "signal:SEGV", Crash: true}},
		{"killed at its heartbeat timeout", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, cause: ReasonHeartbeat},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonHeartbeat, Crash: true}},
		{"killed at its start timeout", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, cause: ReasonStartTimeout},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonStartTimeout, Crash: true}},
		{"killed for a protocol error", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, cause: ReasonProtocol},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonProtocol, Crash: true}},
		{"killed after its grace period", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, cause: ReasonKilled},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonKilled}},
		// The grace timer ran out as the worker exited by itself: its own
		// status says how it ended.
		{"clean exit racing the grace timer", exitCause{status: exitedWith(0), goodbye: 0, cause: ReasonKilled},
			Exit{Code: 0, Reason: ReasonExit0}},
		{"panic racing the grace timer", exitCause{status: exitedWith(2), goodbye: -1, cause: ReasonKilled},
			Exit{Code: 2, Reason: ReasonExit2, Crash: true}},
		{"taken down by a reset", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, cause: ReasonGroupReset, shm: true},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonGroupReset}},
		{"ended by shutdown", exitCause{status: exitedWith(0), goodbye: -1, cause: ReasonShutdown, shm: true},
			Exit{Code: 0, Reason: ReasonShutdown}},
		{"stopped by Roll", exitCause{status: exitedWith(0), goodbye: 0, cause: ReasonRolled}, Exit{Code: 0, Reason: ReasonRolled}},
		{"OOM-killed", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, oom: true},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonOOMKilled, Crash: true}},
		// What the postmaster ended it for comes before the OOM killer.
		{"OOM during shutdown", exitCause{status: killedBy(syscall.SIGKILL), goodbye: -1, oom: true, cause: ReasonShutdown},
			Exit{Code: -1, Signal: "KILL", Reason: ReasonShutdown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.cause); got != tc.want {
				t.Errorf("classify(%+v)\n got %+v\nwant %+v", tc.cause, got, tc.want)
			}
		})
	}
}

// decideExit: what follows an exit, for each situation a slot can be in,
// with the backoff it charges and the escalation of a critical worker.
func TestDecideExit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	crash := Exit{Code: 2, Reason: ReasonExit2, Crash: true, Uptime: time.Second}
	exit1 := Exit{Code: 1, Reason: ReasonExit1, Uptime: time.Second}
	done := Exit{Code: 0, Reason: ReasonExit0, Uptime: time.Second}
	reset := Exit{Code: -1, Signal: "KILL", Reason: ReasonGroupReset, Uptime: time.Second}
	rolled := Exit{Code: 0, Reason: ReasonRolled, Uptime: time.Second}
	exp := actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: -1}
	for _, tc := range []struct {
		name    string
		ex      Exit
		sit     exitSituation
		policy  actors.Restart
		in      actors.Intensity
		before  int // failed runs already charged, each at t0
		want    exitDecision
		charged bool // the exit advances the backoff
	}{
		{name: "crash, restarted after the initial backoff", ex: crash, policy: exp,
			want: exitDecision{crashed: true, to: Pending, delay: 100 * time.Millisecond}, charged: true},
		{name: "third crash in a row waits four times as long", ex: crash, policy: exp, before: 2,
			want: exitDecision{crashed: true, to: Pending, delay: 400 * time.Millisecond}, charged: true},
		{name: "backoff capped at Max", ex: crash, policy: exp, before: 6,
			want: exitDecision{crashed: true, to: Pending, delay: time.Second}, charged: true},
		{name: "exit 1 is not a crash but is restarted", ex: exit1, policy: actors.Fixed(time.Second),
			want: exitDecision{to: Pending, delay: time.Second}, charged: true},
		{name: "exit 0 is done", ex: done, policy: exp, want: exitDecision{to: Stopped}},
		{name: "crash under never stays crashed", ex: crash, policy: actors.NeverRestart,
			want: exitDecision{crashed: true, to: Crashed, why: "not restarted after exit2 (policy never)"}, charged: true},
		{name: "exit 1 under never is stopped", ex: exit1, policy: actors.NeverRestart,
			want: exitDecision{to: Stopped, why: "not restarted after exit1 (policy never)"}, charged: true},
		{name: "intensity exceeded fails it", ex: crash, policy: actors.Fixed(0), in: actors.Intensity{MaxRestarts: 2, Window: time.Minute}, before: 2,
			want: exitDecision{crashed: true, to: Failed, why: "actors: restart intensity exceeded: more than 2 restarts within 1m0s"}, charged: true},
		{name: "a critical worker lost for good escalates", ex: crash, policy: actors.Fixed(0), in: actors.Intensity{MaxRestarts: 1, Window: time.Minute}, before: 1,
			sit: exitSituation{critical: true},
			want: exitDecision{crashed: true, to: Failed, why: "actors: restart intensity exceeded: more than 1 restarts within 1m0s",
				escalate: "actors: restart intensity exceeded: more than 1 restarts within 1m0s"}, charged: true},
		{name: "a critical worker that is restarted does not escalate", ex: crash, policy: exp, sit: exitSituation{critical: true},
			want: exitDecision{crashed: true, to: Pending, delay: 100 * time.Millisecond}, charged: true},
		{name: "critical under never escalates", ex: crash, policy: actors.NeverRestart, sit: exitSituation{critical: true},
			want: exitDecision{crashed: true, to: Crashed, why: "not restarted after exit2 (policy never)", escalate: "not restarted after exit2 (policy never)"}, charged: true},
		{name: "stop requested: stopped, whatever the exit", ex: crash, policy: exp, sit: exitSituation{stopReq: true}, want: exitDecision{to: Stopped}},
		{name: "shutting down: stopped", ex: crash, policy: exp, sit: exitSituation{shutdown: true, shm: true}, want: exitDecision{to: Stopped}},
		{name: "being stopped: stopped", ex: exit1, policy: exp, sit: exitSituation{stopping: true}, want: exitDecision{to: Stopped}},
		{name: "shm member that crashed waits for the new generation", ex: crash, policy: exp, sit: exitSituation{shm: true},
			want: exitDecision{crashed: true, to: Pending, delay: 100 * time.Millisecond, hold: true}, charged: true},
		{name: "shm member taken down by a reset is not charged", ex: reset, policy: exp, before: 3, sit: exitSituation{shm: true},
			want: exitDecision{to: Pending, hold: true}},
		{name: "shm member being stopped by the reset follows the group", ex: reset, policy: exp, sit: exitSituation{shm: true, stopping: true},
			want: exitDecision{to: Pending, hold: true}},
		{name: "shm member of a failed group fails", ex: crash, policy: exp, sit: exitSituation{shm: true, groupFailed: true},
			want: exitDecision{to: Failed, why: "shared-memory group failed"}},
		{name: "critical member of a failed group escalates", ex: reset, policy: exp, sit: exitSituation{shm: true, groupFailed: true, critical: true},
			want: exitDecision{to: Failed, why: "shared-memory group failed", escalate: "shared-memory group failed"}},
		{name: "shm exit 1 is restarted without waiting for a generation", ex: exit1, policy: actors.Fixed(time.Second), sit: exitSituation{shm: true},
			want: exitDecision{to: Pending, delay: time.Second}, charged: true},
		{name: "rolled onto the new code: pending at once, not charged", ex: rolled, policy: exp, before: 2, sit: exitSituation{rolled: true},
			want: exitDecision{to: Pending, hold: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := actors.NewBackoff(tc.policy, tc.in)
			for range tc.before {
				if _, err := b.Next(t0, 0, 0); err != nil {
					t.Fatalf("charging earlier failures: %v", err)
				}
			}
			attempt := b.Attempt()
			got := decideExit(tc.ex, tc.sit, b, t0.Add(time.Second), 0)
			if got != tc.want {
				t.Errorf("decideExit(%s, %+v)\n got %+v\nwant %+v", tc.ex.Reason, tc.sit, got, tc.want)
			}
			if charged := b.Attempt() != attempt; charged != tc.charged {
				t.Errorf("backoff charged = %v (attempt %d → %d), want %v", charged, attempt, b.Attempt(), tc.charged)
			}
		})
	}
}

// A run that lasted ResetAfter resets the growth: the next crash waits the
// initial delay again, however many came before.
func TestDecideExitResetAfter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := actors.NewBackoff(actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: time.Minute, ResetAfter: 10 * time.Second, Jitter: -1}, actors.Intensity{MaxRestarts: -1})
	crash := func(uptime time.Duration) time.Duration {
		d := decideExit(Exit{Code: 2, Reason: ReasonExit2, Crash: true, Uptime: uptime}, exitSituation{}, b, t0, 0)
		if d.to != Pending {
			t.Fatalf("crash after %v: %+v, want pending", uptime, d)
		}
		return d.delay
	}
	var got []time.Duration
	for _, up := range []time.Duration{time.Second, time.Second, time.Second, 10 * time.Second, time.Second} {
		got = append(got, crash(up))
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
}

// decideReset: what a shared-memory member's crash does to its group.
func TestDecideReset(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                         string
		failed, resetting, noRestart bool
		before                       int // resets already charged, each at t0
		want                         resetVerdict
		why                          string
		charged                      bool
	}{
		{name: "first crash begins a reset", want: resetBegin, charged: true},
		{name: "within the intensity, another reset", before: 2, want: resetBegin, charged: true},
		{name: "past the intensity, the group is given up", before: 3, want: resetGiveUp,
			why: "actors: restart intensity exceeded: more than 3 restarts within 1m0s", charged: true},
		{name: "a crash during a reset joins it", resetting: true, before: 3, want: resetJoin},
		{name: "a failed group stays failed", failed: true, resetting: true, want: resetFailed},
		{name: "restart_after_crash = off gives the group up", noRestart: true, want: resetGiveUp,
			why: "runtime: NoRestartAfterCrash is set (PostgreSQL's restart_after_crash = off)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := actors.NewBackoff(actors.Fixed(0), actors.Intensity{MaxRestarts: 3, Window: time.Minute})
			for range tc.before {
				if _, err := b.Next(t0, 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			n := b.Attempt()
			v, err := decideReset(tc.failed, tc.resetting, tc.noRestart, b, t0.Add(time.Second))
			why := ""
			if err != nil {
				why = err.Error()
			}
			if v != tc.want || why != tc.why {
				t.Errorf("decideReset = %v, %q; want %v, %q", v, why, tc.want, tc.why)
			}
			if charged := b.Attempt() != n; charged != tc.charged {
				t.Errorf("reset intensity charged = %v, want %v", charged, tc.charged)
			}
		})
	}
}

// resetMembers: a reset takes down every other shared-memory worker, in
// registration order, and no plain worker.
func TestResetMembers(t *testing.T) {
	mk := func(name string, shm bool) *slot {
		return &slot{spec: actors.Spec{Name: name, SharedMemory: shm}}
	}
	a, p, b, q, c := mk("a", true), mk("p", false), mk("b", true), mk("q", false), mk("c", true)
	slots := []*slot{a, p, b, q, c}
	names := func(ss []*slot) (out []string) {
		for _, s := range ss {
			out = append(out, s.spec.Name)
		}
		return out
	}
	for _, tc := range []struct {
		crashed *slot
		want    string
	}{{b, "[a c]"}, {a, "[b c]"}, {c, "[a b]"}} {
		if got := fmt.Sprint(names(resetMembers(slots, tc.crashed))); got != tc.want {
			t.Errorf("reset after %s's crash takes down %s, want %s", tc.crashed.spec.Name, got, tc.want)
		}
	}
}
