package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/internal/child"
	"github.com/bgworker/bgworker/runtime/internal/inmem"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// Environment of the children of a process-mode runtime.
const (
	envFaults = "RUNTIMETEST_FAULTS" // the directory of fault requests
	envRun    = "RUNTIMETEST_RUN"    // tags every child of one Runtime
)

// ErrNotRunning is returned by the fault injections for a worker that has
// no live child.
var ErrNotRunning = errors.New("runtimetest: worker is not running")

// Runtime is a runtime under test: the real *runtime.Runtime (every method
// of it is here), plus fault injection and assertions that need no sleep.
type Runtime struct {
	*runtime.Runtime
	t       testing.TB
	mem     *inmem.Launcher // nil in process mode
	faults  string          // process mode: where fault requests are written
	run     string          // process mode: the children's tag
	changed chan struct{}   // closed and replaced at every event

	mu     sync.Mutex
	events []runtime.Event
}

// Option is an option of New and NewProcess.
type Option func(*options)

type options struct {
	rand func() float64
}

// WithRandom makes the restart jitter draw from rnd (numbers in [0, 1)).
// Without it the kit draws 0: every wait is its policy's unjittered value,
// so schedules can be asserted exactly.
func WithRandom(rnd func() float64) Option { return func(o *options) { o.rand = rnd } }

// New starts, in memory, a runtime whose workers run the real Run or Props
// code of the specs in goroutines, under the real postmaster: phases,
// restart policies, intensity, all-for-one, shutdown order. Call it inside
// testing/synctest's Test to run in virtual time: backoffs, timeouts and
// grace periods then take no wall time and happen at exact instants.
// Messages to and from workers still go through the codec, so a type that
// could not cross the bridge fails here too.
//
// Differences from real children: a worker that is killed (Kill, or the end
// of its grace period) has its goroutine abandoned, not stopped: its
// context ends, and Shutdown waits until it returns. Pids are stand-in
// numbers above any real pid. Unless cfg sets WarmPool, every start is
// cold, so that FailNextStart has a start to fail.
//
// The runtime is started; at the end of the test it is shut down (fast)
// and checked for leaks (see the package documentation).
func New(t testing.TB, cfg runtime.Config, opts ...Option) *Runtime {
	t.Helper()
	o := apply(opts)
	if cfg.WarmPool == 0 {
		cfg.WarmPool = -1
	}
	r := &Runtime{t: t}
	v, err := launch.NewRuntime(r.defaults(cfg), launch.Options{Rand: o.rand, NewLauncher: func(env launch.Env) launch.Launcher {
		r.mem = inmem.New(env)
		return r.mem
	}})
	if err != nil {
		t.Fatalf("runtimetest: %v", err)
	}
	r.start(v.(*runtime.Runtime), func() {
		// protoactor throttles its dead-letter log with a goroutine that
		// waits one interval (100 ms, set by the runtime) after a dead
		// letter; under synctest the bubble must not end with it waiting.
		time.Sleep(deadLetterDrain)
	})
	return r
}

// deadLetterDrain outlasts protoactor's dead-letter throttle interval.
const deadLetterDrain = 150 * time.Millisecond

// NewProcess starts a runtime whose workers run in real child processes:
// the test binary re-executed, which is why the package's TestMain must
// call Main. The API is New's; it is for integration tests that need real
// signals, real shared memory and real exit codes. At the end of the test
// it also checks that no child, zombie or descriptor was left behind. The
// check looks at the whole test process (its goroutines, descriptors and
// children against those it had when NewProcess was called), so a
// process-mode test must not run in parallel (t.Parallel) with tests that
// start goroutines, files or processes of their own.
func NewProcess(t testing.TB, cfg runtime.Config, opts ...Option) *Runtime {
	t.Helper()
	if !mainCalled {
		t.Fatal("runtimetest: NewProcess needs the package's TestMain to call runtimetest.Main(m)")
	}
	o := apply(opts)
	r := &Runtime{t: t, faults: t.TempDir(), run: strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.Itoa(os.Getpid())}
	env := cfg.ChildEnv
	if env == nil {
		env = os.Environ()
	}
	cfg.ChildEnv = append(append([]string(nil), env...), envFaults+"="+r.faults, envRun+"="+r.run)
	leaks := goleak.IgnoreCurrent()
	goruntime.GC()
	fds := fdCount()
	v, err := launch.NewRuntime(r.defaults(cfg), launch.Options{Rand: o.rand})
	if err != nil {
		t.Fatalf("runtimetest: %v", err)
	}
	r.start(v.(*runtime.Runtime), func() { r.checkProcesses(leaks, fds) })
	return r
}

