package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/shmactor"
)

// Config configures a Runtime. Zero values take the defaults written next
// to each field. A Config is copied by New; changing it later has no effect.
type Config struct {
	// Workers are the static workers of this runtime. nil = every worker
	// registered with actors.Register. Each must be registered or defined
	// in this binary under its Name (its code is found by that name in the
	// child).
	Workers []actors.Spec
	// MaxWorkers caps the workers that are not stopped or failed
	// (PostgreSQL's max_worker_processes). Zero = 128.
	MaxWorkers int
	// StartsPerIteration is how many pending workers one server-loop
	// iteration starts before the postmaster yields to its mailbox. Zero = 1.
	StartsPerIteration int
	// MaxStarting caps the workers being started at once (spawned or
	// assigned, not yet ready). Starting a Go child is CPU-bound (exec,
	// page faults, the actor system), so running many at once on few cores
	// only makes each slower and starves the postmaster. Zero = 2 × the
	// number of CPUs. Warm starts from the pool are not held back by it.
	MaxStarting int
	// HeartbeatInterval is how often a child proves it is alive. Zero = 1 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the bridge may stay silent before the
	// child is judged wedged and killed. Zero = 5 × HeartbeatInterval.
	HeartbeatTimeout time.Duration
	// MaxFrame caps a bridge frame. Zero = 1 MiB.
	MaxFrame int
	// HTTPAddr is where the metrics, status and health endpoints listen.
	// Empty = no endpoint. Must be a loopback address unless AllowPublicHTTP.
	HTTPAddr string
	// AllowPublicHTTP permits a non-loopback HTTPAddr. Prometheus' own
	// security model says metrics must not be exposed to public networks.
	AllowPublicHTTP bool
	// Registry receives the runtime's metrics. nil = a new registry owned
	// by the runtime (never the global one unless passed here).
	Registry *prometheus.Registry
	// Logger receives the runtime's and the children's log lines. nil =
	// slog.Default().
	Logger *slog.Logger
	// ChildEnv is the environment of child processes. nil = the host's.
	ChildEnv []string
	// WarmPool is how many idle children to keep started ahead of time, so
	// that starting or restarting a worker skips exec and actor-system
	// startup. Zero = 2; negative = no pool (every start is cold).
	WarmPool int
	// LockFile, when set, is locked (flock) for the runtime's life and
	// inherited by every child, so a second runtime cannot start while any
	// child of the first, or a process it left behind, is still alive
	// (PostgreSQL's "pre-existing shared memory block" interlock). Created
	// 0600.
	LockFile string
	// GroupStopTimeout is the deadline between SIGTERM and SIGKILL for the
	// shared-memory workers taken down by an all-for-one reset. Zero = 1 s.
	GroupStopTimeout time.Duration
	// GroupResetIntensity limits all-for-one resets; past it the
	// shared-memory group is failed and stays down. Zero = 5 within 60 s.
	GroupResetIntensity actors.Intensity
	// HandleSignals makes the runtime own SIGTERM, SIGINT and SIGQUIT and
	// map them to smart, fast and immediate shutdown, as PostgreSQL's
	// postmaster does.
	HandleSignals bool
	// NoCgroups keeps children in process groups only, even where cgroup
	// v2 is usable; workers with Limits are then refused.
	NoCgroups bool
}

