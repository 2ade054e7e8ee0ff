package runtime

import (
	"errors"
	"fmt"
)

// Errors of the public API. Each is returned wrapped with the details (the
// worker's name, the state); test with errors.Is.
var (
	ErrNotStarted         = errors.New("runtime: not started")
	ErrAlreadyStarted     = errors.New("runtime: already started")
	ErrShutdown           = errors.New("runtime: shutting down or shut down")
	ErrUnknownWorker      = errors.New("runtime: no such worker")
	ErrTooManyWorkers     = errors.New("runtime: too many workers (Config.MaxWorkers)")
	ErrDuplicateWorker    = errors.New("runtime: a live worker of that name exists")
	ErrStaleHandle        = errors.New("runtime: handle refers to an earlier worker of that name")
	ErrStartFailed        = errors.New("runtime: worker failed to start")
	ErrStoppedBeforeStart = errors.New("runtime: worker stopped before it started")
	ErrPhase              = errors.New("runtime: phase out of order")
	ErrCriticalWorker     = errors.New("runtime: a critical worker failed")
	ErrInvalidConfig      = errors.New("runtime: invalid config")
	ErrNotDynamic         = errors.New("runtime: dynamic workers run registered code")
	ErrNotRunning         = errors.New("runtime: worker is not running")
)

// ExitError is an error that carries how a worker's run ended: what
// WaitStarted returns when the worker died before it was ready, and any
// other error of the runtime that is about an exit. errors.As gives the
// reason, code, signal and the tail of its output; errors.Is finds the
// sentinel (ErrStartFailed, ErrStoppedBeforeStart) through Unwrap.
type ExitError struct {
	Exit Exit
	Err  error // what failed, wrapping the sentinel
}

func (e *ExitError) Error() string {
	how := e.Exit.Reason
	switch {
	case e.Exit.Signal != "":
		how += ", signal " + e.Exit.Signal
	case e.Exit.Code >= 0:
		how += fmt.Sprintf(", exit code %d", e.Exit.Code)
	}
	return fmt.Sprintf("%v: %s", e.Err, how)
}

// Unwrap returns the error the exit explains.
func (e *ExitError) Unwrap() error { return e.Err }

// exitError wraps err with ex, when there is one.
func exitError(err error, ex *Exit) error {
	if ex == nil {
		return err
	}
	return &ExitError{Exit: *ex, Err: err}
}