func apply(opts []Option) options {
	o := options{rand: func() float64 { return 0 }}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func (r *Runtime) defaults(cfg runtime.Config) runtime.Config {
	if cfg.Workers == nil {
		cfg.Workers = []actors.Spec{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{r.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return cfg
}

// start records every event, starts the runtime, and arranges its end.
func (r *Runtime) start(rt *runtime.Runtime, check func()) {
	r.Runtime = rt
	r.changed = make(chan struct{})
	rt.Subscribe(func(e runtime.Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	})
	if err := rt.Start(context.Background()); err != nil {
		r.t.Fatalf("runtimetest: Start: %v", err)
	}
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx, phases.Fast); err != nil {
			r.t.Errorf("runtimetest: Shutdown: %v", err)
		}
		if check != nil {
			check()
		}
	})
}

// Events returns every event so far, in order, each with its time (virtual
// time under synctest).
func (r *Runtime) Events() []runtime.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]runtime.Event(nil), r.events...)
}

// WorkerEvents returns the named worker's events so far, in order.
func (r *Runtime) WorkerEvents(name string) []runtime.WorkerEvent {
	var out []runtime.WorkerEvent
	for _, e := range r.Events() {
		if we, ok := e.(runtime.WorkerEvent); ok && we.Name == name {
			out = append(out, we)
		}
	}
	return out
}

// Exits returns every exit of the named worker so far, oldest first (the
// rows keep only the last few).
func (r *Runtime) Exits(name string) []runtime.Exit {
	var out []runtime.Exit
	for _, e := range r.WorkerEvents(name) {
		if e.Exit != nil {
			out = append(out, *e.Exit)
		}
	}
	return out
}

// Starts returns the times at which the named worker began each start.
func (r *Runtime) Starts(name string) []time.Time {
	var out []time.Time
	for _, e := range r.WorkerEvents(name) {
		if e.To == runtime.Starting {
			out = append(out, e.At)
		}
	}
	return out
}

// Info returns the named worker's row, and whether there is one.
func (r *Runtime) Info(name string) (runtime.WorkerInfo, bool) {
	for _, w := range r.Workers() {
		if w.Name == name {
			return w, true
		}
	}
	return runtime.WorkerInfo{}, false
}

// WaitState waits until the named worker is in state, or ctx ends. It
// waits on the runtime's events, never by polling, so under synctest the
// virtual clock moves on meanwhile.
func (r *Runtime) WaitState(ctx context.Context, name string, state runtime.WorkerState) error {
	err := r.Until(ctx, func() bool { w, ok := r.Info(name); return ok && w.State == state })
	if err != nil {
		w, _ := r.Info(name)
		return fmt.Errorf("runtimetest: %q is %v, not %v: %w", name, w.State, state, err)
	}
	return nil
}

// ErrShutDown is returned by Until and WaitState when the runtime shut
// down before the condition held.
var ErrShutDown = errors.New("runtimetest: the runtime shut down first")

// Until waits until cond holds, checking it now and after every event of
// the runtime, or until ctx ends. cond may read the runtime (Workers,
// Segment, Events) but must not wait.
func (r *Runtime) Until(ctx context.Context, cond func() bool) error {
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Done():
			if cond() {
				return nil
			}
			return ErrShutDown
		}
	}
}

// Crash makes the named worker crash as a panic does: exit 2.
func (r *Runtime) Crash(name string) error {
	if r.mem != nil {
		return memFault(name, r.mem.Crash(name))
	}
	return r.inject(name, "crash")
}

// Exit makes the named worker exit with code, by the exit contract (0:
// done; 1: restart after backoff; anything else: a crash).
func (r *Runtime) Exit(name string, code int) error {
	if r.mem != nil {
		return memFault(name, r.mem.Exit(name, code))
	}
	return r.inject(name, "exit "+strconv.Itoa(code))
}

// Kill kills the named worker's child: SIGKILL in process mode.
func (r *Runtime) Kill(name string) error {
	if r.mem != nil {
		return memFault(name, r.mem.Kill(name))
	}
	pid, err := r.pid(name)
	if err != nil {
		return err
	}
	return signalPID(pid, syscall.SIGKILL)
}

// Stall makes the named worker's child stop heartbeating while it lives
// on: the heartbeat timeout then fires and the child is killed.
func (r *Runtime) Stall(name string) error {
	if r.mem != nil {
		return memFault(name, r.mem.Stall(name))
	}
	return r.inject(name, "stall")
}

// FailNextStart makes the named worker's next start fail: in memory as a
// spawn failure, in process mode as a child that refuses its worker before
// it is ready. Either way WaitStarted fails with runtime.ErrStartFailed and
// the failure is charged to the worker's restart policy.
func (r *Runtime) FailNextStart(name string) error {
	if r.mem != nil {
		r.mem.FailNextStart(name)
		return nil
	}
	return os.WriteFile(filepath.Join(r.faults, "failstart."+name), nil, 0o600)
}

