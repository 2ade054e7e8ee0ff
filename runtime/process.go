package runtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
)

// proc is one child process, seen from the host. It is created by the
// spawner and owned by the postmaster; its goroutines (reader, waiter,
// output) report to the postmaster by message and never touch its state.
type proc struct {
	id     uint64 // unique within the runtime
	rt     *Runtime
	cmd    *exec.Cmd
	pid    int
	pidfd  *os.File // pollable: readable once the process has exited
	conn   *bridge.Conn
	ep     *bridge.Endpoint
	cookie [bridge.CookieLen]byte
	spawn  time.Time
	leaf   *cgroup.Leaf // the child's cgroup; nil without cgroups (see cgroup.go)

	// assign is sent right after the handshake when set before it (a cold
	// start); a warm child gets it later through assignNow.
	mu       sync.Mutex
	reaped   bool
	welcomed bool
	assign   *bridge.Assign
	segment  *os.File
	slotName string // the worker it runs; "" while idle

	// Owned by the postmaster (touched only while it handles a message).
	slot      *slot
	inc       uint64
	cause     string
	segFile   *os.File // this child's duplicate of the segment memfd, closed at reap
	connect   atomic.Bool
	idleReady atomic.Bool // in the warm pool, ready for a worker

	oomKilled  atomic.Bool // the kernel OOM-killed in its leaf (read before the leaf is killed)
	goodbye    int         // exit code announced by goodbye; -1 = none
	readErr    error       // why the read loop ended
	tail       *tailBuffer // last lines of output
	readerDone chan struct{}
	exited     chan struct{} // closed once the process has exited (before the reap)
	adopted    chan struct{} // closed by the postmaster when it has taken the proc in
	outDone    chan struct{}
}

// spawnRequest asks the spawner for a new child.
type spawnRequest struct {
	id    uint64
	reply func(*proc, error)
}

// spawner starts every child from one goroutine locked to its OS thread
// for the runtime's whole life: Linux's parent-death signal fires when the
// *thread* that forked exits (golang/go#27505), so forking from arbitrary
// goroutines would let children die when the Go scheduler retires a thread.
type spawner struct {
	rt   *Runtime
	reqs chan spawnRequest
	done chan struct{}
}

func newSpawner(rt *Runtime, queue int) *spawner {
	s := &spawner{rt: rt, reqs: make(chan spawnRequest, queue), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	goruntime.LockOSThread()
	// Never unlocked: when this goroutine ends, its thread ends with it, and
	// by then every child has been reaped.
	defer close(s.done)
	for r := range s.reqs {
		p, err := s.rt.startProc(r.id)
		r.reply(p, err)
	}
}

func (s *spawner) stop() {
	close(s.reqs)
	<-s.done
}

// startProc spawns the host binary as a child with the bridge on fd 3. On
// error nothing is left open.
func (rt *Runtime) startProc(id uint64) (p *proc, err error) {
	parentEnd, childEnd, err := bridge.Pair()
	if err != nil {
		return nil, err
	}
	defer childEnd.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		parentEnd.Close()
		return nil, fmt.Errorf("runtime: output pipe: %w", err)
	}
	defer outW.Close()
	p = &proc{id: id, rt: rt, goodbye: -1, tail: newTail(32), readerDone: make(chan struct{}), exited: make(chan struct{}), adopted: make(chan struct{}), outDone: make(chan struct{})}
	if _, err := rand.Read(p.cookie[:]); err != nil {
		parentEnd.Close()
		outR.Close()
		return nil, err
	}
	cmd := exec.Command(rt.exe)
	cmd.Args = []string{rt.exe}
	cmd.Env = append(rt.childEnv(), envChild+"="+hex.EncodeToString(p.cookie[:]))
	cmd.Stdout = outW
	cmd.Stderr = outW
	cmd.ExtraFiles = []*os.File{childEnd}
	if rt.lock != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, rt.lock) // fd 4: holds the interlock
	}
	// Pdeathsig is caught by the child, which then kills its whole process
	// group (see deathSignal); SIGKILL would end the leader only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSignal}
	release, err := rt.spawnIntoLeaf(p, cmd)
	if err != nil {
		parentEnd.Close()
		outR.Close()
		return nil, err
	}
	err = cmd.Start()
	release()
	if err != nil {
		p.removeLeaf()
		parentEnd.Close()
		outR.Close()
		return nil, fmt.Errorf("runtime: spawn: %w", err)
	}
	p.cmd, p.pid, p.spawn = cmd, cmd.Process.Pid, time.Now()
	// The child is not reaped until we wait for it, so its pid cannot be
	// reused before this pidfd refers to it.
	fd, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		// Without a pidfd we cannot watch it: kill and reap it now.
		cmd.Process.Kill()
		p.killLeaf()
		cmd.Wait()
		p.removeLeaf()
		parentEnd.Close()
		outR.Close()
		return nil, fmt.Errorf("runtime: pidfd_open: %w", err)
	}
	p.pidfd = os.NewFile(uintptr(fd), "pidfd")
	nc, err := net.FileConn(parentEnd)
	parentEnd.Close()
	if err != nil {
		p.killGroup()
		p.killLeaf()
		cmd.Wait()
		p.removeLeaf()
		p.pidfd.Close()
		outR.Close()
		return nil, fmt.Errorf("runtime: bridge: %w", err)
	}
	p.conn = bridge.NewConn(nc.(*net.UnixConn), rt.cfg.MaxFrame)
	// No read deadline until the child heartbeats (from Idle on): before
	// that the start timeout governs, so a slow exec under load is not
	// mistaken for a wedged child.
	p.conn.WriteTimeout = rt.cfg.HeartbeatTimeout
	p.ep = bridge.NewEndpoint(p.conn, rt.system, procAddress(id), p.resolve, rt.log)
	rt.procs.Store(id, p)
	rt.wg.Add(3)
	go p.output(outR)
	go p.read()
	go p.wait()
	return p, nil
}