func (c *Config) defaults() error {
	if c.MaxWorkers == 0 {
		c.MaxWorkers = 128
	}
	if c.StartsPerIteration == 0 {
		c.StartsPerIteration = 1
	}
	if c.MaxStarting == 0 {
		c.MaxStarting = 2 * goruntime.NumCPU()
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 5 * c.HeartbeatInterval
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = bridge.DefaultMaxFrame
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.WarmPool == 0 {
		c.WarmPool = 2
	} else if c.WarmPool < 0 {
		c.WarmPool = 0
	}
	if c.GroupStopTimeout == 0 {
		c.GroupStopTimeout = time.Second
	}
	if c.GroupResetIntensity.MaxRestarts == 0 {
		c.GroupResetIntensity.MaxRestarts = 5
	}
	switch {
	case c.GroupStopTimeout < 0:
		return fmt.Errorf("%w: GroupStopTimeout %v is negative", ErrInvalidConfig, c.GroupStopTimeout)
	case c.MaxWorkers < 0:
		return fmt.Errorf("%w: MaxWorkers %d is negative", ErrInvalidConfig, c.MaxWorkers)
	case c.MaxStarting < 0:
		return fmt.Errorf("%w: MaxStarting %d is negative", ErrInvalidConfig, c.MaxStarting)
	case c.StartsPerIteration < 0:
		return fmt.Errorf("%w: StartsPerIteration %d is negative", ErrInvalidConfig, c.StartsPerIteration)
	case c.HeartbeatInterval < time.Millisecond:
		return fmt.Errorf("%w: HeartbeatInterval %v is below 1ms", ErrInvalidConfig, c.HeartbeatInterval)
	case c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatTimeout %v must exceed HeartbeatInterval %v", ErrInvalidConfig, c.HeartbeatTimeout, c.HeartbeatInterval)
	case c.MaxFrame < 4096 || c.MaxFrame > 64<<20:
		return fmt.Errorf("%w: MaxFrame %d is outside [4096, 64 MiB]", ErrInvalidConfig, c.MaxFrame)
	}
	return nil
}

// Runtime is one postmaster and its workers. Create it with New, start it
// with Start, stop it with Shutdown. Its methods are safe for concurrent
// use.
type Runtime struct {
	cfg     Config
	log     *slog.Logger
	exe     string
	system  *actor.ActorSystem
	pmPID   *actor.PID
	pmDisp  holdDispatcher
	pm      *postmaster
	spawner *spawner
	metrics *metrics
	http    *httpServer

	procs   sync.Map // proc id → *proc, while the process lives
	routes  sync.Map // worker name → *route, while the worker is running
	exposed sync.Map // name → *actor.PID, host actors reachable from Connect workers
	wg      sync.WaitGroup

	mu         sync.Mutex
	state      int // 0 new, 1 started, 2 shutting down, 3 shut down
	final      []WorkerInfo
	cause      error
	stopped    chan struct{} // closed when every child is reaped after a shutdown
	finished   chan struct{} // closed when Shutdown has released everything
	sigStop    func()
	subs       atomic.Int64
	lock       *os.File          // Config.LockFile, held until release
	cg         *cgroupState      // set by Start: the children's cgroups, or why there are none
	notifyStop func()            // ends the systemd notify hooks
	regions    []shmactor.Region // the segment's layout
	hasShm     bool              // some worker can use shared memory
	segment    atomic.Pointer[shmactor.Segment]
	phase      atomic.Uint32                                                  // the postmaster's phase, for /readyz
	acc        struct{ framesIn, framesOut, bytesIn, bytesOut atomic.Uint64 } // traffic of reaped children
}

// bridgeStats sums one traffic counter over live children and the reaped.
func (rt *Runtime) bridgeStats(get func(*proc) uint64, acc *atomic.Uint64) uint64 {
	n := acc.Load()
	rt.forEachProc(func(p *proc) { n += get(p) })
	return n
}

// New validates cfg and the workers and returns a runtime that has not
// started. It closes the worker registry (see actors.Registered).
func New(cfg Config) (*Runtime, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	specs := slices.Clone(cfg.Workers)
	if specs == nil {
		specs = actors.Registered()
	}
	seen := map[string]bool{}
	codes := make([]string, len(specs))
	for i := range specs {
		sp, code, err := resolveCode(specs[i])
		if err != nil {
			return nil, err
		}
		if seen[sp.Name] {
			return nil, &actors.SpecError{Name: sp.Name, Reason: "listed twice in Config.Workers", Err: actors.ErrAlreadyRegistered}
		}
		seen[sp.Name] = true
		specs[i], codes[i] = sp, code
	}
	if len(specs) > cfg.MaxWorkers {
		return nil, fmt.Errorf("%w: %d workers registered, MaxWorkers is %d", ErrTooManyWorkers, len(specs), cfg.MaxWorkers)
	}
	regions, hasShm, err := collectRegions(specs)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{cfg: cfg, log: cfg.Logger, exe: "/proc/self/exe", stopped: make(chan struct{}), finished: make(chan struct{}),
		regions: regions, hasShm: hasShm}
	rt.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(levelFilter{h: cfg.Logger.Handler(), min: slog.LevelWarn})
	}),
		// protoactor throttles dead-letter logs with a goroutine that lives
		// for one interval; keep it short so Shutdown leaves none behind.
		actor.WithDeadLetterThrottleInterval(100*time.Millisecond))
	rt.system.ProcessRegistry.RegisterAddressResolver(rt.resolveProcAddress)
	rt.system.ProcessRegistry.RegisterAddressResolver(rt.resolveWorker)
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rt.metrics = newMetrics(rt, reg)
	rt.pm = newPostmaster(rt, specs, codes)
	return rt, nil
}

