package shmactor

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Receiver is the reading end of a queue. A queue has at most one Receiver,
// ever: attaching twice, even after Detach, fails. A Receiver is not safe for
// concurrent use; to interrupt a blocked Receive, cancel its context.
type Receiver struct {
	e    endpoint
	head uint64 // our counter; the shared one is only ever written from it
	tail uint64 // the sender's counter, as last read
}

// AttachReceiver attaches to the queue in mem (initialised by InitQueue) as
// its receiver, and records this process's pid in the queue for the sender.
func AttachReceiver(mem []byte) (*Receiver, error) {
	r := &Receiver{}
	if err := r.e.attach(mem, "receiver", false); err != nil {
		return nil, err
	}
	r.head = r.e.q.head.Load()
	r.tail = r.e.q.tail.Load()
	if r.tail-r.head > uint64(len(r.e.ring)) {
		r.e.detach()
		return nil, fmt.Errorf("%w: head %d, tail %d", ErrCorruptQueue, r.head, r.tail)
	}
	return r, nil
}

// Receive returns the next message, waiting for one while the queue is empty.
// The message is copied into buf if it fits in cap(buf), else into a new
// slice; either way it no longer refers to shared memory.
//
// Receive returns:
//   - the message and nil;
//   - an error wrapping ErrDetached once the queue is empty and the sender
//     has detached or its process has exited: every message sent before
//     that is received first;
//   - ctx's error, wrapped, if ctx is done while Receive waits;
//   - ErrEndpointDetached after Detach; an error wrapping ErrCorruptQueue if
//     the counters or a frame header are inconsistent.
//
// It consumes nothing unless it returns a message.
func (r *Receiver) Receive(ctx context.Context, buf []byte) ([]byte, error) {
	e := &r.e
	if e.done {
		return nil, ErrEndpointDetached
	}
	if e.peer.pid == 0 {
		e.peer.observe(e.other.state.Load())
	}
	if r.tail == r.head {
		if err := r.refreshTail(); err != nil {
			return nil, err
		}
		if r.tail == r.head {
			var corrupt error
			err := e.sleep(ctx, 0, func() bool {
				if err := r.refreshTail(); err != nil {
					corrupt = err
					return true
				}
				return r.tail != r.head
			})
			if corrupt != nil {
				return nil, corrupt
			}
			if err != nil {
				return nil, err
			}
		}
	}
	avail := r.tail - r.head
	pos := r.head & e.mask
	h := binary.LittleEndian.Uint64(e.ring[pos:])
	n := uint64(uint32(h))
	need := frameHeader + (n+7)&^7
	if uint32(h>>32) != ^uint32(n) || need > avail {
		return nil, fmt.Errorf("%w: frame header %#016x at %d with %d bytes available", ErrCorruptQueue, h, r.head, avail)
	}
	if uint64(cap(buf)) >= n {
		buf = buf[:n]
	} else {
		buf = make([]byte, n)
	}
	pos += frameHeader
	c := copy(buf, e.ring[pos&e.mask:])
	copy(buf[c:], e.ring)
	r.head += need
	e.q.head.Store(r.head)
	wake(e.other, r.head)
	return buf, nil
}

func (r *Receiver) refreshTail() error {
	t := r.e.q.tail.Load()
	if t-r.head > uint64(len(r.e.ring)) || t-r.head < r.tail-r.head {
		return fmt.Errorf("%w: tail moved from %d to %d, head %d", ErrCorruptQueue, r.tail, t, r.head)
	}
	r.tail = t
	return nil
}

// Detach marks the receiver gone and wakes the sender, whose Send then fails
// with ErrDetached. It releases the receiver's resources; call it before
// closing the Segment. It is idempotent; Receive fails after it.
func (r *Receiver) Detach() { r.e.detach() }
