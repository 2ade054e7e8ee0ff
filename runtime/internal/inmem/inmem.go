// Package inmem is a launcher whose children are goroutines: the worker's
// real Run or Props code runs in the host process, under the real
// postmaster, with no exec, socket or signal. It is for tests in virtual
// time (testing/synctest) and for runtime/runtimetest.
//
// What stays true to a child: a worker is found by its code's name in the
// registry, as in a child; every message to and from it goes through the
// codec, so a type that could not cross the bridge fails here too; the
// exit contract holds (nil exits 0, an error exits 1, a panic exits 2);
// a shared-memory worker maps the real segment. What cannot: a killed
// worker's goroutine is not stopped, only abandoned (its context ends, and
// it must return for the runtime to shut down); pids are stand-in numbers
// above any real pid.
package inmem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/internal/codec"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/launch"
	"github.com/bgworker/bgworker/shmactor"
)

// pidBase is added to a child's id to make its stand-in pid: above Linux's
// largest pid (2^22), so it never names a real process.
const pidBase = 1 << 24

// ErrNoWorker is returned by the fault injections for a name that no
// live child runs.
var ErrNoWorker = errors.New("inmem: no live worker of that name")

// Launcher is the in-memory launch.Launcher.
type Launcher struct {
	env launch.Env

	// ExitDelay is how long a killed child takes to be reported exited:
	// a real process's teardown and reaping take about a millisecond,
	// during which the postmaster still holds the child. Zero = at once.
	// Set it before any child is killed.
	ExitDelay time.Duration

	mu           sync.Mutex
	kids         map[uint64]*Child
	failNext     map[string]int // worker name → launches still to fail
	killOnAssign int            // assignments still to find their child dead

	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	nextReply                              atomic.Uint64
}

// New returns a launcher serving env.
func New(env launch.Env) *Launcher {
	return &Launcher{env: env, kids: map[uint64]*Child{}, failNext: map[string]int{}}
}

// Launch starts a child at once: it is spawned and idle with no delay.
func (l *Launcher) Launch(id uint64, worker string) {
	l.env.Go("in-memory spawn "+strconv.FormatUint(id, 10), func() {
		l.mu.Lock()
		if worker != "" && l.failNext[worker] > 0 {
			l.failNext[worker]--
			l.mu.Unlock()
			l.env.Reporter.Spawned(id, nil, fmt.Errorf("inmem: spawn for %q failed (injected)", worker))
			return
		}
		c := &Child{l: l, id: id, spawned: time.Now(), term: make(chan struct{}), end: make(chan launch.Exit, 1)}
		l.kids[id] = c
		l.mu.Unlock()
		l.env.Reporter.Spawned(id, c, nil)
		l.env.Reporter.Idle(c)
	})
}

// Each calls fn with every child not yet reported exited.
func (l *Launcher) Each(fn func(launch.Child)) {
	l.mu.Lock()
	kids := make([]*Child, 0, len(l.kids))
	for _, c := range l.kids {
		kids = append(kids, c)
	}
	l.mu.Unlock()
	for _, c := range kids {
		fn(c)
	}
}

// Traffic counts the messages that crossed the codec, as frames.
func (l *Launcher) Traffic() launch.Traffic {
	return launch.Traffic{FramesIn: l.framesIn.Load(), FramesOut: l.framesOut.Load(),
		BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load()}
}

// Close does nothing: the children's goroutines are the runtime's, tracked
// by its Env.Go.
func (l *Launcher) Close() {}

// FailNextStart makes the next launch for the named worker fail, as a
// spawn failure.
func (l *Launcher) FailNextStart(name string) {
	l.mu.Lock()
	l.failNext[name]++
	l.mu.Unlock()
}

// KillOnAssign makes the next assignment find its child dead, as one
// SIGKILLed the moment before the postmaster handed it a worker: the write
// of the assignment fails as on a closed socket (EPIPE), and the child's
// exit, by SIGKILL, is reported after ExitDelay.
func (l *Launcher) KillOnAssign() {
	l.mu.Lock()
	l.killOnAssign++
	l.mu.Unlock()
}