// Start starts the postmaster, enters phases.PostmasterStart and starts the
// workers of that phase. It fails with ErrAlreadyStarted on a second call and
// ErrShutdown after Shutdown.
func (rt *Runtime) Start(ctx context.Context) error {
	rt.mu.Lock()
	switch rt.state {
	case 1:
		rt.mu.Unlock()
		return ErrAlreadyStarted
	case 2, 3:
		rt.mu.Unlock()
		return ErrShutdown
	}
	rt.state = 1
	rt.mu.Unlock()
	if rt.cfg.LockFile != "" {
		f, err := lockFile(rt.cfg.LockFile)
		if err != nil {
			rt.abortStart()
			return err
		}
		rt.lock = f
	}
	if err := rt.openCgroups(); err != nil {
		rt.abortStart()
		return err
	}
	if rt.cfg.HTTPAddr != "" {
		h, err := rt.startHTTP()
		if err != nil {
			rt.abortStart()
			return err
		}
		rt.http = h
	}
	rt.spawner = newSpawner(rt, rt.cfg.MaxWorkers+64)
	rt.pmPID = rt.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return rt.pm }).
		Configure(actor.WithDispatcher(&rt.pmDisp)))
	if rt.cfg.HandleSignals {
		rt.handleSignals()
	}
	rt.startNotify()
	reply := make(chan error, 1)
	rt.tell(msgStart{reply: reply})
	return rt.await(ctx, reply)
}

// abortStart releases what a failed Start took.
func (rt *Runtime) abortStart() {
	rt.mu.Lock()
	rt.state = 3
	rt.mu.Unlock()
	if rt.lock != nil {
		rt.lock.Close()
	}
	rt.closeCgroups()
	close(rt.stopped)
	close(rt.finished)
	rt.system.Shutdown()
}

func (rt *Runtime) handleSignals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	done := make(chan struct{})
	rt.sigStop = func() { signal.Stop(ch); close(done) }
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		for {
			select {
			case sig := <-ch:
				mode := map[os.Signal]phases.ShutdownMode{syscall.SIGTERM: phases.Smart, syscall.SIGINT: phases.Fast, syscall.SIGQUIT: phases.Immediate}[sig]
				rt.log.Info("runtime: signal received", "signal", sig.String(), "mode", mode.String())
				rt.begin(mode, nil)
			case <-done:
				return
			}
		}
	}()
}

// tell sends a message to the postmaster.
func (rt *Runtime) tell(m pmMsg) { rt.system.Root.Send(rt.pmPID, m) }

// tellAndRun sends m to the postmaster from one of the runtime's own
// goroutines that holds no lock (a reader reporting a child's progress,
// the reaper): if the postmaster is idle, this goroutine runs its mailbox
// itself. Never from an API call: the caller may hold a lock that a
// subscriber takes, and it could no longer give up on its context.
func (rt *Runtime) tellAndRun(m pmMsg) {
	rt.pmDisp.hold()
	rt.tell(m)
	if run := rt.pmDisp.take(); run != nil {
		run()
	}
}

// check reports whether the runtime accepts requests.
func (rt *Runtime) check() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch rt.state {
	case 0:
		return ErrNotStarted
	case 1:
		return nil
	}
	return ErrShutdown
}

func await[T any](ctx context.Context, rt *Runtime, reply chan T) (T, error) {
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	case <-rt.stopped:
		// The postmaster may have answered just before stopping.
		select {
		case r := <-reply:
			return r, nil
		default:
		}
		var zero T
		return zero, ErrShutdown
	}
}

func (rt *Runtime) await(ctx context.Context, reply chan error) error {
	err, werr := await(ctx, rt, reply)
	if werr != nil {
		return werr
	}
	return err
}

