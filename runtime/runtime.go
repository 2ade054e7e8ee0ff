package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
	"github.com/bgworker/bgworker/runtime/internal/hold"
	"github.com/bgworker/bgworker/runtime/internal/launch"
	"github.com/bgworker/bgworker/runtime/internal/proc"
)

// runState is where a Runtime is in its own life. The moves:
//
//	stateNew ──Start──→ stateStarted ──Shutdown, or a critical worker lost──→ stateStopping ──every child reaped, released──→ stateDone
//	stateNew ──Shutdown, or a failed Start──→ stateDone
type runState uint8

const (
	stateNew      runState = iota // made by New, not started
	stateStarted                  // Start called: the postmaster runs
	stateStopping                 // a shutdown has begun
	stateDone                     // shut down and released (or never started)
)

// Runtime is one postmaster and its workers. Create it with New, start it
// with Start, stop it with Shutdown. Its methods are safe for concurrent
// use.
type Runtime struct {
	cfg         Config
	log         *slog.Logger
	exe         string
	system      *actor.ActorSystem
	pmPID       *actor.PID
	pmDisp      hold.Dispatcher
	pm          *postmaster
	newLauncher func(launch.Env) launch.Launcher // nil = real processes
	metrics     *metrics
	http        *httpServer
	httpHanded  *os.File // the HTTP listener's socket as handed to an upgrade, until the exec; nil otherwise
	ext         hooks    // hooks of packages built on the runtime (extension.go)

	routes  sync.Map // worker name → *route, while the worker is running
	exposed sync.Map // name → *actor.PID, host actors reachable from Connect workers
	wg      tracker  // every goroutine of the runtime, by what it does

	mu          sync.Mutex
	state       runState
	final       []WorkerInfo
	cause       error
	stopped     chan struct{} // closed when every child is reaped after a shutdown
	finished    chan struct{} // closed when Shutdown has released everything
	releaseOnce sync.Once
	sigStop     func()
	subs        atomic.Int64
	lock        *os.File      // Config.LockFile, held until release
	cg          *cgroupState  // set by Start: the children's cgroups, or why there are none
	notifyStop  func()        // ends the systemd notify hooks
	phase       atomic.Uint32 // the postmaster's phase, for /readyz and Status
	// traffic reads the launcher's bridge counters; set by Start once the
	// launcher exists, for the metrics, which are gathered from the
	// caller's goroutines.
	traffic atomic.Pointer[func() launch.Traffic]
	status  statusCells // the rest of Status, published by the postmaster

	executable  string        // the host's binary as resolved by New: Upgrade's default
	adopt       *upgradeState // the state of the image this one upgraded from; nil = started afresh
	static      []actors.Spec // with adopt: the static workers, added by Start where the state lacks them
	staticCodes []string
}

func init() {
	launch.NewRuntime = func(cfg any, opts launch.Options) (any, error) { return newRuntime(cfg.(Config), opts) }
}

// New validates cfg and the workers and returns a runtime that has not
// started. It closes the worker registry (see actors.Registered).
func New(cfg Config) (*Runtime, error) { return newRuntime(cfg, launch.Options{}) }

func newRuntime(cfg Config, opts launch.Options) (*Runtime, error) {
	if opts.Clock == nil {
		opts.Clock = launch.RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	// Registration closes once a runtime exists, whatever the config: a
	// worker registered later would silently never run.
	registered := actors.Registered()
	specs := slices.Clone(cfg.Workers)
	if specs == nil {
		specs = registered
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
	staticSpecs, staticCodes := specs, codes
	if len(specs) > cfg.MaxWorkers {
		return nil, fmt.Errorf("%w: %d workers registered, MaxWorkers is %d", ErrTooManyWorkers, len(specs), cfg.MaxWorkers)
	}
	regions, hasShm, err := collectRegions(specs)
	if err != nil {
		return nil, err
	}
	var adopt *upgradeState
	if opts.NewLauncher == nil {
		var err error
		if adopt, err = loadUpgrade(); err != nil {
			return nil, err
		}
	}
	if adopt != nil {
		specs, codes = nil, nil // the slots come from the state; Start adds the static workers it lacks
	}
	rt := &Runtime{cfg: cfg, log: cfg.Logger, exe: "/proc/self/exe", newLauncher: opts.NewLauncher, adopt: adopt, executable: executablePath(),
		stopped: make(chan struct{}), finished: make(chan struct{})}
	rt.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(levelFilter{h: cfg.Logger.Handler(), min: slog.LevelWarn})
	}),
		// protoactor throttles dead-letter logs with a goroutine that lives
		// for one interval; keep it short so Shutdown leaves none behind.
		actor.WithDeadLetterThrottleInterval(100*time.Millisecond))
	rt.system.ProcessRegistry.RegisterAddressResolver(rt.resolveWorker)
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rt.metrics = newMetrics(rt, reg)
	rt.pm = newPostmaster(rt, specs, codes, opts.Clock)
	rt.pm.rand = opts.Rand
	rt.pm.group.regions, rt.pm.group.enabled = regions, hasShm
	if adopt != nil {
		rt.static, rt.staticCodes = staticSpecs, staticCodes
	}
	return rt, nil
}

