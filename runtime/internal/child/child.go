package child

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/hold"
	"github.com/bgworker/bgworker/shmactor"
)

const (
	// hostAddress is the actor address by which a child reaches the host.
	hostAddress = "bgworker-host"
	// HandshakeTimeout bounds the wait for the host's Welcome after Hello.
	// A postmaster answers within milliseconds, even under load.
	HandshakeTimeout = 10 * time.Second
	// activityEvery is the least time between two Activity frames.
	activityEvery = 50 * time.Millisecond
	// idleTitle is an idle child's process name.
	idleTitle = "bgw-idle"
)

// Config tunes a child. The zero value is the production setting.
type Config struct {
	// LoanLimit is how long the worker actor may run on the bridge's
	// reading goroutine before reading moves to another goroutine;
	// checked at each heartbeat, so the move comes within LoanLimit plus
	// one heartbeat interval. Zero = 1 s.
	LoanLimit time.Duration
	// Assigned, when set, is called with the worker's name when the child
	// is given its worker, before the worker starts: an error fails the
	// start (the child exits with ExitStartRefused). For the test kit.
	Assigned func(name string) error
	// Running, when set, is called once the worker has started, with the
	// means to end or wedge the child as a fault would. For the test kit.
	Running func(name string, f Faults)
}

// ExitStartRefused is the exit code of a child whose Config.Assigned
// refused its worker.
const ExitStartRefused = 3

// Faults ends or wedges a running child as a fault would. Only the test
// kit gets one (Config.Running).
type Faults struct{ c *child }

// Exit ends the child with code by the exit contract: a goodbye first for
// 0 and 1.
func (f Faults) Exit(code int) { f.c.finish(code) }

// ExitWithoutGoodbye ends the child with code and no goodbye: for a
// shared-memory worker, a death mid-write.
func (f Faults) ExitWithoutGoodbye(code int) { os.Exit(code) }

// Stall stops the bridge for good while the process lives on: no frame,
// no heartbeat. It does not return.
func (f Faults) Stall() { f.c.conn.Send(func(b []byte) []byte { select {} }) }

// Cookie returns the handshake cookie from the environment, and whether
// this process was started as a child at all.
func Cookie() (string, bool) { return os.LookupEnv(bridge.EnvChild) }

