package shmactor

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Sender is the writing end of a queue. A queue has at most one Sender, ever:
// attaching twice, even after Detach, fails. A Sender is not safe for
// concurrent use; to interrupt a blocked Send, cancel its context.
type Sender struct {
	e    endpoint
	tail uint64 // our counter; the shared one is only ever written from it
	head uint64 // the receiver's counter, as last read
}

// AttachSender attaches to the queue in mem (initialised by InitQueue) as its
// sender, and records this process's pid in the queue for the receiver.
func AttachSender(mem []byte) (*Sender, error) {
	s := &Sender{}
	if err := s.e.attach(mem, "sender", true); err != nil {
		return nil, err
	}
	s.tail = s.e.q.tail.Load()
	s.head = s.e.q.head.Load()
	if s.tail-s.head > uint64(len(s.e.ring)) {
		s.e.detach()
		return nil, fmt.Errorf("%w: head %d, tail %d", ErrCorruptQueue, s.head, s.tail)
	}
	return s, nil
}

// MaxMessage returns the length of the largest message Send accepts: the
// ring size minus an 8-byte frame header.
func (s *Sender) MaxMessage() int { return len(s.e.ring) - frameHeader }

// Send copies msg into the queue as one message, waiting for room while the
// ring is full. Either the whole message is sent or none of it is.
//
// Send returns:
//   - nil once the message is in the ring (not necessarily received);
//   - an error wrapping ErrTooLarge if len(msg) > MaxMessage, at once;
//   - an error wrapping ErrDetached if the receiver has detached, or if its
//     process has exited while Send waits for room (a receiver that dies
//     while there is room is noticed only when the ring fills up);
//   - ctx's error, wrapped, if ctx is done while Send waits;
//   - ErrEndpointDetached after Detach; an error wrapping ErrCorruptQueue
//     if the shared counters are inconsistent.
func (s *Sender) Send(ctx context.Context, msg []byte) error {
	e := &s.e
	if e.done {
		return ErrEndpointDetached
	}
	if len(msg) > s.MaxMessage() {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(msg), s.MaxMessage())
	}
	st := e.other.state.Load()
	if st&3 == sideDetached {
		return ErrDetached
	}
	if e.peer.pid == 0 {
		e.peer.observe(st)
	}
	need := frameHeader + uint64(len(msg)+7)&^7
	capacity := uint64(len(e.ring))
	if s.tail+need-s.head > capacity {
		if err := s.refreshHead(); err != nil {
			return err
		}
		if s.tail+need-s.head > capacity {
			want := s.tail + need - capacity
			var corrupt error
			err := e.sleep(ctx, want, func() bool {
				if err := s.refreshHead(); err != nil {
					corrupt = err
					return true
				}
				return s.head >= want
			})
			if corrupt != nil {
				return corrupt
			}
			if err != nil {
				return err
			}
			// The receiver may have detached while we waited.
			if e.other.state.Load()&3 == sideDetached {
				return ErrDetached
			}
		}
	}
	pos := s.tail & e.mask
	binary.LittleEndian.PutUint64(e.ring[pos:], uint64(len(msg))|uint64(^uint32(len(msg)))<<32)
	pos += frameHeader
	n := copy(e.ring[pos&e.mask:], msg) // pos may equal the capacity, hence the mask
	copy(e.ring, msg[n:])
	s.tail += need
	e.q.tail.Store(s.tail)
	wake(e.other, s.tail)
	return nil
}

func (s *Sender) refreshHead() error {
	h := s.e.q.head.Load()
	if h-s.head > s.tail-s.head { // head went backwards, or past tail
		return fmt.Errorf("%w: head moved from %d to %d, tail %d", ErrCorruptQueue, s.head, h, s.tail)
	}
	s.head = h
	return nil
}

// Detach marks the sender gone and wakes the receiver, which gets the
// messages still in the ring and then ErrDetached. It releases the
// sender's resources; call it before closing the Segment (after which the
// queue's memory is unmapped). It is idempotent; Send fails after it.
func (s *Sender) Detach() { s.e.detach() }
