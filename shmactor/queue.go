package shmactor

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// A queue is a single-producer single-consumer ring of variable-length
// messages in shared memory, after PostgreSQL's shm_mq. Its region holds a
// header (queueHeader) followed by the ring. The ring capacity is a power of
// two; the read and write positions are free-running 64-bit byte counters
// (head, tail), so the ring is empty when head == tail and holds tail-head
// bytes. Each message is an 8-byte frame header (length, then its bitwise
// complement as a check) followed by the payload, padded to 8 bytes; frames
// wrap around the end of the ring, but a frame header never straddles it.
//
// A message is published whole: the sender writes the frame, then stores the
// new tail. So a receiver only ever sees complete messages, even from a
// sender that was killed, and a cancelled Send or Receive leaves no partial
// state behind. The price is that a message must fit in the ring: larger ones
// are refused with ErrTooLarge rather than chunked.
//
// Waiting uses one futex word per side (seq) and a flag (waiting): a side
// about to sleep sets its flag, rechecks the counters, and sleeps on its seq;
// the other side, after moving a counter, wakes it only if the flag was set,
// clearing it, so that a stream of messages to an awake peer costs no system
// call. Every sleep is bounded by WaitSlice, after which the sleeper rechecks
// its context and whether its peer has detached or died.
type queueHeader struct {
	magic    uint32 // queueMagic
	version  uint32 // queueVersion
	capacity uint64 // ring bytes, a power of two; checked against the region size
	_        [48]byte

	tail atomic.Uint64 // bytes ever written; written by the sender only
	_    [56]byte
	head atomic.Uint64 // bytes ever read; written by the receiver only
	_    [56]byte

	sender   queueSide
	_        [64 - unsafe.Sizeof(queueSide{})]byte
	receiver queueSide
	_        [64 - unsafe.Sizeof(queueSide{})]byte
}

// queueSide is one side's cache line.
type queueSide struct {
	// state: 0 = never attached; pid<<2|sideAttached; pid<<2|sideDetached.
	state atomic.Uint64
	// waiting: 1 = this side may be asleep on seq; set by this side before
	// it sleeps, cleared by whichever side sees it first.
	waiting atomic.Uint32
	// seq is the futex word this side sleeps on; the peer bumps it to wake it.
	seq atomic.Uint32
	// want is, for a sender waiting for space, the head it needs to reach.
	want atomic.Uint64
}

const (
	queueMagic   = 0x716d6873 // "shmq"
	queueVersion = 1

	sideAttached = 1
	sideDetached = 2

	frameHeader = 8
	minRing     = 64
	maxRing     = 1 << 30

	// queueHeaderSize is the bytes before the ring in a queue region.
	queueHeaderSize = int(unsafe.Sizeof(queueHeader{}))
)

var (
	// ErrDetached is returned by Send and Receive when the peer has
	// detached or its process has exited. A Receiver still gets every
	// message sent before that; ErrDetached comes once the ring is empty.
	ErrDetached = errors.New("shmactor: queue peer detached")

	// ErrTooLarge is returned, wrapped, by Send for a message that does
	// not fit in the ring (see Sender.MaxMessage).
	ErrTooLarge = errors.New("shmactor: message larger than the queue")

	// ErrCorruptQueue is returned, wrapped, when a queue's header or frames
	// are not consistent, e.g. because a process scribbled on them. The
	// queue cannot be used any more.
	ErrCorruptQueue = errors.New("shmactor: corrupt queue")

	// ErrEndpointDetached is returned by Send or Receive after the caller's
	// own Detach.
	ErrEndpointDetached = errors.New("shmactor: queue endpoint used after Detach")
)

// ringFor returns the ring capacity for a queue region of n bytes: the
// largest power of two that fits, up to 1 GiB, or 0 if n is too small.
func ringFor(n int) uint64 {
	n -= queueHeaderSize
	if n < minRing {
		return 0
	}
	return min(uint64(1)<<(bits.Len64(uint64(n))-1), maxRing)
}

// QueueSize returns the size of a region that holds a queue whose ring has at
// least ringBytes bytes, rounded up to a power of two (at least 64 bytes).
// The largest message is the ring size minus 8. It panics if ringBytes is
// more than 1 GiB.
//
// For bulk transfer between two CPUs, a ring larger than a core's L2 cache
// (say 1 to 4 MiB) is markedly faster than a small one: by the time the
// sender overwrites a line, the receiver's copy of it has left its cache, so
// the write needs no cross-core invalidation. On a 2-vCPU AMD EPYC VM, 4 KiB
// messages ran at about 11 GB/s through a 256 KiB ring and 30 GB/s through a
// 2 MiB one.
func QueueSize(ringBytes int) int {
	if ringBytes > maxRing {
		panic(fmt.Sprintf("shmactor: QueueSize(%d): ring larger than %d bytes", ringBytes, maxRing))
	}
	r := max(ringBytes, minRing)
	return queueHeaderSize + 1<<bits.Len(uint(r-1))
}

// InitQueue makes mem, typically a whole region sized with QueueSize, an
// empty queue with no sender and no receiver. Call it from the region's
// Region.Init. It fails if mem is too small or not 8-byte aligned.
func InitQueue(mem []byte) error {
	q, ring, err := queueIn(mem)
	if err != nil {
		return err
	}
	*q = queueHeader{}
	q.capacity = ring
	q.version = queueVersion
	q.magic = queueMagic
	return nil
}