// Run is a child's whole life: the handshake on fd 3, the worker it is
// assigned, and the exit code it ends with. A process started with the
// marker but without a bridge (by hand) gets a short refusal and
// bridge.ExitRefused.
func Run(cookieHex string, cfg Config) int {
	os.Unsetenv(bridge.EnvChild)
	// Started on one P by the launcher: raised once the worker runs
	// (afterStart). The worker's own children do not inherit the one.
	raiseProcs := os.Getenv(bridge.EnvProcs) == bridge.ProcsRaise && os.Getenv("GOMAXPROCS") == "1"
	os.Unsetenv(bridge.EnvProcs)
	if raiseProcs {
		os.Unsetenv("GOMAXPROCS")
	}
	if cfg.LoanLimit <= 0 {
		cfg.LoanLimit = time.Second
	}
	// The parent-death signal fires when the *thread* that forked this
	// child ends. That is the host's death, unless the host only exec'd a
	// new image of itself (an in-place upgrade) from another thread: then
	// this process still has the same parent. Only a changed parent is a
	// dead host; EOF on the bridge is the authoritative sign anyway.
	host := unix.Getppid()
	death := make(chan os.Signal, 1)
	signal.Notify(death, bridge.DeathSignal)
	go func() {
		for range death {
			if unix.Getppid() != host {
				killGroupAndExit()
			}
		}
	}()
	// The host's Reload reaches the worker over the bridge; a hangup of
	// a terminal must not end it.
	signal.Ignore(syscall.SIGHUP)
	var cookie [bridge.CookieLen]byte
	if b, err := hex.DecodeString(cookieHex); err != nil || len(b) != bridge.CookieLen {
		return refuse("%s is not a valid handshake cookie", bridge.EnvChild)
	} else {
		copy(cookie[:], b)
	}
	var st unix.Stat_t
	if err := unix.Fstat(bridge.ChildFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return refuse("fd %d is not a bridge socket", bridge.ChildFD)
	}
	f := os.NewFile(bridge.ChildFD, "bridge")
	conn, err := bridge.FileConn(f, bridge.DefaultMaxFrame)
	f.Close()
	if err != nil {
		return refuse("%v", err)
	}
	if fd, ok := beatPipe(); ok {
		conn.SetBeat(fd)
	}
	c := &child{
		cfg:        cfg,
		raiseProcs: raiseProcs,
		conn:       conn,
		disp:       &hold.Dispatcher{},
		welcome:    make(chan bridge.Welcome, 1),
		sysReady:   make(chan struct{}),
		exit:       make(chan int, 1),
		term:       make(chan struct{}),
	}
	// JSON lines on stderr: the host's output capture recognises them and
	// re-logs each record with its level and attributes.
	c.log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := conn.Send(func(b []byte) []byte {
		return bridge.AppendHello(b, bridge.Hello{Version: bridge.Version, PID: uint32(os.Getpid()), Cookie: cookie})
	}); err != nil {
		return refuse("handshake: %v", err)
	}
	go c.read()
	// Build the actor system while the handshake is in flight. With
	// newChildActorSystem (fast.go: NewActorSystem with a small process
	// registry) it takes ~0.1 ms instead of ~3 ms idle (6.5–8 ms loaded).
	c.system = newChildActorSystem(actor.Configure(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})))
	var w bridge.Welcome
	handshake := time.NewTimer(HandshakeTimeout)
	select {
	case w = <-c.welcome:
		handshake.Stop()
	case code := <-c.exit:
		return code
	case <-handshake.C:
		// A socket on fd 3 whose peer never answers is not a postmaster:
		// refuse, as for every other bad start, rather than wait forever.
		return refuse("no welcome from the host on fd %d within %v", bridge.ChildFD, HandshakeTimeout)
	}
	c.ep = bridge.NewEndpoint(conn, c.system, hostAddress, c.resolve, c.log)
	c.ep.SetDeliver(c.deliver)
	c.system.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		if pid.Address == hostAddress {
			return c.ep, true
		}
		return nil, false
	})
	// SIGTERM is caught before the worker can start (sysReady): a stop
	// that comes right after Ready must reach the worker as a terminate
	// notice, not end the process by Go's default action.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		for range sigs {
			c.terminate(time.Time{})
		}
	}()
	c.title = openTitle()
	c.title.set(idleTitle)
	if !c.assignSeen.Load() {
		c.prewarm() // a child for the pool: its start comes later
	}
	// Idle is queued before the reader may start the worker (sysReady):
	// the worker's Ready must follow it on the wire.
	if err := conn.Send(func(b []byte) []byte { return bridge.AppendEmpty(b, bridge.KindIdle) }); err != nil {
		return bridge.ExitLost
	}
	close(c.sysReady)
	go c.heartbeat(time.Duration(w.HeartbeatMS)*time.Millisecond, nil)
	// The worker is started by the reader when its Assign arrives; this
	// goroutine waits for the worker's end.
	return c.end(<-c.exit)
}

// beatPipe returns the beat pipe's descriptor named by bridge.EnvBeat,
// made close-on-exec (the worker's own children must not beat for it),
// when it is a pipe.
func beatPipe() (int, bool) {
	v, ok := os.LookupEnv(bridge.EnvBeat)
	os.Unsetenv(bridge.EnvBeat)
	if !ok {
		return 0, false
	}
	fd, err := strconv.Atoi(v)
	var st unix.Stat_t
	if err != nil || fd <= bridge.ChildFD || unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return 0, false
	}
	unix.CloseOnExec(fd)
	return fd, true
}

func refuse(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "bgworker: refusing to run as a worker: "+format+"\n", args...)
	fmt.Fprintf(os.Stderr, "bgworker: this binary starts workers itself; run it without %s\n", bridge.EnvChild)
	return bridge.ExitRefused
}

