package proc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// Config is what the production launcher needs besides the runtime's Env.
type Config struct {
	// Exe is the binary a child runs: the host binary, re-executed.
	Exe string
	// Env is the children's environment, without the child marker.
	Env []string
	// ExtraFiles are inherited by every child from fd bridge.LockFD on
	// (the lock file).
	ExtraFiles []*os.File
	// Queue bounds the spawn requests waiting for the spawner.
	Queue int
	// Cgroups, when not nil, gives every child a cgroup v2 leaf of its own
	// (cgroup.go); nil = process groups only.
	Cgroups *cgroup.Manager
}

// Launcher is the production launch.Launcher: children are real processes.
type Launcher struct {
	env   launch.Env
	cfg   Config
	reqs  chan spawnReq
	execs chan execRequest // Exec's requests, served by the spawner
	done  chan struct{}    // closed when the spawner has ended

	procs sync.Map // id → *proc, from spawn until reported exited
	acc   struct{ framesIn, framesOut, bytesIn, bytesOut atomic.Uint64 }

	liveStop chan struct{}
	// oneProc: children start with GOMAXPROCS=1 (bridge.EnvProcs), unless
	// the environment sets GOMAXPROCS. A child's start is mostly one
	// goroutine's work, and more Ps only spread it over more threads,
	// each woken and parked: in a storm of starts that is CPU the other
	// children need. An idle child on one P also wakes less. The child
	// raises it once its worker runs.
	oneProc bool
}

// New starts a launcher: its spawner and its liveness watchdog.
func New(env launch.Env, cfg Config) *Launcher {
	if cfg.Queue <= 0 {
		cfg.Queue = 256
	}
	l := &Launcher{env: env, cfg: cfg, reqs: make(chan spawnReq, cfg.Queue), execs: make(chan execRequest),
		done: make(chan struct{}), liveStop: make(chan struct{}),
		oneProc: !slices.ContainsFunc(cfg.Env, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })}
	env.System.ProcessRegistry.RegisterAddressResolver(l.resolveReply)
	go l.spawner()
	env.Go("liveness watchdog", func() { l.watchLiveness(l.liveStop) })
	return l
}

// Launch queues a spawn; the spawner answers with Reporter.Spawned.
func (l *Launcher) Launch(id uint64, worker string) { l.reqs <- spawnReq{id: id, pool: worker == ""} }

// spawnReq is one Launch for the spawner.
type spawnReq struct {
	id   uint64
	pool bool // an idle child for the warm pool
}

// Each calls fn with every live child.
func (l *Launcher) Each(fn func(launch.Child)) {
	l.procs.Range(func(_, v any) bool { fn(v.(*proc)); return true })
}

// Traffic sums the bridge counters of live and reaped children.
func (l *Launcher) Traffic() launch.Traffic {
	t := launch.Traffic{FramesIn: l.acc.framesIn.Load(), FramesOut: l.acc.framesOut.Load(),
		BytesIn: l.acc.bytesIn.Load(), BytesOut: l.acc.bytesOut.Load()}
	l.procs.Range(func(_, v any) bool {
		st := &v.(*proc).conn.Stats
		t.FramesIn += st.FramesIn.Load()
		t.FramesOut += st.FramesOut.Load()
		t.BytesIn += st.BytesIn.Load()
		t.BytesOut += st.BytesOut.Load()
		return true
	})
	return t
}

// Close stops the spawner and the watchdog. Every child must have exited.
func (l *Launcher) Close() {
	close(l.reqs)
	<-l.done
	close(l.liveStop)
}

// spawner starts every child from one goroutine locked to its OS thread
// for the launcher's whole life: Linux's parent-death signal fires when the
// *thread* that forked exits (golang/go#27505), so forking from arbitrary
// goroutines would let children die when the Go scheduler retires a thread.
func (l *Launcher) spawner() {
	goruntime.LockOSThread()
	// Never unlocked: when this goroutine ends, its thread ends with it, and
	// by then every child has been reaped.
	defer close(l.done)
	for {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return
			}
			if r.pool && len(l.reqs) == 0 {
				// A refill of the pool is for a later start, and is asked
				// for by the postmaster as it handles the start that
				// emptied a slot of the pool: the start's waiter, woken a
				// moment before, waits behind this goroutine on its
				// processor. Let it run before the fork (measured: a warm
				// start's WaitStarted returned 50-60 µs sooner after its
				// Running event).
				goruntime.Gosched()
			}
			p, err := l.start(r.id)
			if err != nil {
				l.env.Reporter.Spawned(r.id, nil, err)
				continue
			}
			l.env.Reporter.Spawned(r.id, p, nil)
			close(p.reported)
		case r := <-l.execs:
			r.run() // returns only if the exec failed
		}
	}
}

