package runtime

import "errors"

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
)
