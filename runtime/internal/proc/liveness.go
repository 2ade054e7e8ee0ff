package proc

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// beatEpoch anchors proc.lastBeat's monotonic readings.
var beatEpoch = time.Now()

// beatPipe makes a child's beat pipe, both ends non-blocking and
// close-on-exec: the read end for the watchdog, the write end to pass.
// Neither is registered with Go's poller (the Files are made while the
// descriptors still block): a beat must not wake the host, only wait in
// the pipe for the watchdog's next pass.
func beatPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("proc: beat pipe: %w", err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "beat"), os.NewFile(uintptr(fds[1]), "beat-child")
	if err := errors.Join(unix.SetNonblock(fds[0], true), unix.SetNonblock(fds[1], true)); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("proc: beat pipe: %w", err)
	}
	return r, w, nil
}

// adoptBeat takes a duplicate of an inherited beat pipe's read end, as
// beatPipe makes one: close-on-exec, non-blocking, off Go's poller.
func adoptBeat(fd int) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("beat pipe: %w", err)
	}
	// The flag is the open file's, shared with fd: blocking only while
	// the File is made, so that it is not registered with the poller.
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("beat pipe: %w", err)
	}
	f := os.NewFile(uintptr(nfd), "beat")
	if err := unix.SetNonblock(nfd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("beat pipe: %w", err)
	}
	return f, nil
}

// Liveness. A child proves it is alive by sending: any frame counts, and
// an idle child beats every Config.HeartbeatInterval (a busy one does not,
// its traffic is enough). A beat is a byte on the child's beat pipe
// (bridge.EnvBeat), which the watchdog drains at each tick, or, for a child
// without one, a heartbeat frame: on the bridge each beat would wake the
// child's reader, and waking from idle costs the host ~50-90 µs of CPU (the
// thread in the poller, the scheduler's monitor, an extra thread spinning),
// a hundred times a second for a hundred idle workers; reading a hundred
// pipes in one pass costs a few µs each. One watchdog goroutine checks every
// child at that interval, instead of a deadline per read: a child whose
// bridge and beat pipe have been silent for Config.HeartbeatTimeout is
// judged wedged and killed.
//
// Silence is judged from what the child sent, never from how long the
// host itself was away. Before declaring a child silent the watchdog asks
// its socket whether bytes are waiting unread (the host fell behind, not
// the child); and when the watchdog finds that its own tick came much later
// than due (the host was stopped with SIGSTOP or Ctrl-Z, held by a
// debugger, or its VM paused), it counts every child's silence from the
// moment it resumed.

// watchLiveness runs until stop is closed.
func (l *Launcher) watchLiveness(stop <-chan struct{}) {
	every, timeout := l.env.HeartbeatInterval, l.env.HeartbeatTimeout
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	since := last // silence is counted from here at the earliest: the host's last resume
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		if away := now.Sub(last); away > 2*every+100*time.Millisecond {
			since = now
			l.env.Log.Warn("runtime: the host was not running for a while; children's silence is counted from now",
				"away", away.Round(time.Millisecond))
		}
		last = now
		l.procs.Range(func(_, v any) bool { v.(*proc).checkLiveness(now, since, timeout); return true })
	}
}

// drainBeats empties p's beat pipe, without waiting; true if a beat was
// in it.
func (p *proc) drainBeats() bool {
	if p.beat == nil {
		return false
	}
	rc, err := p.beat.SyscallConn()
	if err != nil {
		return false
	}
	got := false
	var buf [64]byte
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), buf[:])
			if n > 0 {
				got = true
			}
			if err == unix.EINTR || n == len(buf) {
				continue
			}
			return true // drained, or the pipe failed: never wait here
		}
	})
	return got
}

// checkLiveness reports p as silent if nothing came from it for timeout,
// counted from since at the earliest, and nothing waits in its socket.
func (p *proc) checkLiveness(now, since time.Time, timeout time.Duration) {
	if !p.watched.Load() || p.silent.Load() {
		return
	}
	if p.drainBeats() {
		p.lastBeat.Store(int64(now.Sub(beatEpoch)))
	}
	heard := p.conn.LastReceived()
	if b := p.lastBeat.Load(); b != 0 && beatEpoch.Add(time.Duration(b)).After(heard) {
		heard = beatEpoch.Add(time.Duration(b))
	}
	if heard.Before(since) {
		heard = since
	}
	if now.Sub(heard) <= timeout {
		return
	}
	if n, err := p.conn.Buffered(); err == nil && n > 0 {
		return // it spoke; the reader has not got to it yet
	}
	p.silent.Store(true)
	p.l.env.Reporter.Fault(p, launch.ErrSilent)
}