// Advance enters phase p, and every phase before it not yet entered,
// starting the workers that wait for them. Advancing to the current phase
// is a no-op; to an earlier one, ErrPhase.
func (rt *Runtime) Advance(ctx context.Context, p phases.Phase) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	rt.tell(msgAdvance{phase: p, reply: reply})
	return rt.await(ctx, reply)
}

// StartWorker starts a dynamic worker (PostgreSQL's
// RegisterDynamicBackgroundWorker). The spec's Type names the registered or
// defined code it runs (see actors.Define); its Run and Props must be nil,
// since a function cannot cross exec. The worker starts once its start
// phase is reached. Errors: ErrNotStarted, ErrShutdown, ErrTooManyWorkers,
// ErrDuplicateWorker, ErrNotDynamic, and a *actors.SpecError for an invalid
// spec; in every case nothing is started.
func (rt *Runtime) StartWorker(ctx context.Context, spec actors.Spec) (*Handle, error) {
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
	rt.tell(msgStartWorker{spec: spec, code: code, reply: reply})
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
// registered or defined code by its Type (or Name), whose Run, Props and
// Regions it takes.
func resolveCode(spec actors.Spec) (actors.Spec, string, error) {
	code := spec.Name
	if spec.Run == nil && spec.Props == nil {
		code = spec.TypeName()
		tmpl, ok := actors.Lookup(code)
		if !ok {
			return spec, "", fmt.Errorf("%w: worker %q: no code registered or defined as %q", ErrUnknownWorker, spec.Name, code)
		}
		spec.Run, spec.Props = tmpl.Run, tmpl.Props
		if spec.SharedMemory && len(spec.Regions) == 0 {
			spec.Regions = tmpl.Regions
		}
	} else if _, ok := actors.Lookup(code); !ok {
		return spec, "", fmt.Errorf("%w: worker %q is not registered or defined in this binary; its child could not find its code", ErrUnknownWorker, spec.Name)
	}
	if err := spec.Validate(); err != nil {
		return spec, "", err
	}
	return spec, code, nil
}

// Handle refers to one dynamic worker (one StartWorker call). After the
// worker ends and another is started under the same name, calls on the old
// handle fail with ErrStaleHandle instead of reaching the new one.
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
// worker has taken the name, messages to it are dead letters.
func (h *Handle) PID() *actor.PID {
	return actor.NewPID(workerAddress, h.name+"#"+strconv.FormatUint(h.gen, 10))
}

// WaitStarted waits until the worker has reported ready and returns its
// process id (PostgreSQL's WaitForBackgroundWorkerStartup). It fails with
// ErrStartFailed when the process dies before ready or cannot be spawned,
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

func (rt *Runtime) wait(ctx context.Context, name string, gen uint64, started bool) (waitReply, error) {
	if err := rt.check(); err != nil {
		return waitReply{}, err
	}
	reply := make(chan waitReply, 1)
	rt.tell(msgWait{name: name, gen: gen, started: started, reply: reply})
	r, err := await(ctx, rt, reply)
	if err != nil {
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

// Workers returns one row per worker in registration order. After
// Shutdown it returns the final rows.
//
// It does not wait for the postmaster: each slot's row is republished
// whenever it changes, and Workers copies the current rows, so a status
// query costs the same during a start storm as on an idle runtime. Each row
// is consistent in itself, and every change a caller has already been told
// of (by an event, WaitStarted or WaitStopped) is in it.
func (rt *Runtime) Workers() []WorkerInfo {
	ws, _ := rt.WorkersContext(context.Background())
	return ws
}

// WorkersContext is Workers with a context; it fails with ErrNotStarted
// before Start, and with the context's error if it is already done.
// During a shutdown it returns the current rows.
func (rt *Runtime) WorkersContext(ctx context.Context) ([]WorkerInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rt.mu.Lock()
	state, final := rt.state, rt.final
	rt.mu.Unlock()
	switch {
	case final != nil:
		return final, nil
	case state == 0:
		return nil, ErrNotStarted
	case state == 3:
		return nil, ErrShutdown // never started, or its Start failed
	}
	return rt.pm.rows(), nil // running, or shutting down
}

// pingPostmaster returns once the postmaster has handled a message sent
// now, or the context's error: the liveness check of /healthz and of the
// systemd watchdog (Workers no longer goes through the postmaster).
func (rt *Runtime) pingPostmaster(ctx context.Context) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan []WorkerInfo, 1)
	rt.tell(msgStatus{reply: reply})
	_, err := await(ctx, rt, reply)
	return err
}

// PID returns the PID of the named worker's bridge: a message sent to it
// from any host actor is delivered to the worker actor in its child
// process, and a request gets its response back across the bridge. It
// follows the name: after a restart, or after a new dynamic worker took the
// name, it reaches the current one (Handle.PID does not). While the worker
// is not running, requests get a dead letter (the future fails with
// actor.ErrDeadLetter) and tells are dropped.
func (rt *Runtime) PID(name string) *actor.PID { return actor.NewPID(workerAddress, name) }

// workerAddress is the actor address of worker bridges: a PID with it
// resolves, without any registry entry, to a workerProcess for the name
// (and generation) in its Id.
const workerAddress = "bgworker-worker"

func (rt *Runtime) resolveWorker(pid *actor.PID) (actor.Process, bool) {
	if pid.Address != workerAddress {
		return nil, false
	}
	name, gen := pid.Id, uint64(0)
	if i := strings.LastIndexByte(name, '#'); i >= 0 {
		g, err := strconv.ParseUint(name[i+1:], 10, 64)
		if err != nil {
			return nil, false
		}
		name, gen = name[:i], g
	}
	return &workerProcess{rt: rt, name: name, gen: gen}, true
}

// route is a running worker's process, published by the postmaster.
type route struct {
	p   *proc
	gen uint64 // the slot's handle generation
}

// workerProcess routes messages for a worker name to its current process;
// with a generation, only to that generation's worker.
type workerProcess struct {
	rt   *Runtime
	name string
	gen  uint64 // zero: whichever worker has the name
}

var workerTarget = &actor.PID{}

func (w *workerProcess) SendUserMessage(_ *actor.PID, message any) {
	if v, ok := w.rt.routes.Load(w.name); ok {
		if r := v.(*route); w.gen == 0 || r.gen == w.gen {
			r.p.ep.SendUserMessage(workerTarget, message)
			return
		}
	}
	w.rt.metrics.undeliverable.Inc()
	if _, _, sender := actor.UnwrapEnvelope(message); sender != nil {
		w.rt.system.Root.Send(sender, &actor.DeadLetterResponse{})
	}
}
func (w *workerProcess) SendSystemMessage(*actor.PID, any) {}
func (w *workerProcess) Stop(*actor.PID)                   {}

// System returns the host's actor system, for spawning host actors.
func (rt *Runtime) System() *actor.ActorSystem { return rt.system }

// Expose makes a host actor reachable by name from workers whose spec has
// Connect (Worker.Send and Worker.Request). Exposing a name again replaces
// the actor.
func (rt *Runtime) Expose(name string, pid *actor.PID) error {
	if err := actors.ValidName(name); err != nil {
		return fmt.Errorf("runtime: expose %q: %w", name, err)
	}
	if pid == nil {
		return fmt.Errorf("runtime: expose %q: nil PID", name)
	}
	rt.exposed.Store(name, pid)
	return nil
}

// Unexpose removes a name exposed with Expose.
func (rt *Runtime) Unexpose(name string) { rt.exposed.Delete(name) }

func (rt *Runtime) resolveExposed(target string) (*actor.PID, error) {
	if v, ok := rt.exposed.Load(target); ok {
		return v.(*actor.PID), nil
	}
	return nil, fmt.Errorf("%w: %q", bridge.ErrNoTarget, target)
}

// Subscribe calls fn with every Event until the returned function is
// called. fn runs inside the postmaster's handling of a message, one call
// at a time, in order (on whichever goroutine runs the postmaster's mailbox
// at that moment): it must be quick and must not call the runtime, except
// Workers, which does not wait for the postmaster and already shows the
// change the event reports.
func (rt *Runtime) Subscribe(fn func(Event)) (unsubscribe func()) {
	sub := rt.system.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(Event); ok {
			fn(e)
		}
	})
	rt.subs.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			rt.system.EventStream.Unsubscribe(sub)
			rt.subs.Add(-1)
		})
	}
}