// StallIdle makes the oldest idle child (spawned, no worker) stop proving
// it is alive: after the heartbeat timeout the launcher reports it silent.
// It returns the child's pid.
func (l *Launcher) StallIdle() (int, error) {
	l.mu.Lock()
	var c *Child
	for _, k := range l.kids {
		if k.worker.Load() == nil && !k.killed.Load() && (c == nil || k.id < c.id) {
			c = k
		}
	}
	l.mu.Unlock()
	if c == nil {
		return 0, errors.New("inmem: no idle child")
	}
	time.AfterFunc(l.env.HeartbeatTimeout, func() {
		if !c.exited.Load() {
			l.env.Reporter.Fault(c, launch.ErrSilent)
		}
	})
	return c.PID(), nil
}

// running returns the live child running the named worker.
func (l *Launcher) running(name string) (*Child, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.kids {
		if w := c.worker.Load(); w != nil && w.assign.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoWorker, name)
}

// Crash ends the named worker as a panic would: exit 2, no goodbye.
func (l *Launcher) Crash(name string) error { return l.inject(name, exitStatus(actors.ExitPanic), -1) }

// Exit ends the named worker with code, with the goodbye a clean exit 0
// or 1 sends.
func (l *Launcher) Exit(name string, code int) error {
	goodbye := -1
	if code == actors.ExitDone || code == actors.ExitRestart {
		goodbye = code
	}
	return l.inject(name, exitStatus(code), goodbye)
}

// ExitWithoutGoodbye ends the named worker with code but no goodbye: for
// a shared-memory worker, a death mid-write, which resets its group.
func (l *Launcher) ExitWithoutGoodbye(name string, code int) error {
	return l.inject(name, exitStatus(code), -1)
}

// Kill ends the named worker as SIGKILL would.
func (l *Launcher) Kill(name string) error {
	return l.inject(name, syscall.WaitStatus(syscall.SIGKILL), -1)
}

// Stall makes the named worker stop proving it is alive: after the
// heartbeat timeout the launcher reports it silent.
func (l *Launcher) Stall(name string) error {
	c, err := l.running(name)
	if err != nil {
		return err
	}
	time.AfterFunc(l.env.HeartbeatTimeout, func() {
		if !c.exited.Load() {
			l.env.Reporter.Fault(c, launch.ErrSilent)
		}
	})
	return nil
}

func (l *Launcher) inject(name string, st syscall.WaitStatus, goodbye int) error {
	c, err := l.running(name)
	if err != nil {
		return err
	}
	c.finish(st, goodbye)
	return nil
}

// exitStatus is the wait status of a process that exited with code.
func exitStatus(code int) syscall.WaitStatus { return syscall.WaitStatus((code & 0xff) << 8) }

// Child is one in-memory child.
type Child struct {
	l       *Launcher
	id      uint64
	spawned time.Time
	worker  atomic.Pointer[worker]
	term    chan struct{} // closed by Terminate
	termMu  sync.Once
	end     chan launch.Exit // the first ending wins
	exited  atomic.Bool      // its exit was reported
	killed  atomic.Bool

	tailMu sync.Mutex
	tail   []string // what a child would have written to stderr, for the exit's tail
}

// tailLines is how many lines of a child's output its exit keeps.
const tailLines = 32

// say records a line as a child's stderr would: it goes to the host's log
// at debug and to the tail of the child's exit.
func (c *Child) say(format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	c.l.env.Log.Debug(line, "pid", c.PID(), "source", "child")
	c.tailMu.Lock()
	defer c.tailMu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(line, "\n"), "\n") {
		if len(c.tail) == tailLines {
			c.tail = c.tail[1:]
		}
		c.tail = append(c.tail, l)
	}
}

func (c *Child) ID() uint64         { return c.id }
func (c *Child) PID() int           { return pidBase + int(c.id) }
func (c *Child) Spawned() time.Time { return c.spawned }

// Endpoint delivers to the worker actor through the codec.
func (c *Child) Endpoint() actor.Process { return endpoint{c} }