// child is the child process's side of the bridge.
type child struct {
	cfg        Config
	raiseProcs bool  // started on one P: take the default once the worker runs
	title      title // the process name
	conn       *bridge.Conn
	ep         *bridge.Endpoint
	system     *actor.ActorSystem
	log        *slog.Logger
	welcome    chan bridge.Welcome
	sysReady   chan struct{}
	exit       chan int

	disp   *hold.Dispatcher // the worker actor's dispatcher when it gets the runtime's mailbox (start); held by the reader for a batch
	worker atomic.Pointer[worker]
	// assignSeen: the Assign frame was read (a cold child gets it during
	// the handshake; a pool child much later).
	assignSeen atomic.Bool
	batch      []any // the read batch's messages for the worker actor, not yet posted; owned by the read loop
	termOnce   sync.Once
	term       chan struct{}
	deadline   time.Time
}

func (c *child) read() {
	stage := bridge.ChildAwaitWelcome
	batch := false
	yield := func() func() {
		if !batch {
			return nil
		}
		batch = false
		c.flush()
		run := c.disp.Take()
		if run == nil {
			return nil
		}
		return func() {
			// Responses to requests already out (from any goroutine) must
			// not wait behind the worker's run.
			if c.ep != nil && c.ep.Pending() > 0 {
				c.conn.KeepReading()
			}
			run()
		}
	}
	c.conn.ReadLoopLending(func(k bridge.Kind, body []byte) error {
		if err := stage.Check(k); err != nil {
			return err
		}
		if !batch && k != bridge.KindHeartbeat && k != bridge.KindResponse && k != bridge.KindWelcome {
			batch = true // the worker's mailbox runs, if these schedule it, are for yield
			c.disp.Hold()
		}
		switch k {
		case bridge.KindHeartbeat:
			return bridge.ParseEmpty(k, body)
		case bridge.KindWelcome:
			w, err := bridge.ParseWelcome(body)
			if err != nil {
				return err
			}
			if err := bridge.CheckVersion(k, w.Version); err != nil {
				return err
			}
			stage = bridge.ChildAwaitAssign
			c.welcome <- w
			return nil
		case bridge.KindAssign:
			c.assignSeen.Store(true)
			a, err := bridge.ParseAssign(body)
			if err != nil {
				return err
			}
			stage = bridge.ChildAssigned
			<-c.sysReady
			if c.cfg.Assigned != nil {
				if err := c.cfg.Assigned(a.Name); err != nil {
					fmt.Fprintf(os.Stderr, "bgworker: start of %q refused: %v\n", a.Name, err)
					os.Exit(ExitStartRefused)
				}
			}
			if err := c.start(a); err != nil {
				fmt.Fprintf(os.Stderr, "bgworker: %v\n", err)
				c.finish(actors.ExitPanic)
			}
			return nil
		case bridge.KindTerminate:
			d, err := bridge.ParseTerminate(body)
			if err != nil {
				return err
			}
			c.flush() // what came before the notice reaches the worker before it
			var deadline time.Time
			if d != 0 {
				deadline = time.Unix(0, d)
			}
			c.terminate(deadline)
			return nil
		case bridge.KindReattach:
			if err := bridge.ParseEmpty(k, body); err != nil {
				return err
			}
			if c.ep != nil {
				c.ep.Reattached()
			}
			return nil
		case bridge.KindReload:
			if err := bridge.ParseEmpty(k, body); err != nil {
				return err
			}
			c.flush()
			if w := c.worker.Load(); w != nil {
				w.reload()
			}
			return nil
		default: // Tell, Request, Response
			return c.ep.Handle(k, body)
		}
	}, true, yield, func(err error) {
		// The postmaster is gone (EOF) or broke the protocol: nothing left
		// to serve. PostgreSQL's children exit the same way on postmaster
		// death. This runs wherever reading ends, even while the worker
		// actor still holds the goroutine that began it.
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(os.Stderr, "bgworker: bridge: %v\n", err)
		}
		killGroupAndExit()
	})
}