// proc is one child process, seen from the host. Its goroutines (reader,
// reaper, output) report through the Reporter and share only what is
// behind mu or atomic.
type proc struct {
	id      uint64
	l       *Launcher
	process *os.Process // signalled and reaped through its pidfd
	pid     int
	pidfd   *os.File // pollable: readable once the process has exited
	conn    *bridge.Conn
	ep      *bridge.Endpoint
	cookie  [bridge.CookieLen]byte
	spawn   time.Time
	out     *os.File // read end of the output pipe
	beat    *os.File // read end of the beat pipe (bridge.EnvBeat), drained by the watchdog; nil = beats come as frames

	mu       sync.Mutex
	reaped   bool
	welcomed bool
	// assignSent: the assignment is written. Until then a notice for the
	// worker (reload, terminate) would reach a child still in its
	// handshake, which would take it for a protocol violation.
	assignSent bool
	reload     bool           // a reload asked before the assignment was written: sent right after it
	assign     *bridge.Assign // an Assign that came before the handshake ended
	segment    *os.File
	name       string // the worker it runs; "" while idle
	goodbye    int    // exit code announced by goodbye; -1 = none
	readErr    error  // why the read loop ended

	assigned atomic.Bool   // Assign was called: frames of an assigned child are legal once it is idle
	connect  atomic.Bool   // the worker may address host actors
	watched  atomic.Bool   // heartbeating: the liveness watchdog checks it
	silent   atomic.Bool   // the watchdog reported it silent
	lastBeat atomic.Int64  // when a watchdog tick last found a beat, since beatEpoch; 0 = never
	tail     *tailBuffer   // last lines of output
	reported chan struct{} // closed once Spawned was reported: every later report waits for it
	leaf     *cgroup.Leaf  // the child's cgroup; nil without cgroups
	oom      atomic.Bool   // the kernel OOM-killed in its leaf (read before the leaf is killed)

	readerDone chan struct{}
	reaperDone chan struct{}
	exited     chan struct{} // closed once the process has exited (before the reap)
	outDone    chan struct{}
	detaching  atomic.Bool // Detach is handing the child to a new image: its goroutines stop without ending it
	adopted    bool        // handed over by an earlier image (Adopt): its handshake is done
}

func (p *proc) ID() uint64              { return p.id }
func (p *proc) PID() int                { return p.pid }
func (p *proc) Spawned() time.Time      { return p.spawn }
func (p *proc) Endpoint() actor.Process { return p.ep }