// Assign starts the worker, on a goroutine of its own.
func (c *Child) Assign(a bridge.Assign, segment *os.File) error {
	c.l.mu.Lock()
	dead := c.l.killOnAssign > 0
	if dead {
		c.l.killOnAssign--
	}
	c.l.mu.Unlock()
	if dead || c.killed.Load() {
		c.Kill()
		return fmt.Errorf("inmem: write assign: %w", syscall.EPIPE)
	}
	spec, ok := actors.Lookup(a.Code)
	if !ok {
		c.finish(exitStatus(actors.ExitPanic), -1)
		return nil
	}
	var seg *shmactor.Segment
	if segment != nil {
		fd, err := unix.FcntlInt(segment.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("inmem: dup segment: %w", err)
		}
		f := os.NewFile(uintptr(fd), "segment")
		if seg, err = shmactor.Open(f); err != nil {
			f.Close()
			return fmt.Errorf("inmem: worker %q: %w", a.Name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{c: c, spec: spec, assign: a, ctx: ctx, cancel: cancel, seg: seg, reloads: make(chan struct{}, 1)}
	c.worker.Store(w)
	c.l.env.Go("in-memory worker "+a.Name, w.run)
	return nil
}

// Terminate asks the worker to stop: its context ends, an actor gets
// *actors.Terminate.
func (c *Child) Terminate(deadline time.Time) {
	c.termMu.Do(func() { close(c.term) })
	if w := c.worker.Load(); w != nil {
		w.terminate(deadline)
	}
}

// Kill ends the child as SIGKILL, reported after the launcher's
// ExitDelay.
func (c *Child) Kill() {
	if c.killed.Swap(true) {
		return
	}
	if d := c.l.ExitDelay; d > 0 {
		time.AfterFunc(d, func() { c.finish(syscall.WaitStatus(syscall.SIGKILL), -1) })
		return
	}
	c.finish(syscall.WaitStatus(syscall.SIGKILL), -1)
}

// Limit accepts any limits: in memory they are not enforced.
func (c *Child) Limit(actors.Limits) error { return nil }

// Cgroup is "": an in-memory child has no cgroup.
func (c *Child) Cgroup() string { return "" }

// Isolation is "memory": an in-memory child is no process.
func (c *Child) Isolation() string { return "memory" }

// Reload passes the reload request to the worker.
func (c *Child) Reload() error {
	if w := c.worker.Load(); w != nil {
		w.reload()
	}
	return nil
}

// finish ends the child with st, once: an idle child's end is reported at
// once; an assigned one's by its worker's goroutine when the worker has
// been torn down.
func (c *Child) finish(st syscall.WaitStatus, goodbye int) {
	select {
	case c.end <- launch.Exit{Status: st, Goodbye: goodbye}:
	default:
		return // already ending
	}
	if w := c.worker.Load(); w != nil {
		w.cancel()
		return
	}
	c.report(<-c.end)
}

// report tells the postmaster the child is gone.
func (c *Child) report(e launch.Exit) {
	if c.exited.Swap(true) {
		return
	}
	c.l.mu.Lock()
	delete(c.l.kids, c.id)
	c.l.mu.Unlock()
	e.At = time.Now()
	c.tailMu.Lock()
	e.Tail = strings.Join(c.tail, "\n")
	c.tailMu.Unlock()
	c.l.env.Reporter.Exited(c, e)
}

// worker implements actors.Worker in memory.
type worker struct {
	c        *Child
	spec     actors.Spec
	assign   bridge.Assign
	ctx      context.Context // ended by Terminate and by the child's end
	cancel   context.CancelFunc
	seg      *shmactor.Segment
	self     atomic.Pointer[actor.PID]
	ready    sync.Once
	reloads  chan struct{}
	deadline atomic.Pointer[time.Time]
	actMu    sync.Mutex
	isReady  bool      // Ready was reported
	early    *activity // the last activity said before Ready
}

// run is the worker's life: it starts the code, waits for the first end
// (the code's own result, a fault, a kill) and reports the exit.
func (w *worker) run() {
	c := w.c
	sys := c.l.env.System
	if w.spec.Props != nil {
		props := w.spec.Props(w)
		if props == nil {
			c.finish(exitStatus(actors.ExitPanic), -1)
		} else {
			props = props.Configure(actor.WithReceiverMiddleware(w.lifecycle))
			pid := sys.Root.WithGuardian(crashStrategy{w}).Spawn(props)
			w.self.Store(pid)
		}
	} else {
		c.l.env.Go("in-memory run of "+w.assign.Name, w.loop)
		w.started()
	}
	e := <-c.end
	w.cancel()
	if pid := w.self.Load(); pid != nil {
		_ = sys.Root.StopFuture(pid).Wait()
	}
	if w.seg != nil {
		w.seg.Close()
	}
	c.report(e)
}

// loop runs a RunFunc with the exit contract.
func (w *worker) loop() {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(exitNow); ok {
				return // Exit has set the end
			}
			w.c.say("bgworker: worker %q panicked: %v\n%s", w.assign.Name, p, debug.Stack())
			w.c.finish(exitStatus(actors.ExitPanic), -1)
		}
	}()
	if err := w.spec.Run(w.ctx, w); err != nil {
		w.c.say("bgworker: worker %q exits for restart: %v", w.assign.Name, err)
		w.c.finish(exitStatus(actors.ExitRestart), actors.ExitRestart)
		return
	}
	w.c.finish(exitStatus(actors.ExitDone), actors.ExitDone)
}

// lifecycle reports Ready after Started and a clean exit after Stopped.
func (w *worker) lifecycle(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
		next(ctx, env)
		switch env.Message.(type) {
		case *actor.Started:
			w.started()
		case *actor.Stopped:
			w.c.finish(exitStatus(actors.ExitDone), actors.ExitDone)
		}
	}
}