// deliver is the endpoint's delivery of inbound tells and requests
// (bridge.Endpoint.SetDeliver): those for the worker actor, when it has
// the runtime's mailbox, are kept for one PostBatch at the end of the read
// batch (flush), so that the mailbox takes one lock per batch, not per
// message; anything else is sent at once.
func (c *child) deliver(dst *actor.PID, msg any) {
	if w := c.worker.Load(); w != nil && dst == w.self.Load() && w.mbox.Load() != nil {
		c.batch = append(c.batch, msg)
		return
	}
	c.system.Root.Send(dst, msg)
}

// flush posts the kept messages to the worker's mailbox; a run that starts
// goes to the worker's dispatcher, held by the reader for its yield. Once
// the worker actor has stopped, they go the way protoactor sends to a
// stopped actor: to dead letters, so that a request is answered.
func (c *child) flush() {
	if len(c.batch) == 0 {
		return
	}
	w := c.worker.Load()
	if _, alive := c.system.ProcessRegistry.GetLocal(workerActorName); !alive {
		pid := w.self.Load()
		for i, m := range c.batch {
			c.system.Root.Send(pid, m)
			c.batch[i] = nil
		}
		c.batch = c.batch[:0]
		return
	}
	c.batch = w.mbox.Load().PostBatch(c.batch)
}

