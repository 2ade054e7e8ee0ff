package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// Handing children to a new image of the host (an in-place upgrade): the
// host exec's itself, same pid, so its children stay its children; their
// sockets and output pipes go across as inherited descriptors, and the new
// image's launcher adopts them. Detach stops the goroutines that serve each
// child without ending it; Adopt starts them again in the new image; Exec
// runs the new image from the spawner's own thread.

// ChildState is one child as Detach hands it over.
type ChildState struct {
	ID       uint64
	PID      int
	Sock     int    // the bridge socket's descriptor, inheritable
	Out      int    // the output pipe's read end, inheritable
	Beat     int    // the beat pipe's read end, inheritable; -1 = none (beats come as frames)
	Leftover []byte // bytes read from the socket after the last whole frame
	Goodbye  int    // the code its goodbye announced; -1 = none
	Name     string // the worker it runs; "" while idle
	Assigned bool
	Connect  bool
	Spawned  time.Time
	Tail     []string
	Stats    [4]uint64 // frames in, frames out, bytes in, bytes out
	Leaf     string    // its cgroup leaf's name; "" without
}

// State is every child handed over, and the traffic of those already gone.
type State struct {
	Children []ChildState
	Acc      [4]uint64
}

// Detach stops serving every child without ending any: each read loop
// pauses at a frame boundary, queued frames are written, the reapers and
// output readers stop. It clears close-on-exec on the descriptors the
// children's states name, and keeps them open in files (which the caller
// keeps referenced until exec). A child that exits meanwhile is reaped and
// reported as usual, and is not in the state. After Detach the launcher
// serves no child; Close it only if the exec fails and the state was
// adopted again.
func (l *Launcher) Detach(ctx context.Context) (State, []*os.File, error) {
	var st State
	var keep []*os.File
	var errs []error
	l.procs.Range(func(_, v any) bool {
		p := v.(*proc)
		cs, files, err := p.detach(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("child %d: %w", p.pid, err))
			return true
		}
		if files != nil {
			st.Children = append(st.Children, cs)
			keep = append(keep, files...)
		}
		return true
	})
	st.Acc = [4]uint64{l.acc.framesIn.Load(), l.acc.framesOut.Load(), l.acc.bytesIn.Load(), l.acc.bytesOut.Load()}
	return st, keep, errors.Join(errs...)
}