func procAddress(id uint64) string { return fmt.Sprintf("bgworker-proc-%d", id) }

// killGroup sends SIGKILL to the child's process group, taking the worker's
// own children with it. Only while the leader is unreaped: its pid (and so
// the group id) cannot be reused until then.
func (p *proc) killGroup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		unix.Kill(-p.pid, unix.SIGKILL)
	}
}

// signal sends sig to the child through os.Process (a pidfd), never a raw pid.
func (p *proc) signal(sig os.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// send queues a frame to the child.
func (p *proc) send(build func([]byte) []byte) error { return p.conn.Send(build) }

// assignNow gives the child its worker: at once when the handshake is done,
// or right after it otherwise.
func (p *proc) assignNow(a bridge.Assign, segment *os.File) error {
	p.connect.Store(a.Flags&bridge.FlagConnect != 0)
	p.mu.Lock()
	p.slotName = a.Name
	if !p.welcomed {
		p.assign, p.segment = &a, segment
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.sendAssign(a, segment)
}

func (p *proc) sendAssign(a bridge.Assign, segment *os.File) error {
	build := func(b []byte) []byte { return bridge.AppendAssign(b, a) }
	if segment != nil {
		return p.conn.SendWithFile(build, segment)
	}
	// Written inline when the socket is free: a warm start waits on it.
	return p.conn.SendUrgent(build)
}

// read runs the host side of the protocol until the child goes away.
func (p *proc) read() {
	defer p.rt.wg.Done()
	defer close(p.readerDone)
	state := 0 // 0: awaiting Hello; 1: awaiting Idle; 2: idle or running
	err := p.conn.ReadLoop(func(k bridge.Kind, body []byte) error {
		switch {
		case state == 0 && k == bridge.KindHello:
			h, err := bridge.ParseHello(body)
			if err != nil {
				return err
			}
			if h.Version != bridge.Version {
				return &bridge.ProtocolError{Kind: k, Reason: fmt.Sprintf("child speaks version %d, host %d", h.Version, bridge.Version)}
			}
			if h.Cookie != p.cookie {
				return &bridge.ProtocolError{Kind: k, Reason: "wrong handshake cookie"}
			}
			state = 1
			hb := uint32(p.rt.cfg.HeartbeatInterval / time.Millisecond)
			if err := p.send(func(b []byte) []byte {
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
		case state == 1 && k == bridge.KindIdle:
			state = 2
			p.conn.ReadTimeout = p.rt.cfg.HeartbeatTimeout
			p.rt.tellAndRun(msgProcIdle{p: p})
			return bridge.ParseEmpty(k, body)
		case state == 2 && k == bridge.KindReady:
			p.rt.tellAndRun(msgProcReady{p: p})
			return bridge.ParseEmpty(k, body)
		case k == bridge.KindHeartbeat:
			return bridge.ParseEmpty(k, body)
		case state == 2 && k == bridge.KindGoodbye:
			code, err := bridge.ParseGoodbye(body)
			if err != nil {
				return err
			}
			p.mu.Lock()
			p.goodbye = int(code)
			p.mu.Unlock()
			return nil
		case state == 2 && (k == bridge.KindTell || k == bridge.KindRequest || k == bridge.KindResponse):
			return p.ep.Handle(k, body)
		}
		return &bridge.ProtocolError{Kind: k, Reason: "unexpected in this state"}
	}, false)
	p.ep.Close()
	p.mu.Lock()
	saidGoodbye := p.goodbye >= 0
	p.mu.Unlock()
	if (err == nil || errors.Is(err, io.ErrUnexpectedEOF)) && saidGoodbye {
		return // a clean exit is under way; the waiter reports it
	}
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		// EOF: the child is exiting, and its wait status will say how. A
		// child that closed its socket but lives on has broken the
		// protocol (the socket is the liveness channel): kill it.
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
		// A fault of a live child: the postmaster kills it and records why.
		// After EOF the waiter reports the exit.
		p.rt.tell(msgProcFault{p: p, err: err})
	}
}

// resolve routes a message from the child to a host actor exposed by name;
// a worker without Spec.Connect reaches none.
func (p *proc) resolve(target string) (*actor.PID, error) {
	if !p.connect.Load() {
		return nil, fmt.Errorf("runtime: worker has no Connect; it cannot address host actor %q", target)
	}
	return p.rt.resolveExposed(target)
}

// wait reaps the child once it has exited: first kill what is left of its
// process group (while the zombie still holds the group id), then wait, then
// report, once.
func (p *proc) wait() {
	defer p.rt.wg.Done()
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		_ = rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			return err != nil || info.Signo != 0 // exited (or cannot tell): stop waiting
		})
	}
	close(p.exited)
	p.killGroup()
	p.killLeaf() // what left the process group too
	p.mu.Lock()
	p.reaped = true // from here on no signal is sent
	p.mu.Unlock()
	_ = p.cmd.Wait()
	p.removeLeaf()
	p.pidfd.Close()
	// The socket reaches EOF when the child is gone; give the reader a
	// moment to take the goodbye, then close.
	select {
	case <-p.readerDone:
	case <-time.After(200 * time.Millisecond):
	}
	p.conn.Close()
	<-p.readerDone
	select {
	case <-p.outDone:
	case <-time.After(200 * time.Millisecond):
	}
	p.rt.procs.Delete(p.id)
	p.rt.acc.framesIn.Add(p.conn.Stats.FramesIn.Load())
	p.rt.acc.framesOut.Add(p.conn.Stats.FramesOut.Load())
	p.rt.acc.bytesIn.Add(p.conn.Stats.BytesIn.Load())
	p.rt.acc.bytesOut.Add(p.conn.Stats.BytesOut.Load())
	p.mu.Lock()
	goodbye, readErr := p.goodbye, p.readErr
	p.mu.Unlock()
	<-p.adopted // the spawn is reported before the exit
	p.rt.tellAndRun(msgProcExited{p: p, status: p.cmd.ProcessState.Sys().(syscall.WaitStatus), goodbye: goodbye, readErr: readErr, at: time.Now()})
}

