// Package launch is the seam between the postmaster, which decides, and
// whatever runs workers, which does: real child processes
// (runtime/internal/proc) or goroutines (runtime/internal/inmem, for tests
// in virtual time and the users' test kit).
//
// The postmaster asks a Launcher for a child (Launch), gives it its worker
// (Child.Assign), and stops it (Child.Terminate, Child.Kill). Everything
// that happens to a child comes back through the Reporter, in order for
// each child: Spawned first, then Idle, Ready, Activity and Fault as they
// happen, and Exited last, exactly once, after the child is gone for good
// (reaped). A Launcher never decides anything about a worker: it reports,
// and the postmaster decides.
package launch

import (
	"errors"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
)

// Launcher starts children and reports on them. Its methods are safe for
// concurrent use.
type Launcher interface {
	// Launch starts a new child under id, asynchronously; the answer is a
	// Reporter.Spawned call with the same id. worker names the worker the
	// child is for ("" = an idle child for the warm pool); the worker is
	// still given to it with Child.Assign.
	Launch(id uint64, worker string)
	// Each calls fn with every child spawned and not yet reported exited.
	Each(fn func(Child))
	// Traffic returns the bridge counters summed over every child, live or
	// gone.
	Traffic() Traffic
	// Close releases the launcher once every child has exited. It waits
	// for the launcher's own goroutines.
	Close()
}

// Child is one child, seen from the postmaster. A child runs at most one
// worker in its life.
type Child interface {
	// ID is the id it was launched under.
	ID() uint64
	// PID is its process id (a stand-in number for a child that is not a
	// process).
	PID() int
	// Spawned is when it was started.
	Spawned() time.Time
	// Assign gives it its worker: at once when its handshake is done,
	// right after it otherwise. segment, when not nil, is the shared
	// segment's memfd, passed with the assignment; the caller keeps it
	// open until the child has exited.
	Assign(a bridge.Assign, segment *os.File) error
	// Terminate asks it to stop by deadline (zero = no deadline): the
	// terminate notice, then SIGTERM. It does not kill.
	Terminate(deadline time.Time)
	// Kill ends it and everything it started, at once.
	Kill()
	// Reload asks its worker to reload its configuration.
	Reload() error
	// Limit caps the child's memory, CPU and tasks before it is given its
	// worker; an error when they cannot be enforced.
	Limit(l actors.Limits) error
	// Cgroup is the child's cgroup v2 leaf; "" where it has none.
	Cgroup() string
	// Isolation says what ends the child's whole tree when it ends:
	// "cgroup" (its leaf is killed), "process_group" (cgroups unusable
	// or off: a descendant that leaves the group escapes), or "memory"
	// (an in-memory child, no process).
	Isolation() string
	// Endpoint is where messages to its worker go: sending to it crosses
	// to the worker actor, and requests get their responses back.
	Endpoint() actor.Process
}

// ErrSilent is the fault a launcher reports for a child that stopped
// proving it is alive for longer than the heartbeat timeout.
var ErrSilent = errors.New("launch: child silent past the heartbeat timeout")

// Exit is how a child ended.
type Exit struct {
	Status  syscall.WaitStatus // as wait(2) reported it
	Goodbye int                // the exit code its goodbye frame announced; -1 = none
	At      time.Time          // when it was reaped
	Tail    string             // the last lines it wrote to stdout and stderr
	OOM     bool               // killed by the kernel's out-of-memory killer
}

// Reporter receives what happens to children. Each method must return
// quickly; it is called on the launcher's goroutines.
type Reporter interface {
	// Spawned answers Launch: the child, or why it could not be started.
	Spawned(id uint64, c Child, err error)
	// Idle: the child has finished its handshake and waits for a worker.
	Idle(c Child)
	// Ready: the child's worker has started and reported ready.
	Ready(c Child)
	// Activity: the worker said what it is doing, at.
	Activity(c Child, at time.Time, text string)
	// Fault: the child broke the protocol or fell silent; it is still
	// alive, and the postmaster decides to kill it.
	Fault(c Child, err error)
	// Exited: the child is gone and reaped. The last report of a child.
	Exited(c Child, e Exit)
}

// Traffic counts bridge frames and bytes.
type Traffic struct {
	FramesIn, FramesOut, BytesIn, BytesOut uint64
}

// Env is what a launcher gets from the runtime it serves.
type Env struct {
	Reporter Reporter
	// System is the host's actor system: inbound requests come from, and
	// responses go to, its actors.
	System *actor.ActorSystem
	Log    *slog.Logger
	// Go runs fn on a goroutine the runtime tracks under what: Shutdown
	// waits for it, and says what is still running if it cannot.
	Go func(what string, fn func())
	// Resolve finds the host actor a Connect worker addresses by name.
	Resolve func(target string) (*actor.PID, error)
	// HeartbeatInterval and HeartbeatTimeout are the runtime's liveness
	// settings; MaxFrame caps a bridge frame.
	HeartbeatInterval, HeartbeatTimeout time.Duration
	MaxFrame                            int
}

// Clock is the time the postmaster runs on: the time package by default,
// a virtual one under testing/synctest or a test's own.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed, unless stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop cancels it; false if it already fired or was stopped.
	Stop() bool
}

// RealClock is the time package.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Options are what a runtime can be built with besides its Config, for
// runtime/runtimetest.
type Options struct {
	// NewLauncher makes the launcher; called once, by Start. nil = real
	// processes.
	NewLauncher func(Env) Launcher
	// Clock is the postmaster's time. nil = RealClock.
	Clock Clock
	// Rand draws the restart jitter's random numbers in [0, 1). nil =
	// math/rand/v2.
	Rand func() float64
}

// NewRuntime builds a runtime with opts: set by package runtime when it is
// initialised, for runtime/runtimetest, which runs workers in goroutines.
// cfg is a runtime.Config and the result a *runtime.Runtime.
var NewRuntime func(cfg any, opts Options) (any, error)
