package runtime

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/bgworker/bgworker/phases"
)

// WorkerState is where a worker is in its life. The legal moves:
//
//	registered → pending → starting → running → stopping → stopped
//	                ↑          │          │
//	                │          ├──────────┴──→ crashed ──→ pending (restart after backoff)
//	                │          │                  └──────→ failed  (intensity exceeded, or never restart)
//	                └──────────┴── pending (exit 1: restart after backoff)
//
// stopped, failed and a crashed worker with no restart coming are terminal.
type WorkerState uint8

const (
	// Registered: known, its start phase not reached yet.
	Registered WorkerState = iota + 1
	// Pending: waiting for a start slot in the server loop, or for its
	// restart backoff to elapse.
	Pending
	// Starting: its process is spawned; it has not reported ready.
	Starting
	// Running: the worker actor has started and reported ready.
	Running
	// Stopping: asked to stop (SIGTERM); killed at the end of its grace period.
	Stopping
	// Stopped: done (exit 0), or stopped on request. Terminal.
	Stopped
	// Crashed: its process crashed. Transient when a restart follows,
	// terminal under NeverRestart.
	Crashed
	// Failed: restarted too often (restart intensity exceeded). Terminal.
	Failed
)

var stateNames = [...]string{"", "registered", "pending", "starting", "running", "stopping", "stopped", "crashed", "failed"}

// States returns every state, in the order of their values.
func States() [8]WorkerState {
	return [8]WorkerState{Registered, Pending, Starting, Running, Stopping, Stopped, Crashed, Failed}
}

func (s WorkerState) String() string {
	if int(s) < len(stateNames) && s > 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText encodes the state by name.
func (s WorkerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a state by name.
func (s *WorkerState) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if i > 0 && n == string(b) {
			*s = WorkerState(i)
			return nil
		}
	}
	return fmt.Errorf("runtime: unknown worker state %q", b)
}

// Alive reports whether the worker has (or is about to have) a process.
func (s WorkerState) Alive() bool { return s == Starting || s == Running || s == Stopping }

// Exit reasons. A reason is a bounded label: exit codes and signals by name,
// or why the postmaster ended the process.
const (
	ReasonExit0        = "exit0"             // exit 0 with goodbye: done
	ReasonExit1        = "exit1"             // exit 1 with goodbye: restart after backoff
	ReasonExit2        = "exit2"             // exit 2: a Go panic
	ReasonExitOther    = "exit_other"        // another exit code; see Code
	ReasonNoGoodbye    = "no_goodbye"        // exit 0 or 1 without a goodbye, from a shared-memory worker
	ReasonStartTimeout = "start_timeout"     // never reported ready in time; killed
	ReasonHeartbeat    = "heartbeat_timeout" // stopped heartbeating; killed
	ReasonProtocol     = "protocol_error"    // broke the bridge protocol; killed
	ReasonKilled       = "killed"            // did not stop within its grace period; killed
	ReasonSpawnFailed  = "spawn_failed"      // the process could not be started
	ReasonGroupReset   = "group_reset"       // taken down by an all-for-one reset
	ReasonShutdown     = "shutdown"          // ended by a runtime shutdown
	ReasonRolled       = "rolled"            // stopped by Roll, to run the upgraded binary's code
	ReasonLost         = "lost"              // gone across an in-place upgrade before the new image adopted it
	ReasonOOMKilled    = "oom_killed"        // killed by the kernel at its Limits.MemoryMax
	reasonSignalPrefix = "signal:"           // killed by a signal: signal:KILL, signal:SEGV, ...
)

// Exit records how one run of a worker ended.
type Exit struct {
	Reason string        `json:"reason"` // one of the Reason constants or "signal:NAME"
	Code   int           `json:"code"`   // exit code; -1 when killed by a signal
	Signal string        `json:"signal"` // signal name (KILL, SEGV) when killed by one; "" otherwise
	PID    int           `json:"pid"`    // the process that ended; 0 when none was spawned
	At     time.Time     `json:"at"`
	Uptime time.Duration `json:"uptime_ns"` // from the assignment of its worker to its exit
	Crash  bool          `json:"crash"`     // counted as a crash
	Stderr string        `json:"stderr"`    // the last lines the worker wrote, for a crash or a non-zero code
}

// WorkerInfo is one row of the status table (PostgreSQL's pg_stat_activity
// rows for background workers).
type WorkerInfo struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	PID    int    `json:"pid"`    // zero = no process now (null in JSON)
	Cgroup string `json:"cgroup"` // the process's cgroup v2 leaf; "" = no process, or no cgroups here
	// Isolation is what ends the process's whole tree with it: "cgroup"
	// (its leaf is killed), "process_group" (cgroups unusable here or
	// off: a descendant that leaves the group escapes), "memory" (the
	// in-memory launcher of runtimetest); "" = no process.
	Isolation    string       `json:"isolation"`
	State        WorkerState  `json:"state"`
	Phase        phases.Phase `json:"phase"` // the start phase
	SharedMemory bool         `json:"shared_memory"`
	Dynamic      bool         `json:"dynamic"`
	Incarnation  uint64       `json:"incarnation"` // runs so far
	Restarts     int          `json:"restarts"`
	StartedAt    time.Time    `json:"started_at"`  // zero = never started
	NextStart    time.Time    `json:"next_start"`  // zero = no restart scheduled
	Activity     string       `json:"activity"`    // what the worker last said it is doing (Worker.SetActivity); "" = nothing since its last state change
	ActivityAt   time.Time    `json:"activity_at"` // when it said so; zero with no activity
	LastExit     *Exit        `json:"last_exit"`   // nil = never exited
	Exits        []Exit       `json:"exits"`       // recent exits, oldest first
	// Member is the cluster member that runs a cluster-scoped worker
	// (set by runtime/cluster through DecorateWorkers); empty for a
	// worker of this runtime alone.
	Member string `json:"member,omitempty"`
}

// MarshalJSON writes zero times, and a zero pid, as null.
func (w WorkerInfo) MarshalJSON() ([]byte, error) {
	type plain WorkerInfo
	out := struct {
		plain
		PID        *int       `json:"pid"`
		StartedAt  *time.Time `json:"started_at"`
		NextStart  *time.Time `json:"next_start"`
		ActivityAt *time.Time `json:"activity_at"`
	}{plain: plain(w)}
	if w.PID != 0 {
		out.PID = &w.PID
	}
	if !w.StartedAt.IsZero() {
		out.StartedAt = &w.StartedAt
	}
	if !w.ActivityAt.IsZero() {
		out.ActivityAt = &w.ActivityAt
	}
	if !w.NextStart.IsZero() {
		out.NextStart = &w.NextStart
	}
	return json.Marshal(out)
}