// output logs the child's stdout and stderr line by line, each line capped,
// so a child that floods output never blocks on a full pipe.
func (p *proc) output(r *os.File) {
	defer p.rt.wg.Done()
	defer close(p.outDone)
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096)
	const maxLine = 4096
	for {
		line, err := br.ReadSlice('\n')
		truncated := false
		if errors.Is(err, bufio.ErrBufferFull) {
			truncated = true
			// Drop the rest of an over-long line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if len(line) > 0 {
			s := strings.TrimRight(string(line[:min(len(line), maxLine)]), "\n")
			p.tail.add(s)
			p.mu.Lock()
			name := p.slotName
			p.mu.Unlock()
			level, msg, attrs := childRecord(s)
			attrs = append(attrs, slog.String("worker", name), slog.Int("pid", p.pid), slog.String("source", "child"))
			if truncated {
				attrs = append(attrs, slog.Bool("truncated", true))
			}
			p.rt.log.LogAttrs(context.Background(), level, msg, attrs...)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				p.rt.log.Debug("runtime: child output", "pid", p.pid, "err", err)
			}
			return
		}
	}
}

// childRecord turns one line of a child's output into a log record: a JSON
// line written by the child's slog handler keeps its level, message and
// attributes; any other line (a panic's stack, a print) is logged as is at
// Info.
func childRecord(line string) (slog.Level, string, []slog.Attr) {
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return slog.LevelInfo, line, nil
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		return slog.LevelInfo, line, nil
	}
	msg, ok := rec[slog.MessageKey].(string)
	lv, ok2 := rec[slog.LevelKey].(string)
	if !ok || !ok2 {
		return slog.LevelInfo, line, nil
	}
	var level slog.Level
	if level.UnmarshalText([]byte(lv)) != nil {
		level = slog.LevelInfo
	}
	attrs := make([]slog.Attr, 0, len(rec))
	for k, v := range rec {
		switch k {
		case slog.MessageKey, slog.LevelKey, slog.TimeKey:
		default:
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return level, msg, attrs
}

// tailBuffer keeps the last n lines of a child's output.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
	n     int
}

func newTail(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.n {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.n-1]
	}
	t.lines = append(t.lines, s)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// resolveProcAddress routes reply PIDs of inbound requests back to the
// process they came from.
func (rt *Runtime) resolveProcAddress(pid *actor.PID) (actor.Process, bool) {
	var id uint64
	if _, err := fmt.Sscanf(pid.Address, "bgworker-proc-%d", &id); err != nil {
		return nil, false
	}
	if v, ok := rt.procs.Load(id); ok {
		return v.(*proc).ep, true
	}
	return nil, false
}