// Start starts the postmaster, enters phases.PostmasterStart and starts the
// workers of that phase. It fails with ErrAlreadyStarted on a second call and
// ErrShutdown after Shutdown.
func (rt *Runtime) Start(ctx context.Context) error {
	rt.mu.Lock()
	switch rt.state {
	case stateStarted:
		rt.mu.Unlock()
		return ErrAlreadyStarted
	case stateStopping, stateDone:
		rt.mu.Unlock()
		return ErrShutdown
	}
	rt.state = stateStarted
	rt.mu.Unlock()
	st := rt.adopt
	var adopted []launch.Child
	var ln net.Listener
	fail := func(err error) error {
		if rt.pm.launcher != nil {
			rt.pm.launcher.Close()
		}
		rt.abortStart()
		return err
	}
	switch {
	case st != nil && st.LockFD >= 0:
		unix.CloseOnExec(st.LockFD)
		rt.lock = os.NewFile(uintptr(st.LockFD), rt.cfg.LockFile) // still locked: the lock belongs to the open file
	case rt.cfg.LockFile != "":
		f, err := lockFile(rt.cfg.LockFile)
		if err != nil {
			return fail(err)
		}
		rt.lock = f
	}
	switch {
	case rt.newLauncher != nil:
	case st != nil && st.Cgroups != nil:
		mgr, err := cgroup.Resume(*st.Cgroups)
		if err != nil {
			return fail(fmt.Errorf("runtime: adopt the children's cgroups: %w", err))
		}
		rt.cg = &cgroupState{mgr: mgr}
	default:
		if err := rt.openCgroups(); err != nil {
			return fail(err)
		}
	}
	env := rt.launchEnv()
	if rt.newLauncher != nil {
		rt.pm.launcher = rt.newLauncher(env)
	} else {
		var extra []*os.File
		if rt.lock != nil {
			extra = append(extra, rt.lock) // fd 4: holds the interlock
		}
		cfg := proc.Config{Exe: rt.exe, Env: rt.childEnv(), ExtraFiles: extra, Queue: rt.cfg.MaxWorkers + 64, Cgroups: rt.cg.mgr}
		if st != nil {
			l, kids, err := proc.Adopt(env, cfg, st.Launcher)
			st.Launcher.CloseDescriptors() // inherited; the launcher holds duplicates
			rt.pm.launcher, adopted = l, kids
			if err != nil {
				return fail(err)
			}
		} else {
			rt.pm.launcher = proc.New(env, cfg)
		}
	}
	traffic := rt.pm.launcher.Traffic
	rt.traffic.Store(&traffic)
	if st != nil && st.HTTPFD >= 0 {
		unix.CloseOnExec(st.HTTPFD)
		f := os.NewFile(uintptr(st.HTTPFD), "http")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("runtime: adopt the HTTP listener: %w", err))
		}
		ln = l
	}
	if rt.cfg.HTTPAddr != "" || ln != nil {
		h, err := rt.startHTTP(ln)
		if err != nil {
			return fail(err)
		}
		rt.http = h
	}
	rt.pmPID = rt.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return rt.pm }).
		Configure(actor.WithDispatcher(&rt.pmDisp)))
	if rt.cfg.HandleSignals {
		rt.handleSignals()
	}
	rt.startNotify()
	reply := make(chan error, 1)
	if st != nil {
		rt.tell(msgAdopt{st: st, kids: adopted, reply: reply})
	} else {
		rt.tell(msgStart{reply: reply})
	}
	return rt.await(ctx, reply)
}