// start spawns the host binary as a child with the bridge on fd 3. On
// error nothing is left open.
func (l *Launcher) start(id uint64) (p *proc, err error) {
	parentEnd, childEnd, err := bridge.Pair()
	if err != nil {
		return nil, err
	}
	defer childEnd.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		parentEnd.Close()
		return nil, fmt.Errorf("proc: output pipe: %w", err)
	}
	defer outW.Close()
	beatR, beatW, err := beatPipe()
	if err != nil {
		parentEnd.Close()
		outR.Close()
		return nil, err
	}
	defer beatW.Close()
	fail := func() { parentEnd.Close(); outR.Close(); beatR.Close() }
	p = &proc{id: id, l: l, goodbye: -1, tail: newTail(32), reported: make(chan struct{}),
		readerDone: make(chan struct{}), reaperDone: make(chan struct{}), exited: make(chan struct{}), outDone: make(chan struct{})}
	p.beat = beatR
	if _, err := rand.Read(p.cookie[:]); err != nil {
		fail()
		return nil, err
	}
	cmd := exec.Command(l.cfg.Exe)
	cmd.Args = []string{l.cfg.Exe}
	cmd.Env = append(append([]string(nil), l.cfg.Env...), bridge.EnvChild+"="+hex.EncodeToString(p.cookie[:]))
	if l.oneProc {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1", bridge.EnvProcs+"="+bridge.ProcsRaise)
	}
	cmd.Stdout = outW
	cmd.Stderr = outW
	cmd.ExtraFiles = append(append([]*os.File{childEnd}, l.cfg.ExtraFiles...), beatW)
	cmd.Env = append(cmd.Env, bridge.EnvBeat+"="+strconv.Itoa(bridge.ChildFD+len(cmd.ExtraFiles)-1))
	// The parent-death signal is caught by the child, which then kills
	// its whole process group; SIGKILL would end the leader only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: bridge.DeathSignal}
	release, err := l.spawnIntoLeaf(p, cmd)
	if err != nil {
		fail()
		return nil, err
	}
	err = cmd.Start()
	release()
	if err != nil {
		p.removeLeaf()
		fail()
		return nil, fmt.Errorf("proc: spawn: %w", err)
	}
	p.process, p.pid, p.spawn = cmd.Process, cmd.Process.Pid, time.Now()
	// The child is not reaped until we wait for it, so its pid cannot be
	// reused before this pidfd refers to it.
	fd, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		// Without a pidfd we cannot watch it: kill and reap it now.
		cmd.Process.Kill()
		p.killLeaf()
		cmd.Wait()
		p.removeLeaf()
		fail()
		return nil, fmt.Errorf("proc: pidfd_open: %w", err)
	}
	p.pidfd = os.NewFile(uintptr(fd), "pidfd")
	nc, err := net.FileConn(parentEnd)
	parentEnd.Close()
	if err != nil {
		p.Kill()
		p.killLeaf()
		cmd.Wait()
		p.removeLeaf()
		p.pidfd.Close()
		outR.Close()
		beatR.Close()
		return nil, fmt.Errorf("proc: bridge: %w", err)
	}
	p.conn = bridge.NewConn(nc.(*net.UnixConn), l.env.MaxFrame)
	// Not watched for liveness until the child heartbeats (from Idle on):
	// before that the start timeout governs, so a slow exec under load is
	// not mistaken for a wedged child.
	p.conn.WriteTimeout = l.env.HeartbeatTimeout
	p.ep = bridge.NewEndpoint(p.conn, l.env.System, replyAddress(id), p.resolve, l.env.Log)
	l.procs.Store(id, p)
	p.out = outR
	pid := strconv.Itoa(p.pid)
	l.env.Go("output of child pid "+pid, func() { p.output(outR) })
	l.env.Go("bridge reader of child pid "+pid, p.read)
	l.env.Go("reaper of child pid "+pid, p.wait)
	return p, nil
}

// Kill sends SIGKILL to the child's process group, taking the worker's own
// children with it. Only while the leader is unreaped: its pid (and so the
// group id) cannot be reused until then.
func (p *proc) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		unix.Kill(-p.pid, unix.SIGKILL)
	}
}

// Terminate sends the terminate notice and SIGTERM, through os.Process (a
// pidfd), never a raw pid. A child whose assignment is not written yet
// runs no worker and would take the notice for a protocol violation: it
// gets the signal only.
func (p *proc) Terminate(deadline time.Time) {
	var d int64
	if !deadline.IsZero() {
		d = deadline.UnixNano()
	}
	p.mu.Lock()
	assigned := p.assignSent
	p.mu.Unlock()
	if assigned {
		_ = p.conn.Send(func(b []byte) []byte { return bridge.AppendTerminate(b, d) })
	}
	_ = p.process.Signal(syscall.SIGTERM)
}