// killOwnLeaf, in a child whose postmaster is gone, kills the child's
// cgroup leaf: itself and everything it started, wherever they went. It
// returns when there is no leaf or it cannot be killed; the caller then
// kills the process group.
func killOwnLeaf() {
	dir := os.Getenv(bridge.EnvCgroup)
	if dir == "" || !filepath.IsAbs(dir) {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	f.Write([]byte("1"))
	f.Close()
}

// killGroupAndExit ends the child's cgroup leaf when it has one (this
// process and everything it started, wherever it went), else its process
// group (this process, the group leader, included): the postmaster is gone
// and cannot reap or kill it.
//
// Only when this process leads its group, as the postmaster makes every
// child do: a process started some other way must not take down the group
// it happens to share (a shell's, say).
func killGroupAndExit() {
	killOwnLeaf() // with a cgroup leaf: this process and all it started
	if unix.Getpgrp() == os.Getpid() {
		unix.Kill(0, unix.SIGKILL)
	}
	os.Exit(bridge.ExitLost)
}

// heartbeat keeps the bridge from falling silent: at every interval in
// which the child sent nothing, it sends a heartbeat (traffic is liveness,
// so a busy bridge carries none); and at each tick it checks that the
// worker has not kept the reading goroutine for longer than the loan
// limit (bridge.Conn.CheckLoan). With heartbeats off (interval 0) it only
// checks, every loan limit. One ticker: an idle child wakes once per
// interval.
func (c *child) heartbeat(every time.Duration, stop <-chan struct{}) {
	period := every
	if period <= 0 {
		period = c.cfg.LoanLimit
	}
	t := time.NewTicker(period)
	defer t.Stop()
	beating := every > 0
	sent := c.conn.Handed()
	for {
		select {
		case <-t.C:
		case <-stop: // nil in a child: never
			return
		}
		c.conn.CheckLoan(c.cfg.LoanLimit)
		if !beating {
			continue
		}
		if n := c.conn.Handed(); n != sent {
			sent = n // frames went out since the last tick
			continue
		}
		// A byte on the beat pipe, or a frame written by this goroutine
		// when the socket is free (handing it to the writer goroutine
		// would wake a second thread per beat).
		if err := c.conn.Heartbeat(); err != nil {
			beating = false // the bridge is failing: the reader's end follows
		}
		sent = c.conn.Handed()
	}
}

// resolve maps an inbound target to the worker actor: a child has only one.
func (c *child) resolve(target string) (*actor.PID, error) {
	if target != "" {
		return nil, fmt.Errorf("%w: a child has only its worker, not %q", bridge.ErrNoTarget, target)
	}
	if w := c.worker.Load(); w != nil {
		if pid := w.self.Load(); pid != nil {
			return pid, nil
		}
	}
	return nil, fmt.Errorf("%w: worker not started", bridge.ErrNoTarget)
}

func (c *child) terminate(deadline time.Time) {
	c.termOnce.Do(func() {
		c.deadline = deadline
		close(c.term)
	})
}

// finish ends the child with the exit contract: goodbye for 0 and 1, then
// exit. Called once, from whichever path ends the worker first.
func (c *child) finish(code int) {
	select {
	case c.exit <- code:
	default:
	}
}

// start becomes the assigned worker: it finds the code, maps the segment
// and spawns the worker actor. It runs on the reader goroutine, right where
// the Assign frame is read, so a warm start costs no extra hand-off. On
// error the child exits 2 without a goodbye: a failed start.
func (c *child) start(a bridge.Assign) error {
	spec, ok := actors.Lookup(a.Code)
	if !ok {
		return fmt.Errorf("no worker %q is registered in this binary", a.Code)
	}
	c.title.set(a.Name)
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{c: c, spec: spec, assign: a, ctx: ctx, readySent: make(chan struct{}),
		reloads: make(chan struct{}, 1), actKick: make(chan struct{}, 1)}
	if a.Flags&bridge.FlagSharedMemory != 0 {
		f := c.conn.TakeFile("segment")
		if f == nil {
			cancel()
			return fmt.Errorf("worker %q: assigned shared memory but no segment was passed", a.Name)
		}
		seg, err := shmactor.Open(f) // owns f on success
		if err != nil {
			f.Close()
			cancel()
			return fmt.Errorf("worker %q: %w", a.Name, err)
		}
		w.seg = seg
	}
	c.worker.Store(w)
	var props *actor.Props
	if spec.Props != nil {
		props = spec.Props(w)
		if props == nil {
			cancel()
			return fmt.Errorf("worker %q: Props returned nil", a.Name)
		}
	} else {
		props = actor.PropsFromProducer(func() actor.Actor { return &runActor{w: w, fn: spec.Run} })
	}
	// Ready once the actor has handled Started: a mailbox middleware sees
	// each message after the actor with one method call. A receiver
	// middleware would allocate an envelope per message, so it is used
	// only when the worker's Props bring a mailbox of their own.
	//
	// The reader runs the mailbox itself (hold.Dispatcher) only with that
	// unbounded mailbox: the reader posts a whole batch before it runs the
	// mailbox, and a bounded mailbox would make it wait for a run that only
	// it can start. Props with a mailbox or a dispatcher of their own keep
	// protoactor's way: a goroutine per mailbox run.
	if propsHave(props, "mailboxProducer") {
		props = props.Configure(actor.WithReceiverMiddleware(w.lifecycle))
	} else {
		probe := &lifecycleProbe{onStarted: w.started, onStop: w.checkStopped}
		props = props.Configure(actor.WithMailbox(func() actor.Mailbox {
			mb := hold.NewMailbox(probe)
			w.mbox.Store(mb)
			return mb
		}))
		if !propsHave(props, "dispatcher") {
			props = props.Configure(actor.WithDispatcher(c.disp))
		}
	}
	w.self.Store(c.system.NewLocalPID(workerActorName)) // before Ready: the host may send at once
	pid, err := c.system.Root.WithGuardian(crashStrategy{c}).SpawnNamed(props, workerActorName)
	if err != nil {
		cancel()
		return fmt.Errorf("worker %q: spawn: %w", a.Name, err)
	}
	w.self.Store(pid)
	w.cancel = cancel
	return nil
}

// prewarm runs, in a child that waits for its worker in the warm pool, the
// code a start runs on a throwaway actor: a spawn with the runtime's
// mailbox and a lifecycle probe, its Started, its stop. A fresh child
// would otherwise take those pages of the binary (page faults) and caches
// on the warm start's path; here they cost the idle child once, before it
// reports idle.
func (c *child) prewarm() {
	started := make(chan struct{})
	probe := &lifecycleProbe{onStarted: func() {}, onStop: func() {}}
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			close(started)
		}
	}).Configure(actor.WithMailbox(func() actor.Mailbox { return hold.NewMailbox(probe) }),
		actor.WithDispatcher(actor.NewSynchronizedDispatcher(300)))
	pid, err := c.system.Root.WithGuardian(crashStrategy{c}).SpawnNamed(props, "prewarm")
	if err != nil {
		return
	}
	<-started
	_ = c.system.Root.StopFuture(pid).Wait()
}

