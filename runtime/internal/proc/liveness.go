package proc

import (
	"time"

	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// Liveness. A child proves it is alive by sending: any frame counts, and
// an idle child heartbeats every Config.HeartbeatInterval (a busy one sends
// none, its traffic is enough). One watchdog goroutine checks every child
// at that interval, instead of a deadline per read: a child whose bridge
// has been silent for Config.HeartbeatTimeout is judged wedged and killed.
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

// checkLiveness reports p as silent if nothing came from it for timeout,
// counted from since at the earliest, and nothing waits in its socket.
func (p *proc) checkLiveness(now, since time.Time, timeout time.Duration) {
	if !p.watched.Load() || p.silent.Load() {
		return
	}
	heard := p.conn.LastReceived()
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