func (rt *Runtime) publish(e Event) { rt.system.EventStream.Publish(e) }

func (rt *Runtime) forEachProc(fn func(*proc)) {
	rt.procs.Range(func(_, v any) bool { fn(v.(*proc)); return true })
}

func (rt *Runtime) childEnv() []string {
	env := rt.cfg.ChildEnv
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !notifyEnv(kv) && !strings.HasPrefix(kv, envChild+"=") && !strings.HasPrefix(kv, envCgroup+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Done is closed once the runtime has stopped every child, after Shutdown
// or after shutting itself down because a critical worker failed (then
// Err says why, and Shutdown must still be called to release the rest).
func (rt *Runtime) Done() <-chan struct{} { return rt.stopped }

// Err returns why the runtime shut itself down, or nil.
func (rt *Runtime) Err() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.cause
}

func (rt *Runtime) begin(mode phases.ShutdownMode, cause error) {
	rt.mu.Lock()
	if rt.state == 1 {
		rt.state = 2
	}
	rt.mu.Unlock()
	rt.tell(msgShutdown{mode: mode, cause: cause})
}

// finishShutdown is called by the postmaster once every child is reaped.
func (rt *Runtime) finishShutdown(final []WorkerInfo, cause error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.final = final
	rt.cause = cause
	if rt.state == 1 {
		rt.state = 2
	}
	select {
	case <-rt.stopped:
	default:
		close(rt.stopped)
	}
}

// Shutdown stops the runtime: no worker starts or restarts once it begins;
// smart waits for the workers to finish, fast sends SIGTERM and kills after
// each grace period (the workers of the latest start phase first), immediate
// kills at once. It returns when every child has been reaped and every
// goroutine of the runtime has ended. If ctx ends first, the shutdown turns
// immediate and Shutdown still waits for the reaping, then returns ctx's
// error. It is idempotent: later calls wait for the same end (and may make
// it harder). Before Start it just releases the runtime.
func (rt *Runtime) Shutdown(ctx context.Context, mode phases.ShutdownMode) error {
	if !mode.Valid() {
		return fmt.Errorf("runtime: unknown shutdown mode %d", uint8(mode))
	}
	rt.mu.Lock()
	switch rt.state {
	case 0:
		rt.state = 3
		rt.mu.Unlock()
		close(rt.stopped)
		rt.system.Shutdown()
		close(rt.finished)
		return nil
	case 3:
		rt.mu.Unlock()
		<-rt.finished
		return nil
	}
	rt.mu.Unlock()
	rt.begin(mode, nil)
	var ctxErr error
	select {
	case <-rt.stopped:
	case <-ctx.Done():
		ctxErr = fmt.Errorf("runtime: shutdown %v: %w; killed the rest", mode, ctx.Err())
		rt.tell(msgShutdown{mode: phases.Immediate})
		<-rt.stopped
	}
	rt.release()
	<-rt.finished
	return ctxErr
}

// release frees everything once every child is reaped. Runs once.
func (rt *Runtime) release() {
	rt.mu.Lock()
	if rt.state == 3 {
		rt.mu.Unlock()
		return
	}
	rt.state = 3
	rt.mu.Unlock()
	if rt.sigStop != nil {
		rt.sigStop()
	}
	if rt.notifyStop != nil {
		rt.notifyStop()
	}
	if rt.http != nil {
		rt.http.close()
	}
	_ = rt.system.Root.StopFuture(rt.pmPID).Wait()
	rt.spawner.stop()
	rt.wg.Wait()
	rt.closeCgroups()
	for _, seg := range append(rt.pm.oldSegs, rt.pm.seg) {
		if seg != nil {
			seg.Close()
		}
	}
	if rt.lock != nil {
		rt.lock.Close()
	}
	rt.system.Shutdown()
	close(rt.finished)
}

// levelFilter drops records below min; it quiets protoactor's own logger.
type levelFilter struct {
	h   slog.Handler
	min slog.Level
}

func (l levelFilter) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l levelFilter) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{h: l.h.WithAttrs(a), min: l.min}
}
func (l levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{h: l.h.WithGroup(n), min: l.min}
}
