package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/shmactor"
)

// Dynamic workers and the handles that refer to them.

// StartWorker starts a dynamic worker (PostgreSQL's
// RegisterDynamicBackgroundWorker). The spec's Type names the registered or
// defined code it runs (see actors.Define); its Run and Props must be nil,
// since a function cannot cross exec. The worker starts once its start
// phase is reached. Errors: ErrNotStarted, ErrShutdown, ErrTooManyWorkers,
// ErrDuplicateWorker, ErrNotDynamic, and a *actors.SpecError for an invalid
// spec; in every case nothing is started.
func (rt *Runtime) StartWorker(ctx context.Context, spec actors.Spec) (*Handle, error) {
	return rt.startWorker(ctx, spec, nil)
}

// StartWatched is StartWorker with a watch attached in the same call
// (PostgreSQL's bgw_notify_pid): watcher gets every WorkerEvent of the
// worker from its registration on, pending → starting included, in order,
// across its restarts. With a watch attached by Watch after StartWorker,
// the first transitions may already have happened.
func (rt *Runtime) StartWatched(ctx context.Context, spec actors.Spec, watcher *actor.PID) (*Handle, error) {
	if watcher == nil {
		return nil, fmt.Errorf("runtime: StartWatched %q: nil watcher", spec.Name)
	}
	return rt.startWorker(ctx, spec, watcher)
}

func (rt *Runtime) startWorker(ctx context.Context, spec actors.Spec, watcher *actor.PID) (*Handle, error) {
	if err := rt.check(); err != nil {
		return nil, err
	}
	if spec.Run != nil || spec.Props != nil {
		return nil, fmt.Errorf("%w: %q sets Run or Props; name defined code in Type instead", ErrNotDynamic, spec.Name)
	}
	spec, code, err := resolveCode(spec)
	if err != nil {
		return nil, err
	}
	if err := rt.checkLimits(spec); err != nil {
		return nil, err
	}
	reply := make(chan startReply, 1)
	rt.tell(msgStartWorker{spec: spec, code: code, watcher: watcher, reply: reply})
	r, err := await(ctx, rt, reply)
	if err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	return &Handle{rt: rt, name: spec.Name, gen: r.gen}, nil
}

// resolveCode finds the code a spec runs. A spec with Run or Props is
// registered code itself, found by its Name in the child; one without names
// registered or defined code by its Type (or Name), and inherits from that
// definition (see inherit).
func resolveCode(spec actors.Spec) (actors.Spec, string, error) {
	code := spec.Name
	if spec.Run == nil && spec.Props == nil {
		code = spec.TypeName()
		def, ok := actors.Lookup(code)
		if !ok {
			return spec, "", fmt.Errorf("%w: worker %q: no code registered or defined as %q", ErrUnknownWorker, spec.Name, code)
		}
		var err error
		if spec, err = inherit(spec, def); err != nil {
			return spec, "", err
		}
	} else if _, ok := actors.Lookup(code); !ok {
		return spec, "", fmt.Errorf("%w: worker %q is not registered or defined in this binary; its child could not find its code", ErrUnknownWorker, spec.Name)
	}
	if err := spec.Validate(); err != nil {
		return spec, "", err
	}
	return spec, code, nil
}

// inherit completes a spec that names defined code: every field the
// definition sets and the spec leaves zero comes from the definition (its
// Run and Props always do). A field the spec sets overrides the
// definition's, except where the code depends on it: shared memory cannot
// be asked for by code defined without it, and the regions, which size the
// segment from the definitions, must be the definition's. Those
// contradictions are errors here, not failures in the child.
func inherit(spec, def actors.Spec) (actors.Spec, error) {
	contradiction := func(format string, a ...any) (actors.Spec, error) {
		return spec, &actors.SpecError{Name: spec.Name, Err: actors.ErrInvalidSpec,
			Reason: fmt.Sprintf("contradicts the definition of %q: ", def.Name) + fmt.Sprintf(format, a...)}
	}
	if spec.SharedMemory && !def.SharedMemory {
		return contradiction("SharedMemory is set, but the code is defined without shared memory")
	}
	if len(spec.Regions) > 0 && !slices.EqualFunc(spec.Regions, def.Regions, func(a, b shmactor.Region) bool { return a.Name == b.Name && a.Size == b.Size }) {
		return contradiction("Regions differ from the definition's; the segment is sized from the definitions")
	}
	spec.Run, spec.Props = def.Run, def.Props
	spec.SharedMemory = spec.SharedMemory || def.SharedMemory
	spec.Connect = spec.Connect || def.Connect
	spec.Critical = spec.Critical || def.Critical
	spec.NotifyReady = spec.NotifyReady || def.NotifyReady
	if spec.SharedMemory {
		spec.Regions = def.Regions
	}
	if spec.StartAt == 0 {
		spec.StartAt = def.StartAt
	}
	if spec.Restart == nil {
		spec.Restart = def.Restart
	}
	if spec.Intensity == (actors.Intensity{}) {
		spec.Intensity = def.Intensity
	}
	if spec.StopTimeout == 0 {
		spec.StopTimeout = def.StopTimeout
	}
	if spec.StartTimeout == 0 {
		spec.StartTimeout = def.StartTimeout
	}
	if spec.Arg == nil {
		spec.Arg = def.Arg
	}
	return spec, nil
}