// afterStart starts, once, what runs beside the worker actor: the activity
// reporter, the terminate notice's delivery and the test kit's hook. It is
// called once the actor has handled Started, after Ready went out: each
// new goroutine may wake a thread (10-15 µs on a 2-vCPU VM), which a warm
// start should not wait for. A notice that came earlier is still delivered:
// the terminate channel stays closed.
func (w *worker) afterStart() {
	w.helpers.Do(func() {
		c := w.c
		if c.raiseProcs {
			raiseProcs()
		}
		go w.reportActivity()
		if c.cfg.Running != nil {
			go c.cfg.Running(w.assign.Name, Faults{c})
		}
		go func() {
			<-c.term
			w.cancel()
			if w.spec.Props != nil {
				c.system.Root.Send(w.self.Load(), &actors.Terminate{Deadline: c.deadline})
			}
		}()
	})
}

// raiseProcs gives a child that started on one P (bridge.EnvProcs) the Go
// runtime's default GOMAXPROCS, computed now that its cgroup limits are in
// place, and keeps it: the default's updates would wake the child every
// second to re-read its CPU limits, which the runtime set before the
// worker started and never changes.
func raiseProcs() {
	goruntime.SetDefaultGOMAXPROCS()
	goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(0))
}

// end applies the exit contract to the worker's result: the goodbye frame
// for exit 0 and 1 (flushed, within a second), then the code to exit with.
func (c *child) end(code int) int {
	if code == actors.ExitDone || code == actors.ExitRestart {
		_ = c.conn.Send(func(b []byte) []byte { return bridge.AppendGoodbye(b, uint8(code)) })
		flushed := make(chan struct{})
		go func() { c.conn.Flush(); close(flushed) }()
		select {
		case <-flushed:
		case <-time.After(time.Second):
		}
	}
	return code
}

// title names the process, so that ps and top show which worker a child
// runs (PostgreSQL's "postgres: <type>"): the main thread's name,
// /proc/<pid>/comm, cut by the kernel to 15 bytes. The file is opened once,
// by the idle child, and kept: opening a proc file costs ~35 µs here, which
// a warm start would otherwise pay at its assignment.
//
// Only the main thread's: naming every thread through its
// /proc/<pid>/task/<tid>/comm was tried, and a process whose per-thread
// proc files were opened takes the kernel 0.5-19 ms instead of ~20 µs to
// reap (measured here on Linux 6.18: waitid of the killed child), which
// every exit, restart and reset waited for. It also cost a warm start a
// file write per thread.
type title struct{ fd int }

// openTitle opens /proc/self/comm for writing; with an error, titles are
// not set.
func openTitle() title {
	fd, err := unix.Open("/proc/self/comm", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return title{fd: -1}
	}
	return title{fd: fd}
}

// set names the process.
func (t title) set(name string) {
	if t.fd < 0 {
		return
	}
	if len(name) > 15 {
		name = name[:15]
	}
	_, _ = unix.Write(t.fd, []byte(name)) // the kernel takes each write whole, whatever the offset
}

// crashStrategy is the guardian of the worker actor: a panic in the actor
// is a crash of the worker process (exit 2), not an in-process restart.
// The postmaster decides restarts, with the process as the unit.
type crashStrategy struct{ c *child }

func (s crashStrategy) HandleFailure(_ *actor.ActorSystem, _ actor.Supervisor, _ *actor.PID, _ *actor.RestartStatistics, reason any, message any) {
	fmt.Fprintf(os.Stderr, "bgworker: worker actor panicked: %v (while handling %T)\n", reason, message)
	s.c.finish(actors.ExitPanic)
}