// detach stops serving p; nil files when it exited meanwhile.
func (p *proc) detach(ctx context.Context) (ChildState, []*os.File, error) {
	p.detaching.Store(true)
	p.pidfd.SetReadDeadline(time.Now()) // wakes the reaper
	<-p.reaperDone
	p.mu.Lock()
	reaped := p.reaped
	p.mu.Unlock()
	if reaped {
		return ChildState{}, nil, nil // it exited: its exit is being reported
	}
	sock, leftover, err := p.conn.Detach(ctx)
	if err != nil {
		return ChildState{}, nil, err
	}
	p.out.SetReadDeadline(time.Now()) // wakes the output reader
	<-p.outDone
	<-p.readerDone
	p.pidfd.Close()
	p.process.Release() // its own pidfd; the next launcher finds the process anew
	p.l.procs.Delete(p.id)
	files := []*os.File{sock, p.out}
	beat := -1
	if p.beat != nil {
		files = append(files, p.beat)
		beat = int(p.beat.Fd())
	}
	for _, f := range files {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return ChildState{}, nil, fmt.Errorf("clear close-on-exec: %w", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := ChildState{ID: p.id, PID: p.pid, Sock: int(sock.Fd()), Out: int(p.out.Fd()), Beat: beat, Leftover: leftover,
		Goodbye: p.goodbye, Name: p.name, Assigned: p.assigned.Load(), Connect: p.connect.Load(), Spawned: p.spawn,
		Tail: p.tail.lines, Stats: [4]uint64{p.conn.Stats.FramesIn.Load(), p.conn.Stats.FramesOut.Load(),
			p.conn.Stats.BytesIn.Load(), p.conn.Stats.BytesOut.Load()}}
	if p.leaf != nil {
		cs.Leaf = p.leaf.Name()
	}
	return cs, files, nil
}

// Adopt starts a launcher, as New does, that serves the children of st:
// they run on, with their sockets, pipes and cgroup leaves, and are
// reaped by this image. It works on duplicates of the descriptors st
// names and leaves those to the caller: a new image closes them with
// CloseDescriptors, a host whose exec failed with the files Detach gave it.
func Adopt(env launch.Env, cfg Config, st State) (*Launcher, []launch.Child, error) {
	l := New(env, cfg)
	l.acc.framesIn.Store(st.Acc[0])
	l.acc.framesOut.Store(st.Acc[1])
	l.acc.bytesIn.Store(st.Acc[2])
	l.acc.bytesOut.Store(st.Acc[3])
	var kids []launch.Child
	for _, cs := range st.Children {
		p, err := l.adopt(cs)
		if err != nil {
			return l, kids, fmt.Errorf("proc: adopt child %d: %w", cs.PID, err)
		}
		kids = append(kids, p)
	}
	return l, kids, nil
}

// CloseDescriptors closes the descriptors st names, which a new image
// inherited; call it after Adopt.
func (st State) CloseDescriptors() {
	for _, cs := range st.Children {
		for _, fd := range []int{cs.Sock, cs.Out, cs.Beat} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
}

// dupFile returns a close-on-exec duplicate of fd as a File on Go's
// poller, so that a read deadline can wake its reader: non-blocking, which
// Detach's File.Fd calls had undone.
func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

func (l *Launcher) adopt(cs ChildState) (*proc, error) {
	p := &proc{id: cs.ID, l: l, pid: cs.PID, spawn: cs.Spawned, goodbye: cs.Goodbye, name: cs.Name, tail: newTail(32),
		reported: make(chan struct{}), readerDone: make(chan struct{}), reaperDone: make(chan struct{}),
		exited: make(chan struct{}), outDone: make(chan struct{}), welcomed: true, assignSent: cs.Assigned, adopted: true}
	close(p.reported) // the postmaster knows it from its own state
	p.tail.lines = append(p.tail.lines, cs.Tail...)
	p.assigned.Store(cs.Assigned)
	p.connect.Store(cs.Connect)
	p.watched.Store(true)
	sockFile, err := dupFile(cs.Sock, "bridge")
	if err != nil {
		return nil, err
	}
	nc, err := net.FileConn(sockFile) // a duplicate again, which the Conn owns
	sockFile.Close()
	if err != nil {
		return nil, fmt.Errorf("bridge socket: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("descriptor %d is not a unix socket", cs.Sock)
	}
	if p.out, err = dupFile(cs.Out, "output"); err != nil {
		uc.Close()
		return nil, err
	}
	fail := func() {
		uc.Close()
		p.out.Close()
		if p.beat != nil {
			p.beat.Close()
		}
	}
	if cs.Beat >= 0 {
		if p.beat, err = adoptBeat(cs.Beat); err != nil {
			fail()
			return nil, err
		}
	}
	if p.process, err = os.FindProcess(cs.PID); err != nil {
		fail()
		return nil, err
	}
	fd, err := unix.PidfdOpen(cs.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		fail()
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	p.pidfd = os.NewFile(uintptr(fd), "pidfd")
	if cs.Leaf != "" && l.cfg.Cgroups != nil {
		p.leaf = l.cfg.Cgroups.Leaf(cs.Leaf)
	}
	p.conn = bridge.NewConnWith(uc, l.env.MaxFrame, cs.Leftover)
	p.conn.WriteTimeout = l.env.HeartbeatTimeout
	p.conn.Stats.FramesIn.Store(cs.Stats[0])
	p.conn.Stats.FramesOut.Store(cs.Stats[1])
	p.conn.Stats.BytesIn.Store(cs.Stats[2])
	p.conn.Stats.BytesOut.Store(cs.Stats[3])
	p.ep = bridge.NewEndpoint(p.conn, l.env.System, replyAddress(cs.ID), p.resolve, l.env.Log)
	l.procs.Store(cs.ID, p)
	pid := strconv.Itoa(p.pid)
	l.env.Go("output of child pid "+pid, func() { p.output(p.out) })
	l.env.Go("bridge reader of child pid "+pid, p.read)
	l.env.Go("reaper of child pid "+pid, p.wait)
	// Requests the worker sent before the exec were to actors of the
	// image that is gone: tell it, so that it fails them at once.
	_ = p.conn.Send(func(b []byte) []byte { return bridge.AppendEmpty(b, bridge.KindReattach) })
	return p, nil
}

// Exec replaces this process's image with path, from the spawner's thread:
// the children's parent-death signal follows the thread that forked them,
// and that thread lives on as the new image's. It returns only if the exec
// failed.
func (l *Launcher) Exec(path string, argv, env []string) error {
	reply := make(chan error, 1)
	l.execs <- execRequest{path: path, argv: argv, env: env, reply: reply}
	return <-reply
}

type execRequest struct {
	path      string
	argv, env []string
	reply     chan error
}

func (r execRequest) run() { r.reply <- syscall.Exec(r.path, r.argv, r.env) }
