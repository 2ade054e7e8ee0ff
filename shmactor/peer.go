package shmactor

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// peerWatch tells whether a queue's peer process is still alive, without ever
// signalling a raw pid: the first time it sees the peer attached it opens a
// pidfd on the pid the peer recorded, and later polls the pidfd, which becomes
// readable when that process exits. Once open, the pidfd refers to that
// process and no other, so a pid reused after the peer's death cannot fool it.
//
// The one window left is between the peer's death and our first sight of its
// pid: if the pid was reused in between, we watch the wrong process. Both
// sides look as soon as they attach and at every Send and Receive, so the
// window is small; and a peer's death resets the whole shared-memory group
// anyway.
type peerWatch struct {
	pid  int  // the peer's pid, 0 until seen
	fd   int  // pidfd on pid, or -1
	dead bool // the pidfd reported the exit, or the pid was gone when first seen
}

// observe records the peer's pid from its state word, once, and opens a
// pidfd on it. A peer in our own process needs no pidfd.
func (p *peerWatch) observe(state uint64) {
	if p.pid != 0 || state&3 != sideAttached {
		return
	}
	pid := int(state >> 2)
	if pid <= 0 {
		return
	}
	p.pid = pid
	if pid == os.Getpid() {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		p.fd = fd
	case errors.Is(err, unix.ESRCH):
		p.dead = true
	default:
		// No pidfd (e.g. a kernel before 5.3, or a seccomp filter): we
		// cannot tell death from silence; callers still have their ctx.
	}
}

// gone returns nil if the peer, whose state word is state, may still be
// around; else an error wrapping ErrDetached.
func (p *peerWatch) gone(state uint64) error {
	switch state & 3 {
	case sideDetached:
		return ErrDetached
	case sideAttached:
		if pid := int(state >> 2); p.pid != 0 && pid != p.pid {
			// Another process attached after the one watched detached (a
			// worker started again on the same segment): watch it.
			p.close()
			*p = peerWatch{fd: -1}
		}
		p.observe(state)
	default:
		return nil // not attached yet
	}
	if !p.dead && p.fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			p.dead = true
		}
	}
	if p.dead {
		return fmt.Errorf("%w: process %d exited", ErrDetached, p.pid)
	}
	return nil
}

// close releases the pidfd.
func (p *peerWatch) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}