// Handle refers to one dynamic worker (one StartWorker call). It follows
// its worker through that worker's restarts: the same handle reaches each
// new incarnation. After the worker has ended for good and another is
// started under the same name, the old handle is stale: its calls fail
// with ErrStaleHandle, and its PID reaches nothing (requests are answered
// with an error wrapping ErrStaleHandle) instead of reaching the new one.
type Handle struct {
	rt   *Runtime
	name string
	gen  uint64
}

// Name returns the worker's name.
func (h *Handle) Name() string { return h.name }

// PID returns the PID by which host actors send to the worker actor in its
// child process (see Runtime.PID).
//
// Unlike Runtime.PID, it reaches only this handle's worker: once another
// worker has taken the name, a request through it fails with
// ErrStaleHandle and a Tell is counted as undeliverable.
func (h *Handle) PID() *actor.PID {
	return actor.NewPID(workerAddress, h.name+"#"+strconv.FormatUint(h.gen, 10))
}

// WaitStarted waits until the worker has reported ready and returns its
// process id (PostgreSQL's WaitForBackgroundWorkerStartup). It fails with
// an *ExitError wrapping ErrStartFailed when the process dies before ready
// or cannot be spawned (errors.As gives the exit: reason, code, signal and
// the output's tail),
// ErrStoppedBeforeStart when it was terminated first, ErrShutdown when the
// runtime shuts down first, ErrStaleHandle, or ctx's error.
func (h *Handle) WaitStarted(ctx context.Context) (int, error) {
	r, err := h.rt.wait(ctx, h.name, h.gen, true)
	return r.pid, err
}

// WaitStopped waits until the worker has ended for good (stopped, failed,
// or crashed with no restart coming) and returns its last exit, nil if it
// never ran (PostgreSQL's WaitForBackgroundWorkerShutdown).
func (h *Handle) WaitStopped(ctx context.Context) (*Exit, error) {
	r, err := h.rt.wait(ctx, h.name, h.gen, false)
	return r.exit, err
}

// Terminate asks the worker to stop: SIGTERM and the terminate notice, then
// SIGKILL after its grace period. It is not restarted. It returns at once;
// use WaitStopped to wait (PostgreSQL's TerminateBackgroundWorker).
func (h *Handle) Terminate(ctx context.Context) error { return h.rt.stop(ctx, h.name, h.gen) }

// Watch makes the postmaster send every WorkerEvent of this worker to pid
// (PostgreSQL's bgw_notify_pid).
func (h *Handle) Watch(ctx context.Context, pid *actor.PID) error {
	return h.rt.watch(ctx, h.name, h.gen, pid)
}

// Status returns the worker's state and pid now, without waiting for the
// postmaster (PostgreSQL's GetBackgroundWorkerPid): pid is zero while it
// has no process. It fails with ErrStaleHandle once the name belongs to
// another worker, and ErrNotStarted before Start.
func (h *Handle) Status() (WorkerState, int, error) {
	s, err := h.rt.pm.published(h.name, h.gen)
	if err != nil {
		return 0, 0, err
	}
	row := s.row.Load()
	return row.State, row.PID, nil
}

// Request sends msg to the worker and waits for its response, until ctx is
// done (a minute at most without a deadline). Errors are errors, not
// results: a worker that is not running answers with an error wrapping
// ErrNotRunning, a stale handle with one wrapping ErrStaleHandle, and a
// failure on the far side (a message it could not decode, say) with a
// *bridge.RemoteError.
func (h *Handle) Request(ctx context.Context, msg any) (any, error) {
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	f := h.rt.system.Root.RequestFuture(h.PID(), msg, timeout)
	done := make(chan struct{})
	var res any
	var err error
	go func() { res, err = f.Result(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case errors.Is(err, actor.ErrDeadLetter):
		return nil, fmt.Errorf("%w: %q", ErrNotRunning, h.name)
	case err != nil:
		return nil, err
	}
	if e, ok := res.(error); ok {
		return nil, e
	}
	return res, nil
}

func (rt *Runtime) wait(ctx context.Context, name string, gen uint64, started bool) (waitReply, error) {
	if err := rt.check(); err != nil {
		return waitReply{}, err
	}
	reply := make(chan waitReply, 1)
	rt.tell(msgWait{name: name, gen: gen, started: started, reply: reply})
	r, err := await(ctx, rt, reply)
	if err != nil {
		// Given up: the postmaster forgets the waiter, so callers that
		// poll with short deadlines do not grow it without bound.
		rt.tell(msgUnwait{name: name, reply: reply})
		return r, err
	}
	return r, r.err
}

func (rt *Runtime) stop(ctx context.Context, name string, gen uint64) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	rt.tell(msgStop{name: name, gen: gen, reply: reply})
	return rt.await(ctx, reply)
}

func (rt *Runtime) watch(ctx context.Context, name string, gen uint64, pid *actor.PID) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	rt.tell(msgWatch{name: name, gen: gen, pid: pid, reply: reply})
	return rt.await(ctx, reply)
}

// Stop asks a worker (static or dynamic) to stop for good; see
// Handle.Terminate.
func (rt *Runtime) Stop(ctx context.Context, name string) error { return rt.stop(ctx, name, 0) }

// WaitStarted waits until the named worker is running and returns its pid;
// see Handle.WaitStarted.
func (rt *Runtime) WaitStarted(ctx context.Context, name string) (int, error) {
	r, err := rt.wait(ctx, name, 0, true)
	return r.pid, err
}

// Watch sends every WorkerEvent of the named worker to pid.
func (rt *Runtime) Watch(ctx context.Context, name string, pid *actor.PID) error {
	return rt.watch(ctx, name, 0, pid)
}