func queueIn(mem []byte) (*queueHeader, uint64, error) {
	ring := ringFor(len(mem))
	if ring == 0 {
		return nil, 0, fmt.Errorf("shmactor: queue region of %d bytes, want at least %d", len(mem), QueueSize(minRing))
	}
	p := unsafe.Pointer(&mem[0])
	if uintptr(p)%8 != 0 {
		return nil, 0, fmt.Errorf("shmactor: queue region at %p is not 8-byte aligned", p)
	}
	return (*queueHeader)(p), ring, nil
}

// endpoint is what Sender and Receiver share: the queue, this process's side
// and the peer's.
type endpoint struct {
	q     *queueHeader
	ring  []byte
	mask  uint64
	self  *queueSide
	other *queueSide
	pid   int
	peer  peerWatch
	done  bool
}

// attach validates the queue in mem and claims side self of it.
func (e *endpoint) attach(mem []byte, role string, sender bool) error {
	q, ring, err := queueIn(mem)
	if err != nil {
		return err
	}
	if q.magic != queueMagic || q.version != queueVersion {
		return fmt.Errorf("%w: bad magic or version (InitQueue not called?)", ErrCorruptQueue)
	}
	if q.capacity != ring {
		return fmt.Errorf("%w: capacity %d, want %d for a %d-byte region", ErrCorruptQueue, q.capacity, ring, len(mem))
	}
	e.q = q
	e.ring = mem[queueHeaderSize : queueHeaderSize+int(ring) : queueHeaderSize+int(ring)]
	e.mask = ring - 1
	e.self, e.other = &q.receiver, &q.sender
	if sender {
		e.self, e.other = &q.sender, &q.receiver
	}
	e.pid = os.Getpid()
	// A side attaches where none is, or where the last one detached
	// cleanly (a worker stopped and started again on the same segment):
	// the ring is consistent then. A side that is attached, or whose
	// holder died, is not taken over.
	for {
		st := e.self.state.Load()
		if st != 0 && st&3 != sideDetached {
			return fmt.Errorf("shmactor: queue already has a %s (state %#x); a side attaches again only after a clean detach", role, st)
		}
		if e.self.state.CompareAndSwap(st, uint64(e.pid)<<2|sideAttached) {
			break
		}
	}
	e.peer = peerWatch{fd: -1}
	e.peer.observe(e.other.state.Load())
	return nil
}

// peerGone returns nil if the peer may still be around, else an error
// wrapping ErrDetached.
func (e *endpoint) peerGone() error {
	return e.peer.gone(e.other.state.Load())
}

// wake wakes side s if it announced that it may be asleep and pos, our new
// counter, reaches what it wants.
func wake(s *queueSide, pos uint64) {
	if s.waiting.Load() != 0 && pos >= s.want.Load() && s.waiting.Swap(0) != 0 {
		s.seq.Add(1)
		futexWake(&s.seq, 1)
	}
}

// detach marks our side detached, wakes the peer so that it notices, and
// releases the pidfd. It is idempotent.
func (e *endpoint) detach() {
	if e.done || e.q == nil {
		return
	}
	e.done = true
	e.self.state.Store(uint64(e.pid)<<2 | sideDetached)
	e.other.waiting.Store(0)
	e.other.seq.Add(1)
	futexWake(&e.other.seq, 1)
	e.peer.close()
}

// sleep waits until ready reports true: it spins briefly, then sleeps on our
// seq in WaitSlice steps, rechecking ready, ctx and the peer after each. want
// is stored for the peer before each sleep (see queueSide.want).
func (e *endpoint) sleep(ctx context.Context, want uint64, ready func() bool) error {
	if spin(ready) {
		return nil
	}
	for {
		d, err := waitSlice(ctx)
		if err != nil {
			return err
		}
		seq := e.self.seq.Load()
		e.self.want.Store(want)
		e.self.waiting.Store(1)
		// The peer moves its counter, then reads our flag; we set our flag,
		// then read its counter. With sequentially consistent atomics at
		// least one of us sees the other's store: either we see the new
		// counter here, or the peer sees our flag and bumps seq, which makes
		// the futex wait below return at once.
		if ready() {
			e.self.waiting.Store(0)
			return nil
		}
		if err := e.peerGone(); err != nil {
			e.self.waiting.Store(0)
			if ready() { // the peer's last message raced with its going
				return nil
			}
			return err
		}
		futexWait(&e.self.seq, seq, d)
		e.self.waiting.Store(0)
		if ready() {
			return nil
		}
	}
}

// spin polls ready for up to spinFor before a caller sleeps on a futex, and
// reports whether it became true: a futex sleep and wake-up cost several
// microseconds and a trip through the scheduler, more than the peer usually
// needs to make room or data. Every few polls it yields the processor, in
// case the peer needs it: a goroutine of this process when GOMAXPROCS is 1
// (a goroutine asleep in a futex keeps its P until the scheduler's monitor
// takes it back, up to milliseconds later), or another process on a busy
// machine. With nothing else to run, a yield returns at once.
func spin(ready func() bool) bool {
	var start time.Time
	for i := 1; ; i++ {
		if ready() {
			return true
		}
		if i%16 != 0 {
			continue
		}
		runtime.Gosched()
		if start.IsZero() {
			start = time.Now()
		} else if i%256 == 0 && time.Since(start) >= spinFor {
			return false
		}
	}
}

// spinFor is how long spin polls.
const spinFor = 50 * time.Microsecond