// launchEnv is what the runtime gives its launcher.
func (rt *Runtime) launchEnv() launch.Env {
	return launch.Env{Reporter: reporter{rt}, System: rt.system, Log: rt.log, Go: rt.wg.Go, Resolve: rt.resolveExposed,
		HeartbeatInterval: rt.cfg.HeartbeatInterval, HeartbeatTimeout: rt.cfg.HeartbeatTimeout, MaxFrame: rt.cfg.MaxFrame}
}

// abortStart releases what a failed Start took.
func (rt *Runtime) abortStart() {
	rt.mu.Lock()
	rt.state = stateDone
	rt.mu.Unlock()
	if rt.lock != nil {
		rt.lock.Close()
	}
	rt.closeCgroups()
	close(rt.stopped)
	close(rt.finished)
	rt.system.Shutdown()
}

// handleSignals maps SIGTERM, SIGINT and SIGQUIT to the shutdown modes and
// SIGHUP to Reload, as PostgreSQL's postmaster does.
func (rt *Runtime) handleSignals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2)
	done := make(chan struct{})
	rt.sigStop = func() { signal.Stop(ch); close(done) }
	modes := map[os.Signal]phases.ShutdownMode{syscall.SIGTERM: phases.Smart, syscall.SIGINT: phases.Fast, syscall.SIGQUIT: phases.Immediate}
	rt.wg.Go("signal handler", func() {
		for {
			select {
			case sig := <-ch:
				switch sig {
				case syscall.SIGHUP:
					rt.log.Info("runtime: signal received", "signal", sig.String(), "action", "reload")
					rt.tell(msgReload{reply: make(chan int, 1)})
					continue
				case syscall.SIGUSR2:
					rt.log.Info("runtime: signal received", "signal", sig.String(), "action", "upgrade")
					rt.wg.Go("upgrade on SIGUSR2", func() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						if err := rt.Upgrade(ctx, ""); err != nil {
							rt.log.Error("runtime: upgrade", "err", err)
						}
					})
					continue
				}
				mode := modes[sig]
				rt.log.Info("runtime: signal received", "signal", sig.String(), "mode", mode.String())
				rt.begin(mode, nil)
			case <-done:
				return
			}
		}
	})
}

// tell sends a message to the postmaster.
func (rt *Runtime) tell(m pmMsg) { rt.system.Root.Send(rt.pmPID, m) }

// tellAndRun sends m to the postmaster from one of the runtime's own
// goroutines that holds no lock (a reader reporting a child's progress,
// the reaper): if the postmaster is idle, this goroutine runs its mailbox
// itself. Never from an API call: the caller may hold a lock that a
// subscriber takes, and it could no longer give up on its context.
func (rt *Runtime) tellAndRun(m pmMsg) {
	rt.pmDisp.Hold()
	rt.tell(m)
	if run := rt.pmDisp.Take(); run != nil {
		run()
	}
}

// check reports whether the runtime accepts requests.
func (rt *Runtime) check() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch rt.state {
	case stateNew:
		return ErrNotStarted
	case stateStarted:
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
// is a no-op; to an earlier one, ErrPhase, except in the new image of an
// in-place upgrade, whose main walks the phases again: there a phase
// already entered is a no-op.
func (rt *Runtime) Advance(ctx context.Context, p phases.Phase) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan error, 1)
	rt.tell(msgAdvance{phase: p, reply: reply})
	return rt.await(ctx, reply)
}

// Reload asks every running worker to reload its configuration (PostgreSQL's
// SIGHUP): an actor-style worker receives *actors.Reload, a loop-style one
// a value on Worker.Reload(). With Config.HandleSignals the runtime maps
// SIGHUP to it; no worker ever gets SIGHUP itself. It returns how many
// workers were told.
func (rt *Runtime) Reload(ctx context.Context) (int, error) {
	if err := rt.check(); err != nil {
		return 0, err
	}
	reply := make(chan int, 1)
	rt.tell(msgReload{reply: reply})
	return await(ctx, rt, reply)
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
	case state == stateNew:
		return nil, ErrNotStarted
	case state == stateDone:
		return nil, ErrShutdown // never started, or its Start failed
	}
	return rt.decorated(rt.pm.rows()), nil // running, or shutting down
}

// WorkerByPID returns the row of the worker whose child has pid, if one
// has (PostgreSQL's GetBackgroundWorkerTypeByPid). Like Workers, it does
// not wait for the postmaster.
func (rt *Runtime) WorkerByPID(pid int) (WorkerInfo, bool) {
	if pid <= 0 {
		return WorkerInfo{}, false
	}
	for _, w := range rt.Workers() {
		if w.PID == pid {
			return w, true
		}
	}
	return WorkerInfo{}, false
}

