package actors

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/shmactor"
)

// Worker is what a running worker knows of itself and how it reaches the
// host. The runtime implements it in the child process and hands it to
// RunFunc and to Spec.Props.
type Worker interface {
	// Name is the worker's name (for a dynamic worker, the name it was
	// started with).
	Name() string
	// Type is the worker's type: the name of the code it runs.
	Type() string
	// Arg is the spec's Arg.
	Arg() []byte
	// Incarnation counts this worker's runs: 1 for the first, +1 for
	// every restart.
	Incarnation() uint64
	// Logger logs through the host's logger (the child's stderr is
	// captured line by line, with the worker's name and pid).
	Logger() *slog.Logger

	// Send delivers msg to the host actor exposed under target. It fails
	// with ErrNotConnected when the spec has no Connect, and with an error
	// naming the codec when msg cannot be serialised. Delivery is
	// at-most-once: a message in flight when either side dies is lost.
	Send(target string, msg any) error
	// Request sends msg to the host actor exposed under target and waits
	// for its response, until ctx is done. An unknown target fails with
	// an error naming it.
	Request(ctx context.Context, target string, msg any) (any, error)

	// System is the child's actor system; Self is the worker actor's PID in
	// it (nil for a RunFunc worker).
	System() *actor.ActorSystem
	Self() *actor.PID

	// Segment is the shared segment for a SharedMemory worker; nil
	// otherwise.
	Segment() *shmactor.Segment

	// Terminating is closed when the postmaster asks the worker to stop
	// (SIGTERM or the terminate notice). A RunFunc's ctx is cancelled at
	// the same moment.
	Terminating() <-chan struct{}

	// Ready reports the worker ready, for a spec with NotifyReady
	// (systemd's Type=notify): until then the worker is starting, and its
	// StartTimeout runs. Calls after the first, and calls for a spec
	// without NotifyReady (ready once started), do nothing.
	Ready()
	// SetActivity says what the worker is doing now, for the status table
	// (PostgreSQL's pgstat_report_activity): rt.Workers() and GET /workers
	// show it with the time it was set, until the next SetActivity or the
	// next state change. Cheap enough to call per item: the bridge carries
	// only the latest text, at most every 50 ms. Text past 256 bytes is
	// cut.
	SetActivity(text string)
	// Reload receives a value each time the host asks its workers to
	// reload their configuration (Runtime.Reload, SIGHUP with
	// HandleSignals); requests that come while one is pending are merged.
	// An actor-style worker also receives *Reload as a message. A worker
	// never gets SIGHUP itself.
	Reload() <-chan struct{}
	// Exit ends the worker with the exit contract: nil exits 0 (done),
	// an error exits 1 (restart after backoff). For actor-style workers.
	// It does not return.
	Exit(err error)
}

// ErrNotConnected is returned by Worker.Send and Worker.Request for a worker
// whose spec lacks Connect.
var ErrNotConnected = errors.New("actors: worker has no Connect: it reaches only its bridge")

// Exit codes of the worker process: the exit contract.
const (
	// ExitDone: the worker finished; it is not restarted.
	ExitDone = 0
	// ExitRestart: the worker asks to be restarted after its backoff.
	ExitRestart = 1
	// ExitPanic: a Go panic; a crash.
	ExitPanic = 2
)

// Reload is the message an actor-style worker receives when the host asks
// its workers to reload their configuration (PostgreSQL's SIGHUP and
// ProcessConfigFile). See Worker.Reload.
type Reload struct{}

// Terminate is the message a worker actor receives when the postmaster asks
// the worker to stop. The actor should finish and stop itself (exit 0) or
// call Worker.Exit; one that does not is killed after its grace period.
type Terminate struct {
	// Deadline is when the worker will be killed.
	Deadline time.Time
}