// worker implements actors.Worker in the child.
type worker struct {
	c         *child
	spec      actors.Spec
	assign    bridge.Assign
	ctx       context.Context // cancelled when the postmaster asks the worker to stop
	cancel    context.CancelFunc
	helpers   sync.Once // afterStart
	self      atomic.Pointer[actor.PID]
	mbox      atomic.Pointer[hold.Mailbox] // the worker actor's mailbox when it is the runtime's (start)
	seg       *shmactor.Segment
	ready     sync.Once
	readySent chan struct{} // closed once the Ready frame has been handed to the connection
	reloads   chan struct{}
	actMu     sync.Mutex
	act       activity // the latest SetActivity, not yet sent (act.set); with actMu
	actKick   chan struct{}
}

type activity struct {
	at   int64 // Unix ns
	text string
	set  bool
}

func (w *worker) Name() string                 { return w.assign.Name }
func (w *worker) Type() string                 { return w.assign.Code }
func (w *worker) Arg() []byte                  { return w.assign.Arg }
func (w *worker) Incarnation() uint64          { return w.assign.Incarnation }
func (w *worker) Logger() *slog.Logger         { return w.c.log.With("worker", w.assign.Name) }
func (w *worker) System() *actor.ActorSystem   { return w.c.system }
func (w *worker) Self() *actor.PID             { return w.self.Load() }
func (w *worker) Segment() *shmactor.Segment   { return w.seg }
func (w *worker) Terminating() <-chan struct{} { return w.c.term }
func (w *worker) Reload() <-chan struct{}      { return w.reloads }

func (w *worker) Exit(err error) {
	if err == nil {
		w.c.finish(actors.ExitDone)
	} else {
		fmt.Fprintf(os.Stderr, "bgworker: worker %q exits for restart: %v\n", w.assign.Name, err)
		w.c.finish(actors.ExitRestart)
	}
	select {} // the process exits; this goroutine never continues
}

// Ready sends Ready for a NotifyReady worker; see actors.Worker.
func (w *worker) Ready() {
	if w.assign.Flags&bridge.FlagNotifyReady != 0 {
		w.sendReady()
	}
}

// SetActivity keeps the latest text and, if the reporter has sent the
// one before, wakes it; see actors.Worker. A worker may call it per item:
// it allocates nothing, and most calls only replace what waits.
func (w *worker) SetActivity(text string) {
	at := time.Now().UnixNano()
	w.actMu.Lock()
	kick := !w.act.set
	w.act = activity{at: at, text: text, set: true}
	w.actMu.Unlock()
	if kick {
		select {
		case w.actKick <- struct{}{}:
		default:
		}
	}
}

// reportActivity sends the latest activity at most every activityEvery:
// calls in between only replace the text, so a worker may report per item.
// Nothing is sent before Ready: the host clears a worker's activity when it
// becomes running, so what was said before would be lost.
func (w *worker) reportActivity() {
	<-w.readySent
	for range w.actKick {
		w.actMu.Lock()
		a := w.act
		w.act = activity{}
		w.actMu.Unlock()
		if a.set {
			_ = w.c.conn.Send(func(b []byte) []byte { return bridge.AppendActivity(b, a.at, a.text) })
		}
		time.Sleep(activityEvery) // coalesce what comes meanwhile
		w.actMu.Lock()
		again := w.act.set // set meanwhile: its kick was not sent
		w.actMu.Unlock()
		if again {
			select {
			case w.actKick <- struct{}{}:
			default:
			}
		}
	}
}

// reload passes on the host's reload request.
func (w *worker) reload() {
	select {
	case w.reloads <- struct{}{}:
	default:
	}
	if w.spec.Props != nil {
		if pid := w.self.Load(); pid != nil {
			w.c.system.Root.Send(pid, &actors.Reload{})
		}
	}
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
	return w.c.ep.Tell(target, msg)
}