// DieMidWrite makes the named shared-memory worker die as if in the middle
// of writing shared memory: it exits without its goodbye, which the
// runtime counts as a crash, so the shared-memory group is reset
// (all-for-one).
func (r *Runtime) DieMidWrite(name string) error {
	if r.mem != nil {
		return memFault(name, r.mem.ExitWithoutGoodbye(name, 0))
	}
	return r.inject(name, "nogoodbye 0")
}

// memFault gives an in-memory fault's error as process mode gives it: a
// worker with no live child is ErrNotRunning.
func memFault(name string, err error) error {
	if errors.Is(err, inmem.ErrNoWorker) {
		return fmt.Errorf("%w: %q", ErrNotRunning, name)
	}
	return err
}

func (r *Runtime) pid(name string) (int, error) {
	w, ok := r.Info(name)
	if !ok || w.PID == 0 || (w.State != runtime.Running && w.State != runtime.Starting && w.State != runtime.Stopping) {
		return 0, fmt.Errorf("%w: %q", ErrNotRunning, name)
	}
	return w.PID, nil
}

// inject asks the named worker's child to carry out action (see
// childFaults): the request is written where the child finds it, then the
// child is signalled.
func (r *Runtime) inject(name, action string) error {
	pid, err := r.pid(name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.faults, "fault."+strconv.Itoa(pid)), []byte(action), 0o600); err != nil {
		return err
	}
	return signalPID(pid, faultSignal)
}

// signalPID signals pid through os.Process (a pidfd on Linux).
func signalPID(pid int, sig os.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	defer p.Release()
	return p.Signal(sig)
}

// faultSignal tells a child of a process-mode runtime that a fault request
// waits for it.
const faultSignal = syscall.SIGUSR1

var mainCalled bool

// Main is for the TestMain of a package whose tests use NewProcess: it
// makes the test binary able to be a child (it runs the worker and exits
// when re-executed by the postmaster, like runtime.Main in a service), and
// otherwise runs the tests.
//
//	func TestMain(m *testing.M) { runtimetest.Main(m) }
func Main(m *testing.M) {
	if cookie, ok := child.Cookie(); ok {
		os.Exit(child.Run(cookie, childConfig()))
	}
	mainCalled = true
	os.Exit(m.Run())
}

// childConfig is a process-mode child's side of the fault injection: it
// refuses a start asked to fail, and carries out the fault requests it is
// signalled for.
func childConfig() child.Config {
	dir := os.Getenv(envFaults)
	if dir == "" {
		return child.Config{}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, faultSignal)
	return child.Config{
		Assigned: func(name string) error {
			if err := os.Remove(filepath.Join(dir, "failstart."+name)); err == nil {
				return errors.New("runtimetest: FailNextStart")
			}
			return nil
		},
		Running: func(name string, f child.Faults) {
			for range sigs {
				path := filepath.Join(dir, "fault."+strconv.Itoa(os.Getpid()))
				b, err := os.ReadFile(path)
				if err != nil {
					continue
				}
				os.Remove(path)
				action, arg, _ := strings.Cut(string(b), " ")
				code, _ := strconv.Atoi(arg)
				switch action {
				case "crash":
					go panic("runtimetest: crash injected into " + name)
				case "exit":
					f.Exit(code)
				case "nogoodbye":
					f.ExitWithoutGoodbye(code)
				case "stall":
					go f.Stall()
				}
			}
		},
	}
}

// checkProcesses fails the test for what a process-mode runtime left
// behind: a live child of its own, a zombie, a goroutine, a descriptor.
func (r *Runtime) checkProcesses(leaks goleak.Option, fds int) {
	t := r.t
	t.Helper()
	goleak.VerifyNone(t, leaks)
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(self) {
			t.Errorf("runtimetest: zombie child %d left behind", pid)
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && len(f) > 0 && f[0] != "Z" && bytes.Contains(env, []byte(envRun+"="+r.run+"\x00")) {
			t.Errorf("runtimetest: process %d of this runtime still alive", pid)
		}
	}
	// A file of an earlier test closes when the GC gets to it: give the
	// finalizers a moment before comparing.
	n := fdCount()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(2 * time.Second); n > fds && time.Now().Before(end); n = fdCount() {
		goruntime.GC()
		<-tick.C
	}
	if n > fds {
		t.Errorf("runtimetest: %d descriptors open after Shutdown, %d before New", n, fds)
	}
}

func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

// testWriter writes log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

var _ io.Writer = testWriter{}