// pingPostmaster returns once the postmaster has handled a message sent
// now, or the context's error: the liveness check of /healthz and of the
// systemd watchdog (Workers does not go through the postmaster).
func (rt *Runtime) pingPostmaster(ctx context.Context) error {
	if err := rt.check(); err != nil {
		return err
	}
	reply := make(chan struct{})
	rt.tell(msgPing{reply: reply})
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-rt.stopped:
		return ErrShutdown
	}
}

// System returns the host's actor system, for spawning host actors.
func (rt *Runtime) System() *actor.ActorSystem { return rt.system }

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

// childEnv is the children's environment: the host's, or Config.ChildEnv,
// without systemd's notify variables and without a child marker.
func (rt *Runtime) childEnv() []string {
	env := rt.cfg.ChildEnv
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !notifyEnv(kv) && !strings.HasPrefix(kv, bridge.EnvChild+"=") && !strings.HasPrefix(kv, bridge.EnvCgroup+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Done is closed once the runtime has stopped every child, after Shutdown
// or after shutting itself down because a critical worker failed (then
// Err says why, and Shutdown must still be called to release the rest).
func (rt *Runtime) Done() <-chan struct{} { return rt.stopped }

// Err returns why the runtime shut itself down, or nil. For a critical
// worker lost for good it wraps ErrCriticalWorker, and errors.As gives the
// exit that lost it as an *ExitError (reason, code, signal, output tail).
func (rt *Runtime) Err() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.cause
}

func (rt *Runtime) begin(mode phases.ShutdownMode, cause error) {
	rt.mu.Lock()
	if rt.state == stateStarted {
		rt.state = stateStopping
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
	if rt.state == stateStarted {
		rt.state = stateStopping
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
// goroutine of the runtime has ended.
//
// It honours ctx: if ctx ends first, the shutdown turns immediate and
// Shutdown returns at once with an error that wraps ctx's error and says
// what is still held (children not yet reaped, goroutines still running);
// the release goes on in the background, and a later call waits for it
// again. It is idempotent: later calls wait for the same end (and may make
// it harder). Before Start it just releases the runtime.
func (rt *Runtime) Shutdown(ctx context.Context, mode phases.ShutdownMode) error {
	if !mode.Valid() {
		return fmt.Errorf("runtime: unknown shutdown mode %d", uint8(mode))
	}
	rt.mu.Lock()
	switch rt.state {
	case stateNew:
		rt.state = stateDone
		rt.mu.Unlock()
		close(rt.stopped)
		rt.system.Shutdown()
		close(rt.finished)
		return nil
	case stateDone:
		rt.mu.Unlock()
		return rt.awaitFinished(ctx, mode)
	}
	rt.mu.Unlock()
	rt.begin(mode, nil)
	rt.releaseOnce.Do(func() { go rt.release() })
	select {
	case <-rt.stopped:
	case <-ctx.Done():
		rt.tell(msgShutdown{mode: phases.Immediate})
		return rt.stillHeld(mode, ctx.Err())
	}
	return rt.awaitFinished(ctx, mode)
}

// awaitFinished waits until release has freed everything, or ctx ends.
func (rt *Runtime) awaitFinished(ctx context.Context, mode phases.ShutdownMode) error {
	select {
	case <-rt.finished:
		return nil
	case <-ctx.Done():
		return rt.stillHeld(mode, ctx.Err())
	}
}

// stillHeld is Shutdown's error when its context ends first.
func (rt *Runtime) stillHeld(mode phases.ShutdownMode, err error) error {
	held := rt.wg.Held()
	if len(held) == 0 {
		held = []string{"the postmaster, releasing"}
	}
	return fmt.Errorf("runtime: shutdown %v: %w; turned immediate; still held: %s", mode, err, strings.Join(held, "; "))
}

// release frees everything once every child is reaped. It runs once, on a
// goroutine of its own started by the first Shutdown, so that a Shutdown
// whose context ends can return while it waits.
func (rt *Runtime) release() {
	<-rt.stopped
	rt.mu.Lock()
	rt.state = stateDone
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
	rt.pm.launcher.Close()
	_ = rt.wg.Wait(context.Background())
	rt.closeCgroups()
	for _, seg := range append(rt.pm.group.old, rt.pm.group.seg) {
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