func (w *worker) Request(ctx context.Context, target string, msg any) (any, error) {
	if err := w.connected(); err != nil {
		return nil, err
	}
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	f := w.c.system.Root.RequestFuture(actor.NewPID(hostAddress, target), msg, timeout)
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() { v, err := f.Result(); done <- result{v, err} }()
	select {
	case r := <-done:
		if r.err != nil {
			if errors.Is(r.err, actor.ErrDeadLetter) {
				return nil, fmt.Errorf("runtime: request to host actor %q: no such actor or it stopped: %w", target, r.err)
			}
			return nil, fmt.Errorf("runtime: request to host actor %q: %w", target, r.err)
		}
		if re, ok := r.v.(*bridge.RemoteError); ok {
			return nil, re
		}
		return r.v, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// workerActorName is the worker actor's id in the child's actor system.
const workerActorName = "worker"

// started is called once the worker actor has handled Started: Ready,
// unless the spec waits for the worker's own Ready.
func (w *worker) started() {
	if w.assign.Flags&bridge.FlagNotifyReady == 0 {
		w.sendReady()
	}
	w.afterStart()
}

// sendReady sends Ready, once.
func (w *worker) sendReady() {
	w.ready.Do(func() {
		// Written inline: the host is waiting on it.
		_ = w.c.conn.SendUrgent(func(b []byte) []byte { return bridge.AppendEmpty(b, bridge.KindReady) })
		close(w.readySent)
	})
}

// checkStopped ends the child with exit 0 once the worker actor has
// stopped (it left the process registry before its Stopped ran).
func (w *worker) checkStopped() {
	if _, ok := w.c.system.ProcessRegistry.GetLocal(workerActorName); !ok {
		w.c.finish(actors.ExitDone)
	}
}

// lifecycle is the receiver-middleware form of lifecycleProbe, for worker
// Props that configure their own mailbox.
func (w *worker) lifecycle(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
		next(ctx, env)
		switch env.Message.(type) {
		case *actor.Started:
			w.started()
		case *actor.Stopped:
			w.c.finish(actors.ExitDone)
		}
	}
}

// lifecycleProbe is a mailbox middleware that reports, after the actor
// handled it, a Started (onStarted) and any message after which the actor
// may have stopped (onStop: a Stop, a child's Terminated that completes a
// stop, a PoisonPill).
type lifecycleProbe struct {
	onStarted, onStop func()
}

func (l *lifecycleProbe) MailboxStarted()   {}
func (l *lifecycleProbe) MessagePosted(any) {}
func (l *lifecycleProbe) MailboxEmpty()     {}
func (l *lifecycleProbe) MessageReceived(m any) {
	switch m.(type) {
	case *actor.Started:
		l.onStarted()
	case *actor.Stop, *actor.Terminated, *actor.PoisonPill:
		l.onStop()
	}
}

// propsHave reports whether p sets the named field: "mailboxProducer"
// (WithMailbox) or "dispatcher" (WithDispatcher). Props hide their fields;
// if the field is not there as expected, the answer is true, the safe side
// (the worker's Props are left as they are).
func propsHave(p *actor.Props, field string) bool {
	f := reflect.ValueOf(p).Elem().FieldByName(field)
	if !f.IsValid() || (f.Kind() != reflect.Func && f.Kind() != reflect.Interface) {
		return true
	}
	return !f.IsNil()
}

// runActor adapts a RunFunc to an actor: the function runs on its own
// goroutine from Started, and its result is the exit code.
type runActor struct {
	w  *worker
	fn actors.RunFunc
}

func (r *runActor) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		r.w.started() // Ready before the new goroutine: it may cost a thread wake
		go r.loop()
	}
}

func (r *runActor) loop() {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "bgworker: worker %q panicked: %v\n%s", r.w.assign.Name, p, debug.Stack())
			r.w.c.finish(actors.ExitPanic)
			goruntime.Goexit()
		}
	}()
	err := r.fn(r.w.ctx, r.w)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bgworker: worker %q exits for restart: %v\n", r.w.assign.Name, err)
		r.w.c.finish(actors.ExitRestart)
		return
	}
	r.w.c.finish(actors.ExitDone)
}

// Conn returns the bridge connection of a worker running in this child:
// the runtime's own tests inject protocol faults under its frames.
func Conn(w actors.Worker) *bridge.Conn { return w.(*worker).c.conn }

// ReadySent returns a channel closed once the worker's Ready frame is on
// its way, for the runtime's fault tests (counting frames would count
// heartbeats too).
func ReadySent(w actors.Worker) <-chan struct{} { return w.(*worker).readySent }