// crashStrategy makes a panic in the worker actor the child's crash.
type crashStrategy struct{ w *worker }

func (s crashStrategy) HandleFailure(_ *actor.ActorSystem, _ actor.Supervisor, _ *actor.PID, _ *actor.RestartStatistics, reason any, message any) {
	if _, ok := reason.(exitNow); ok {
		return // Exit has set the end
	}
	s.w.c.say("bgworker: worker actor panicked: %v (while handling %T)", reason, message)
	s.w.c.finish(exitStatus(actors.ExitPanic), -1)
}

func (w *worker) started() {
	if w.assign.Flags&bridge.FlagNotifyReady == 0 {
		w.sendReady()
	}
}

// sendReady reports ready, once, then the activity said before it (the
// host clears a worker's activity when it becomes running).
func (w *worker) sendReady() {
	w.ready.Do(func() {
		w.c.l.env.Reporter.Ready(w.c)
		w.actMu.Lock()
		defer w.actMu.Unlock()
		w.isReady = true
		if w.early != nil {
			w.c.l.env.Reporter.Activity(w.c, w.early.at, w.early.text)
			w.early = nil
		}
	})
}

func (w *worker) terminate(deadline time.Time) {
	w.deadline.Store(&deadline)
	w.cancel()
	if pid := w.self.Load(); pid != nil {
		w.c.l.env.System.Root.Send(pid, &actors.Terminate{Deadline: deadline})
	}
}

func (w *worker) reload() {
	select {
	case w.reloads <- struct{}{}:
	default:
	}
	if pid := w.self.Load(); pid != nil && w.spec.Props != nil {
		w.c.l.env.System.Root.Send(pid, &actors.Reload{})
	}
}

func (w *worker) Name() string        { return w.assign.Name }
func (w *worker) Type() string        { return w.assign.Code }
func (w *worker) Arg() []byte         { return w.assign.Arg }
func (w *worker) Incarnation() uint64 { return w.assign.Incarnation }
func (w *worker) Logger() *slog.Logger {
	return w.c.l.env.Log.With("worker", w.assign.Name, "pid", w.c.PID())
}
func (w *worker) System() *actor.ActorSystem   { return w.c.l.env.System }
func (w *worker) Self() *actor.PID             { return w.self.Load() }
func (w *worker) Segment() *shmactor.Segment   { return w.seg }
func (w *worker) Terminating() <-chan struct{} { return w.c.term }
func (w *worker) Reload() <-chan struct{}      { return w.reloads }

func (w *worker) Ready() {
	if w.assign.Flags&bridge.FlagNotifyReady != 0 {
		w.sendReady()
	}
}

func (w *worker) SetActivity(text string) {
	if len(text) > bridge.MaxActivity {
		text = text[:bridge.MaxActivity]
	}
	w.actMu.Lock()
	defer w.actMu.Unlock()
	if !w.isReady {
		w.early = &activity{at: time.Now(), text: text}
		return
	}
	w.c.l.env.Reporter.Activity(w.c, time.Now(), text)
}

type activity struct {
	at   time.Time
	text string
}