// Reload sends the reload notice; to a child whose assignment is not
// written yet, right after it (before it, the child would take the notice
// for a protocol violation).
func (p *proc) Reload() error {
	p.mu.Lock()
	if !p.assignSent {
		p.reload = true
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.sendReload()
}

func (p *proc) sendReload() error {
	return p.conn.Send(func(b []byte) []byte { return bridge.AppendEmpty(b, bridge.KindReload) })
}

// Assign gives the child its worker: at once when the handshake is done,
// or right after it otherwise.
func (p *proc) Assign(a bridge.Assign, segment *os.File) error {
	p.connect.Store(a.Flags&bridge.FlagConnect != 0)
	p.assigned.Store(true)
	p.mu.Lock()
	p.name = a.Name
	if !p.welcomed {
		p.assign, p.segment = &a, segment
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.sendAssign(a, segment)
}

// sendAssign writes the assignment, then a reload asked before it.
func (p *proc) sendAssign(a bridge.Assign, segment *os.File) error {
	build := func(b []byte) []byte { return bridge.AppendAssign(b, a) }
	var err error
	if segment != nil {
		err = p.conn.SendWithFile(build, segment)
	} else {
		// Written inline when the socket is free: a warm start waits on it.
		err = p.conn.SendUrgent(build)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.assignSent = true
	reload := p.reload
	p.reload = false
	p.mu.Unlock()
	if reload {
		return p.sendReload()
	}
	return nil
}

// read runs the host side of the protocol until the child goes away.
func (p *proc) read() {
	defer close(p.readerDone)
	rep := p.l.env.Reporter
	stage := bridge.HostAwaitHello
	if p.adopted {
		stage = bridge.HostIdle // past its handshake in an earlier image; assigned, it moves on at once
	}
	err := p.conn.ReadLoop(func(k bridge.Kind, body []byte) error {
		if stage == bridge.HostIdle && p.assigned.Load() {
			stage = bridge.HostAssigned
		}
		if err := stage.Check(k); err != nil {
			return err
		}
		switch k {
		case bridge.KindHello:
			stage = bridge.HostAwaitIdle
			return p.hello(body)
		case bridge.KindIdle:
			stage = bridge.HostIdle
			p.watched.Store(true) // it heartbeats from now on
			<-p.reported
			rep.Idle(p)
			return bridge.ParseEmpty(k, body)
		case bridge.KindReady:
			<-p.reported
			rep.Ready(p)
			return bridge.ParseEmpty(k, body)
		case bridge.KindActivity:
			at, text, err := bridge.ParseActivity(body)
			if err != nil {
				return err
			}
			rep.Activity(p, time.Unix(0, at), text)
			return nil
		case bridge.KindHeartbeat:
			return bridge.ParseEmpty(k, body)
		case bridge.KindGoodbye:
			code, err := bridge.ParseGoodbye(body)
			if err != nil {
				return err
			}
			p.mu.Lock()
			p.goodbye = int(code)
			p.mu.Unlock()
			return nil
		default: // Tell, Request, Response
			return p.ep.Handle(k, body)
		}
	}, false)
	if errors.Is(err, bridge.ErrPaused) {
		return // detached: the stream goes on in the next image
	}
	p.ep.Close()
	p.mu.Lock()
	saidGoodbye := p.goodbye >= 0
	p.mu.Unlock()
	if (err == nil || errors.Is(err, io.ErrUnexpectedEOF)) && saidGoodbye {
		return // a clean exit is under way; the reaper reports it
	}
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		// EOF: the child is exiting, and its wait status will say how. A
		// child that closed its socket but lives on has broken the
		// protocol (the socket is the liveness channel): it is a fault.
		select {
		case <-p.exited:
			return
		case <-time.After(time.Second):
			err = &bridge.ProtocolError{Reason: "child closed its socket but kept running"}
		}
	}
	if err != nil {
		p.mu.Lock()
		p.readErr = err
		p.mu.Unlock()
		<-p.reported
		rep.Fault(p, err)
	}
}

// hello checks the child's Hello and welcomes it; an Assign that came
// first is sent right after.
func (p *proc) hello(body []byte) error {
	h, err := bridge.ParseHello(body)
	if err != nil {
		return err
	}
	if err := bridge.CheckVersion(bridge.KindHello, h.Version); err != nil {
		return err
	}
	if h.Cookie != p.cookie {
		return &bridge.ProtocolError{Kind: bridge.KindHello, Reason: "wrong handshake cookie"}
	}
	hb := uint32(p.l.env.HeartbeatInterval / time.Millisecond)
	if err := p.conn.Send(func(b []byte) []byte {
		return bridge.AppendWelcome(b, bridge.Welcome{Version: bridge.Version, HeartbeatMS: hb, MaxFrame: uint32(p.conn.MaxFrame())})
	}); err != nil {
		return err
	}
	p.mu.Lock()
	p.welcomed = true
	a, seg := p.assign, p.segment
	p.assign, p.segment = nil, nil
	p.mu.Unlock()
	if a != nil {
		return p.sendAssign(*a, seg)
	}
	return nil
}

// resolve routes a message from the child to a host actor exposed by name;
// a worker without Spec.Connect reaches none.
func (p *proc) resolve(target string) (*actor.PID, error) {
	if !p.connect.Load() {
		return nil, fmt.Errorf("runtime: worker has no Connect; it cannot address host actor %q", target)
	}
	return p.l.env.Resolve(target)
}

// wait reaps the child once it has exited: first kill what is left of its
// process group (while the zombie still holds the group id), then wait, then
// report, once. While the child is being detached it stops without reaping.
func (p *proc) wait() {
	defer close(p.reaperDone)
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			return err != nil || info.Signo != 0 // exited (or cannot tell): stop waiting
		})
	}
	if err != nil && p.detaching.Load() {
		return // woken by Detach: the child lives on, in the next image
	}
	close(p.exited)
	p.Kill()
	p.killLeaf() // what left the process group too
	p.mu.Lock()
	p.reaped = true // from here on no signal is sent
	p.mu.Unlock()
	ps, werr := p.process.Wait()
	p.removeLeaf()
	p.pidfd.Close()
	if p.beat != nil {
		p.beat.Close() // safe beside the watchdog's read: the file serialises them
	}
	// The socket reaches EOF when the child is gone; give the reader a
	// moment to take the goodbye, then close.
	select {
	case <-p.readerDone:
	case <-time.After(200 * time.Millisecond):
	}
	p.conn.Close()
	<-p.readerDone
	// Output ends at EOF, once every process holding the pipe is gone. A
	// descendant that left the process group (setsid) may hold it open for
	// ever: after a moment to drain what the child wrote last, the read end
	// is closed, which ends the reader; the runtime never waits on a pipe
	// that another process keeps open.
	select {
	case <-p.outDone:
	case <-time.After(outputDrain):
		p.out.Close()
		<-p.outDone
	}
	l := p.l
	l.acc.framesIn.Add(p.conn.Stats.FramesIn.Load())
	l.acc.framesOut.Add(p.conn.Stats.FramesOut.Load())
	l.acc.bytesIn.Add(p.conn.Stats.BytesIn.Load())
	l.acc.bytesOut.Add(p.conn.Stats.BytesOut.Load())
	l.procs.Delete(p.id)
	p.mu.Lock()
	goodbye := p.goodbye
	p.mu.Unlock()
	<-p.reported // the spawn is reported before the exit
	var st syscall.WaitStatus
	if werr == nil {
		st = ps.Sys().(syscall.WaitStatus)
	} else {
		st = syscall.WaitStatus(syscall.SIGKILL) // cannot tell: as killed
		l.env.Log.Warn("runtime: could not reap a child", "pid", p.pid, "err", werr)
	}
	l.env.Reporter.Exited(p, launch.Exit{Status: st, Goodbye: goodbye, At: time.Now(), Tail: p.tail.String(),
		OOM: p.oom.Load() && st.Signaled() && st.Signal() == syscall.SIGKILL})
}

// replyAddress is the actor address by which a child's requests are
// answered: a reply PID with it resolves to the child's endpoint.
func replyAddress(id uint64) string { return "bgworker-proc-" + strconv.FormatUint(id, 10) }

// resolveReply routes reply PIDs of inbound requests back to the process
// they came from.
func (l *Launcher) resolveReply(pid *actor.PID) (actor.Process, bool) {
	const prefix = "bgworker-proc-"
	if len(pid.Address) <= len(prefix) || pid.Address[:len(prefix)] != prefix {
		return nil, false
	}
	id, err := strconv.ParseUint(pid.Address[len(prefix):], 10, 64)
	if err != nil {
		return nil, false
	}
	if v, ok := l.procs.Load(id); ok {
		return v.(*proc).ep, true
	}
	return nil, false
}