// exitNow is what Exit panics with: a process that exits goes no further,
// and in memory the panic unwinds the worker's goroutine instead. The run
// loop and the actor's supervisor recognise it and count no crash.
type exitNow struct{}

func (w *worker) Exit(err error) {
	if err == nil {
		w.c.finish(exitStatus(actors.ExitDone), actors.ExitDone)
	} else {
		w.c.finish(exitStatus(actors.ExitRestart), actors.ExitRestart)
	}
	panic(exitNow{})
}

func (w *worker) connected() error {
	if w.assign.Flags&bridge.FlagConnect == 0 {
		return actors.ErrNotConnected
	}
	return nil
}

func (w *worker) Send(target string, msg any) error {
	if err := w.connected(); err != nil {
		return err
	}
	pid, err := w.c.l.env.Resolve(target)
	if err != nil {
		return err
	}
	m, err := w.c.l.cross(msg, false)
	if err != nil {
		return err
	}
	w.c.l.env.System.Root.Send(pid, m)
	return nil
}

func (w *worker) Request(ctx context.Context, target string, msg any) (any, error) {
	if err := w.connected(); err != nil {
		return nil, err
	}
	pid, err := w.c.l.env.Resolve(target)
	if err != nil {
		return nil, &bridge.RemoteError{Target: target, Reason: err.Error()}
	}
	m, err := w.c.l.cross(msg, false)
	if err != nil {
		return nil, err
	}
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	r, err := w.c.l.env.System.Root.RequestFuture(pid, m, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("runtime: request to host actor %q: %w", target, err)
	}
	return w.c.l.cross(r, true)
}

// cross sends msg through the codec, as a frame to (in false) or from (in
// true) the worker would be: encoded, counted, decoded.
func (l *Launcher) cross(msg any, in bool) (any, error) {
	typ, b, err := codec.Encode(nil, msg)
	if err != nil {
		return nil, err
	}
	if in {
		l.framesIn.Add(1)
		l.bytesIn.Add(uint64(len(b)))
	} else {
		l.framesOut.Add(1)
		l.bytesOut.Add(uint64(len(b)))
	}
	return codec.Decode(typ, b)
}

// endpoint is the child's actor.Process: a message from a host actor goes
// through the codec to the worker actor, and a request's response comes
// back through it to the requester.
type endpoint struct{ c *Child }

func (e endpoint) SendUserMessage(_ *actor.PID, message any) {
	_, msg, sender := actor.UnwrapEnvelope(message)
	sys := e.c.l.env.System
	w := e.c.worker.Load()
	var pid *actor.PID
	if w != nil {
		pid = w.self.Load()
	}
	if pid == nil || e.c.exited.Load() {
		if sender != nil {
			sys.Root.Send(sender, &actor.DeadLetterResponse{})
		}
		return
	}
	m, err := e.c.l.cross(msg, false)
	if err != nil {
		if sender != nil {
			sys.Root.Send(sender, &bridge.RemoteError{Reason: err.Error()})
		}
		return
	}
	if sender == nil {
		sys.Root.Send(pid, m)
		return
	}
	reply, _ := sys.ProcessRegistry.Add(&replyProcess{l: e.c.l, sender: sender}, "inmem-reply-"+strconv.FormatUint(e.c.l.nextReply.Add(1), 10))
	sys.Root.RequestWithCustomSender(pid, m, reply)
}

func (endpoint) SendSystemMessage(*actor.PID, any) {}
func (endpoint) Stop(*actor.PID)                   {}

// replyProcess carries one response back through the codec.
type replyProcess struct {
	l      *Launcher
	sender *actor.PID
	once   sync.Once
}

func (r *replyProcess) SendUserMessage(pid *actor.PID, message any) {
	r.once.Do(func() {
		sys := r.l.env.System
		sys.ProcessRegistry.Remove(pid)
		_, msg, _ := actor.UnwrapEnvelope(message)
		if _, ok := msg.(*actor.DeadLetterResponse); ok {
			sys.Root.Send(r.sender, msg)
			return
		}
		m, err := r.l.cross(msg, true)
		if err != nil {
			m = &bridge.RemoteError{Reason: err.Error()}
		}
		sys.Root.Send(r.sender, m)
	})
}

func (r *replyProcess) SendSystemMessage(*actor.PID, any) {}
func (r *replyProcess) Stop(*actor.PID)                   {}
