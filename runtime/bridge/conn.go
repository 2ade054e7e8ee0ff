package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by writes on a closed connection.
var ErrClosed = errors.New("bridge: connection closed")

// PeerGone reports whether err, from a send, means the other side is gone:
// its socket closed (EPIPE) or reset, or this Conn closed after reading its
// end. A process that died has not broken the protocol; its wait status
// says what happened.
func PeerGone(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// ErrPaused is returned by a read loop stopped by Detach.
var ErrPaused = errors.New("bridge: read loop paused for a detach")

// ErrBackpressure is returned by TrySend when the write queue is full.
var ErrBackpressure = errors.New("bridge: write queue full")

// Stats counts a connection's traffic. All fields are updated atomically.
// A frame counts as out once it is handed to the socket (written, or being
// written), in as it is read.
type Stats struct {
	FramesIn, FramesOut atomic.Uint64
	BytesIn, BytesOut   atomic.Uint64
}

// Conn is one end of the bridge: a unix socket carrying frames. Writes are
// appended to a queue that one writer goroutine flushes in as few syscalls
// as possible (batching is what makes the bridge fast: one write per frame
// costs 30× the throughput); the writer is woken only when it waits for
// work, not per frame. An urgent frame (SendUrgent: a request or response
// someone waits on) is written by its sender when the queue is empty and
// nobody is writing, saving the hand-off. Reads are done by the goroutine
// that calls ReadLoop. The write queue is bounded: a writer blocks while
// it is over MaxPending bytes (backpressure), up to the write timeout.
type Conn struct {
	uc       *net.UnixConn
	rc       syscall.RawConn // uc's, for tryWrite
	maxFrame int
	Stats    Stats

	// WriteTimeout bounds each wait for queue space, and each socket
	// write of up to 1 MiB: a large batch fails only when the peer stops
	// reading, not because it takes long to drain.
	WriteTimeout time.Duration
	// MaxPending bounds the bytes queued for writing.
	MaxPending int

	mu       sync.Mutex
	work     sync.Cond // signals the writer: work or close
	space    sync.Cond // signals waiting senders and flushers: the queue shrank, a write ended, or close
	waiters  int       // goroutines waiting on space
	wbuf     []byte
	wframes  uint64 // frames in wbuf, added to Stats when it is written
	handed   uint64 // frames ever queued or written inline (Handed)
	spare    []byte
	oob      []byte // rights to send with the next flush (at most one set at a time)
	closed   bool
	werr     error
	idle     bool // writer is waiting for work
	writing  bool // someone (the writer or an urgent sender) is writing to the socket
	inline   []byte
	stopped  chan struct{}
	closeOne sync.Once

	beat int // the beat pipe's write end (SetBeat), -1 = none; with mu

	fdmu sync.Mutex
	fds  []int // descriptors received with SCM_RIGHTS, in arrival order

	loan atomic.Pointer[loan] // the work the reading goroutine is running, if any

	lastRecv atomic.Int64 // when bytes last arrived: since epoch, monotonic

	pausing  atomic.Bool   // Detach asked the read loop to stop at a frame boundary
	paused   chan struct{} // closed by the read loop when it stopped for Detach
	leftover []byte        // read, not handed out: set by the paused loop, or given to NewConnWith
}

// epoch anchors LastReceived's monotonic readings.
var epoch = time.Now()

// NewConn wraps a connected unix socket and starts its writer goroutine.
func NewConn(uc *net.UnixConn, maxFrame int) *Conn {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	rc, _ := uc.SyscallConn() // fails only for a closed socket, which every write then reports
	c := &Conn{uc: uc, rc: rc, maxFrame: maxFrame, MaxPending: 8 << 20, WriteTimeout: 10 * time.Second, beat: -1, stopped: make(chan struct{}),
		paused: make(chan struct{})}
	c.lastRecv.Store(int64(time.Since(epoch)))
	c.work.L = &c.mu
	c.space.L = &c.mu
	go c.writer()
	return c
}

// NewConnWith is NewConn for a socket whose stream was already read into:
// leftover (the start of a frame, as Detach returned it) is what the first
// read loop hands out first.
func NewConnWith(uc *net.UnixConn, maxFrame int, leftover []byte) *Conn {
	c := NewConn(uc, maxFrame)
	c.leftover = append([]byte(nil), leftover...)
	return c
}

// Detach ends the connection without ending the stream, so that another
// process image can carry it on: the read loop stops at a frame boundary
// (it returns ErrPaused; frames it already handed out are not handed out
// again), every queued frame is written, and the writer stops. It returns a
// duplicate of the socket and the bytes read after the last whole frame,
// for NewConnWith. The Conn is closed; its socket lives on in f. A read
// loop must be running, or have ended; ctx bounds the wait for it and for
// the flush.
func (c *Conn) Detach(ctx context.Context) (f *os.File, leftover []byte, err error) {
	if err := c.Flush(); err != nil {
		return nil, nil, fmt.Errorf("bridge: detach: flush: %w", err)
	}
	c.pausing.Store(true)
	c.uc.SetReadDeadline(time.Now()) // wakes a read in progress
	select {
	case <-c.paused:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("bridge: detach: the read loop did not pause: %w", ctx.Err())
	}
	f, err = c.uc.File()
	if err != nil {
		return nil, nil, fmt.Errorf("bridge: detach: %w", err)
	}
	leftover = c.leftover
	c.Close()
	return f, leftover, nil
}

// FileConn makes a Conn from an inherited socket descriptor (the child's
// fd 3). The descriptor is duplicated; f may be closed afterwards.
func FileConn(f *os.File, maxFrame int) (*Conn, error) {
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("bridge: fd %d: %w", f.Fd(), err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("bridge: fd %d is not a unix socket", f.Fd())
	}
	return NewConn(uc, maxFrame), nil
}

// SyscallConn gives raw access to the socket, for callers that need a
// socket option or a raw write (protocol tests).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.uc.SyscallConn() }

// LastReceived returns when bytes last arrived from the peer (or when the
// Conn was made, before any did). Liveness is judged from it: any traffic
// proves the peer alive, not only heartbeats, and one watchdog can check
// many connections without a timer or a deadline per read.
func (c *Conn) LastReceived() time.Time { return epoch.Add(time.Duration(c.lastRecv.Load())) }

// Buffered returns how many bytes the peer has sent that are waiting in the
// socket, not yet read (SIOCINQ). A watchdog that finds a connection silent
// asks it first: bytes waiting mean the peer did speak and this side is
// behind (it was paused, say, or starved of CPU), not that the peer is dead.
func (c *Conn) Buffered() (int, error) {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}

// Handed returns how many frames senders have handed to the connection so
// far, queued or written: unlike Stats.FramesOut, which counts a queued
// frame once the writer takes it, it includes a frame as soon as its Send
// returns.
func (c *Conn) Handed() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handed
}

// MaxFrame returns the frame size cap.
func (c *Conn) MaxFrame() int { return c.maxFrame }

// Send appends one or more frames built by build to the write queue. build
// must append whole frames to its argument and return it. It blocks while
// the queue is full, up to WriteTimeout.
func (c *Conn) Send(build func([]byte) []byte) error {
	if err := c.lockQueue(); err != nil {
		return err
	}
	n := len(c.wbuf)
	c.wbuf = build(c.wbuf)
	c.unlockQueue(n, 1)
	return nil
}

// lockQueue takes the queue lock for appending frames to c.wbuf, after
// waiting for room (up to WriteTimeout). On error the lock is not held.
// The caller appends and calls unlockQueue.
func (c *Conn) lockQueue() error {
	c.mu.Lock()
	if len(c.wbuf) >= c.MaxPending && !c.closed && c.werr == nil {
		deadline := time.Now().Add(c.WriteTimeout)
		t := time.AfterFunc(c.WriteTimeout, func() { c.mu.Lock(); c.space.Broadcast(); c.mu.Unlock() })
		c.waiters++
		for len(c.wbuf) >= c.MaxPending && !c.closed && c.werr == nil && time.Now().Before(deadline) {
			c.space.Wait()
		}
		c.waiters--
		t.Stop()
		if len(c.wbuf) >= c.MaxPending && !c.closed && c.werr == nil {
			c.mu.Unlock()
			return ErrBackpressure
		}
	}
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.werr != nil {
		err := c.werr
		c.mu.Unlock()
		return err
	}
	return nil
}

// unlockQueue counts the frames appended since the queue was n bytes long,
// wakes the writer if it is waiting and releases the lock.
func (c *Conn) unlockQueue(n int, frames uint64) {
	if len(c.wbuf) > n {
		// Counted when written (writer): the counters are shared with
		// readers of Stats, so two atomic adds per frame here cost a
		// sender as much as the rest of queueing it.
		c.wframes += frames
		c.handed += frames
		if c.idle && !c.writing {
			c.idle = false
			c.work.Signal()
		}
	}
	c.mu.Unlock()
}

// Append is Send for a build that can fail, such as an encoder: when build
// returns an error, whatever it appended is dropped and the error is
// returned; nothing of it reaches the peer. With urgent it behaves as
// SendUrgent (written by the caller when the socket is quiet), otherwise
// as Send. build runs with the queue locked: it must only append.
func (c *Conn) Append(urgent bool, build func(b []byte) ([]byte, error)) error {
	if urgent {
		buf, err := c.lockInline()
		if err != nil {
			return err
		}
		if buf != nil {
			out, berr := build(buf)
			if berr != nil {
				c.writeInline(out[:0]) // gives the socket back, writes nothing
				return berr
			}
			return c.writeInline(out)
		}
	} else if err := c.lockQueue(); err != nil {
		return err
	}
	n := len(c.wbuf)
	out, berr := build(c.wbuf)
	if berr != nil {
		c.wbuf = out[:n]
		c.unlockQueue(n, 0)
		return berr
	}
	c.wbuf = out
	c.unlockQueue(n, 1)
	return nil
}

// SendUrgent is Send for a frame someone is waiting on (a request or a
// response): when nothing is queued and nobody is writing, the caller
// writes it to the socket itself, saving the hand-off to the writer
// goroutine; otherwise it is queued behind the frames before it.
func (c *Conn) SendUrgent(build func([]byte) []byte) error {
	buf, err := c.lockInline()
	if err != nil {
		return err
	}
	if buf == nil {
		n := len(c.wbuf)
		c.wbuf = build(c.wbuf)
		c.unlockQueue(n, 1)
		return nil
	}
	return c.writeInline(build(buf))
}

// lockInline prepares an urgent send. When the caller may write inline it
// returns a buffer to append the frame to, the lock released; it then
// calls writeInline. Otherwise it returns nil with the queue locked as by
// lockQueue, to append to c.wbuf and call unlockQueue.
func (c *Conn) lockInline() ([]byte, error) {
	if err := c.lockQueue(); err != nil {
		return nil, err
	}
	if c.writing || len(c.wbuf) != 0 || c.oob != nil {
		return nil, nil
	}
	c.writing = true
	buf := c.inline[:0]
	c.inline = nil
	c.mu.Unlock()
	if buf == nil {
		buf = make([]byte, 0, 512)
	}
	return buf, nil
}

// writeInline writes an urgent frame prepared after lockInline.
func (c *Conn) writeInline(buf []byte) error {
	var err error
	if len(buf) > 0 {
		c.Stats.FramesOut.Add(1)
		c.Stats.BytesOut.Add(uint64(len(buf)))
		err = c.write(buf, nil)
	}
	c.mu.Lock()
	if len(buf) > 0 {
		c.handed++
	}
	if cap(buf) <= 64<<10 {
		c.inline = buf[:0]
	}
	c.writing = false
	if err != nil && c.werr == nil {
		c.werr = fmt.Errorf("bridge: write: %w", err)
	}
	if (len(c.wbuf) != 0 || c.oob != nil || c.werr != nil) && c.idle {
		c.idle = false
		c.work.Signal() // frames were queued meanwhile
	}
	if c.waiters > 0 {
		c.space.Broadcast()
	}
	c.mu.Unlock()
	return err
}

// SetBeat makes Heartbeat write to fd, a pipe to the peer (bridge.EnvBeat):
// the Conn owns fd from now on and closes it with itself. Non-blocking
// writes are expected: a full pipe means the peer is behind, not that
// this side is not alive.
func (c *Conn) SetBeat(fd int) {
	c.mu.Lock()
	if c.beat >= 0 {
		unix.Close(c.beat)
	}
	c.beat = fd
	c.mu.Unlock()
}

// Heartbeat proves this side alive: a byte on the beat pipe when there is
// one (SetBeat), a heartbeat frame otherwise (written by the caller when
// the socket is free, as by SendUrgent). It takes the queue's lock either
// way, and waits for room as a Send does, so that a wedged connection (its
// queue held, or full for good) stops the beats. A beat pipe that fails
// (EPIPE: the peer no longer reads it) is dropped, and this beat and the
// later ones are frames.
func (c *Conn) Heartbeat() error {
	if err := c.lockQueue(); err != nil {
		return err
	}
	if c.beat >= 0 {
		// A raw system call: it cannot block (the pipe is non-blocking),
		// and entering a Go syscall would wake the runtime's monitor
		// thread in an idle process, one more wake per beat.
		one := byte(1)
		var err unix.Errno
		for {
			if _, _, err = unix.RawSyscall(unix.SYS_WRITE, uintptr(c.beat), uintptr(unsafe.Pointer(&one)), 1); err != unix.EINTR {
				break
			}
		}
		if err == 0 || err == unix.EAGAIN {
			c.mu.Unlock()
			return nil
		}
		unix.Close(c.beat)
		c.beat = -1
	}
	c.mu.Unlock()
	return c.SendUrgent(func(b []byte) []byte { return AppendEmpty(b, KindHeartbeat) })
}

// SendWithFile queues the frames built by build and passes f's descriptor
// with them (SCM_RIGHTS). The caller may close f once SendWithFile returns
// and Flush has completed.
func (c *Conn) SendWithFile(build func([]byte) []byte, f *os.File) error {
	c.mu.Lock()
	c.waiters++
	for c.oob != nil && !c.closed && c.werr == nil {
		c.space.Wait()
	}
	c.waiters--
	c.oob = unix.UnixRights(int(f.Fd()))
	c.mu.Unlock()
	return c.Send(build)
}

// Flush waits until every queued byte has been written, or the connection
// failed.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters++
	for (len(c.wbuf) > 0 || c.oob != nil || c.writing) && !c.closed && c.werr == nil {
		c.space.Wait()
	}
	c.waiters--
	if c.werr != nil {
		return c.werr
	}
	if c.closed {
		return ErrClosed
	}
	return nil
}

func (c *Conn) writer() {
	defer close(c.stopped)
	c.mu.Lock()
	for {
		for (len(c.wbuf) == 0 || c.writing) && !c.closed && c.werr == nil {
			c.idle = true
			c.work.Wait()
		}
		c.idle = false
		if c.closed || c.werr != nil {
			c.idle = true
			c.space.Broadcast()
			c.mu.Unlock()
			return
		}
		c.writing = true
		buf, oob, frames := c.wbuf, c.oob, c.wframes
		c.wbuf, c.oob, c.wframes = c.spare[:0], nil, 0
		c.spare = nil
		if c.waiters > 0 {
			c.space.Broadcast() // the queue is empty: room for blocked senders
		}
		c.mu.Unlock()
		c.Stats.FramesOut.Add(frames)
		c.Stats.BytesOut.Add(uint64(len(buf)))
		err := c.write(buf, oob)
		c.mu.Lock()
		c.writing = false
		// Keep the written buffer as the next spare unless it is
		// oversized; never keep the array that is now the queue.
		if cap(buf) <= 2*c.MaxPending {
			c.spare = buf[:0]
		}
		if err != nil && c.werr == nil {
			c.werr = fmt.Errorf("bridge: write: %w", err)
		}
		if c.waiters > 0 {
			c.space.Broadcast()
		}
	}
}

// writeChunk bounds one socket write, so that WriteTimeout measures a lack
// of progress (the peer stopped reading), not the time a large batch takes
// to drain through a busy reader.
const writeChunk = 1 << 20

func (c *Conn) write(buf, oob []byte) error {
	if oob == nil {
		// First without a deadline: nearly every write fits in the
		// socket's buffer, and then no timer is touched. Setting a
		// deadline re-arms the poller's timer, and can wake the thread
		// that sleeps in the poller (an idle child's every heartbeat did).
		n, err := c.tryWrite(buf)
		if err != nil {
			return err
		}
		if buf = buf[n:]; len(buf) == 0 {
			return nil
		}
	}
	// The peer is slow to read: every wait is bounded by WriteTimeout,
	// and the deadline is cleared after, as tryWrite expects.
	if c.WriteTimeout > 0 {
		defer c.uc.SetWriteDeadline(time.Time{})
	}
	if oob != nil {
		if c.WriteTimeout > 0 {
			c.uc.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
		}
		// The rights ride on the first byte of the batch.
		n, _, err := c.uc.WriteMsgUnix(buf, oob, nil)
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	for len(buf) > 0 {
		if c.WriteTimeout > 0 {
			c.uc.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
		}
		n, err := c.uc.Write(buf[:min(len(buf), writeChunk)])
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// tryWrite writes what of buf the socket takes now, without waiting and
// without a deadline (none is set outside write's slow path).
func (c *Conn) tryWrite(buf []byte) (int, error) {
	if c.rc == nil {
		return 0, nil // the slow path reports what is wrong
	}
	var n int
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Write(int(fd), buf)
			if werr != unix.EINTR {
				break
			}
		}
		if werr == unix.EAGAIN {
			werr = nil
		}
		n = max(n, 0)
		return true // never wait here
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// Close closes the socket and stops the writer; it drops unwritten frames.
// Received descriptors not yet taken are closed. Idempotent.
func (c *Conn) Close() error {
	var err error
	c.closeOne.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.work.Broadcast()
		c.space.Broadcast()
		if c.beat >= 0 {
			unix.Close(c.beat)
			c.beat = -1
		}
		c.mu.Unlock()
		err = c.uc.Close()
		<-c.stopped
		c.fdmu.Lock()
		for _, fd := range c.fds {
			unix.Close(fd)
		}
		c.fds = nil
		c.fdmu.Unlock()
	})
	return err
}

// CloseWrite flushes and shuts down the write side, so the peer reads EOF
// after the last frame.
func (c *Conn) CloseWrite() error {
	if err := c.Flush(); err != nil {
		return err
	}
	return c.uc.CloseWrite()
}

// TakeFile returns the oldest descriptor received with SCM_RIGHTS, or nil.
func (c *Conn) TakeFile(name string) *os.File {
	c.fdmu.Lock()
	defer c.fdmu.Unlock()
	if len(c.fds) == 0 {
		return nil
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return os.NewFile(uintptr(fd), name)
}

// Handler handles one frame; body is valid only during the call. A non-nil
// error ends the read loop.
type Handler func(k Kind, body []byte) error

// ReadLoop reads frames until EOF, an error, a protocol violation or a
// handler error, and returns that error (nil on a clean EOF at a frame
// boundary; io.ErrUnexpectedEOF inside a frame). acceptFDs lets the peer
// pass descriptors; otherwise received descriptors are closed at once.
func (c *Conn) ReadLoop(h Handler, acceptFDs bool) error {
	_, err := c.newFrameLoop(h, acceptFDs, nil, nil).run() // no yield: never hands off
	return err
}

// ReadLoopLending is ReadLoop that lends its goroutine to work caused by
// the frames; ended gets the loop's result, once, on the goroutine where
// the loop ends. It returns when the calling goroutine is done with the
// loop: the loop ended on it, or it handed reading off and its work
// returned.
//
// After each batch of frames (every whole frame the last read brought),
// before reading again, ReadLoopLending calls yield. When yield
// returns work (a mailbox run the batch scheduled), the reading goroutine
// runs it before reading on: the message reaches its actor with no
// hand-off to another goroutine. Reading must not stop while the work
// waits for something still to be read, so the loop moves to a new
// goroutine when the work calls KeepReading (before it waits for a
// response), or when a watchdog finds it running too long (CheckLoan);
// the lending goroutine then finishes the work and leaves: work that
// never returns cannot delay ended.
func (c *Conn) ReadLoopLending(h Handler, acceptFDs bool, yield func() (work func()), ended func(error)) {
	c.newFrameLoop(h, acceptFDs, yield, ended).resume()
}

// Read buffer sizes: a loop starts small (a host holds one per child,
// most of them idle) and doubles its buffer whenever a read fills it, up
// to readBufMax, the batch a stream of frames is read in.
const (
	readBufMin = 4 << 10
	readBufMax = 64 << 10
)

func (c *Conn) newFrameLoop(h Handler, acceptFDs bool, yield func() func(), ended func(error)) *frameLoop {
	rd := &frameLoop{c: c, h: h, accept: acceptFDs, yield: yield, ended: ended,
		buf: make([]byte, max(readBufMin, 2*len(c.leftover))), oob: make([]byte, unix.CmsgSpace(4*4))}
	rd.w = copy(rd.buf, c.leftover) // a stream carried on from another image: its unread start
	c.leftover = nil
	return rd
}

// pipelineFrames is the batch size from which yield's work runs beside a
// new reading goroutine instead of on the reading one, when the process has
// more than two Ps: a stream of tells is then read and handled in
// parallel, while a request or a few messages are handled at once, without
// a hand-off. With two Ps or fewer every batch is handled on a loan: on two
// cores the peer that sends the stream needs the other one, and a new
// reading goroutine per batch costs a thread wake-up (measured on 2 vCPUs,
// a 64-byte Tell stream: 5.7-6.3 M msg/s pipelined, 7.3-7.9 M on loans;
// the child's CPU per message 140-160 ns against 105-109 ns).
const pipelineFrames = 32

// pipelines reports whether long batches are handled beside a new reading
// goroutine (pipelineFrames).
func pipelines() bool { return goruntime.GOMAXPROCS(0) > 2 }

// loan is one run of yield's work on the reading goroutine.
type loan struct {
	rd        *frameLoop
	start     time.Time
	mu        sync.Mutex
	done      bool // the work returned
	handedOff bool // the loop moved to a new goroutine
}

// KeepReading makes sure frames are read while the caller waits for one:
// if the reading goroutine is running work (ReadLoopLending's yield), reading
// moves to a new goroutine now. Cheap when it is not.
func (c *Conn) KeepReading() {
	if l := c.loan.Load(); l != nil {
		l.rd.handOff(l)
	}
}

// CheckLoan moves reading to a new goroutine if the reading goroutine has
// been running work for longer than limit: the watchdog for work that
// waits on the bridge without KeepReading. It needs no timer per loan
// (arming one would wake an idle thread on every message).
func (c *Conn) CheckLoan(limit time.Duration) {
	if l := c.loan.Load(); l != nil && time.Since(l.start) > limit {
		l.rd.handOff(l)
	}
}

// frameLoop is the state of one read loop, passed from goroutine to
// goroutine when the loop hands off.
type frameLoop struct {
	c      *Conn
	h      Handler
	accept bool
	yield  func() func()
	buf    []byte
	oob    []byte
	r, w   int // unread bytes are buf[r:w]
	ended  func(error)
}

// handOff moves the loop to a new goroutine if l is still running.
func (rd *frameLoop) handOff(l *loan) {
	l.mu.Lock()
	if !l.done && !l.handedOff {
		l.handedOff = true
		go rd.resume()
	}
	l.mu.Unlock()
}

// lend runs work on the reading goroutine and reports whether the loop
// moved to another goroutine meanwhile.
func (rd *frameLoop) lend(work func()) (handedOff bool) {
	l := &loan{rd: rd, start: time.Now()}
	rd.c.loan.Store(l)
	work()
	rd.c.loan.CompareAndSwap(l, nil)
	l.mu.Lock()
	l.done = true
	handedOff = l.handedOff
	l.mu.Unlock()
	return handedOff
}

// run reads until the loop ends (handedOff false, its result) or until it
// hands the loop to a new goroutine and has run the work yield gave it
// (handedOff true; the goroutine where the loop ends calls ended).
func (rd *frameLoop) run() (handedOff bool, err error) {
	c := rd.c
	for {
		// Hand out every whole frame in the buffer.
		frames, r0 := uint64(0), rd.r
		for {
			k, body, n, err := SplitFrame(rd.buf[rd.r:rd.w], c.maxFrame)
			if err != nil {
				c.countIn(frames, rd.r-r0)
				return false, err
			}
			if n == 0 {
				break
			}
			frames++
			if err := rd.h(k, body); err != nil {
				c.countIn(frames, rd.r+n-r0)
				return false, err
			}
			rd.r += n
		}
		c.countIn(frames, rd.r-r0)
		if frames > 0 && rd.yield != nil {
			if work := rd.yield(); work != nil {
				if frames >= pipelineFrames && pipelines() {
					// A long batch: read the next one while this one is
					// handled, on the other core.
					go rd.resume()
					work()
					return true, nil
				}
				if rd.lend(work) {
					return true, nil
				}
			}
		}
		if end, err := rd.fill(); end {
			return false, err
		}
	}
}

// resume runs the loop on this goroutine until it ends here (then calls
// ended) or moves on.
func (rd *frameLoop) resume() {
	if handedOff, err := rd.run(); !handedOff {
		rd.ended(err)
	}
}

// fill makes room in the buffer and reads once more; end reports the end
// of the loop with its result.
func (rd *frameLoop) fill() (end bool, err error) {
	c := rd.c
	// Make room: compact, and grow to the frame's announced size (already
	// checked against the cap by SplitFrame).
	if rd.r == rd.w {
		rd.r, rd.w = 0, 0
	} else if rd.r > 0 && (len(rd.buf)-rd.w < 4096) {
		copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.w -= rd.r
		rd.r = 0
	}
	if rd.w-rd.r >= 4 {
		b := rd.buf[rd.r:]
		need := 4 + int(uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24)
		if need > len(rd.buf)-rd.r {
			nb := make([]byte, max(need, 2*len(rd.buf)))
			copy(nb, rd.buf[rd.r:rd.w])
			rd.w -= rd.r
			rd.r = 0
			rd.buf = nb
		}
	}
	if c.pausing.Load() {
		return true, c.pause(rd)
	}
	space := len(rd.buf) - rd.w
	n, oobn, _, _, err := c.uc.ReadMsgUnix(rd.buf[rd.w:], rd.oob)
	if n < 0 {
		n = 0 // the netpoller reports -1 with an error
	}
	if n > 0 {
		c.lastRecv.Store(int64(time.Since(epoch)))
	}
	if n == 0 && c.pausing.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		return true, c.pause(rd)
	}
	if n == space && len(rd.buf) < readBufMax {
		nb := make([]byte, 2*len(rd.buf))
		copy(nb, rd.buf[rd.r:rd.w+n])
		rd.w -= rd.r
		rd.r = 0
		rd.buf = nb
	}
	if oobn > 0 {
		c.takeRights(rd.oob[:oobn], rd.accept)
	}
	rd.w += n
	// A peer that exits with our frames unread makes Linux answer with a
	// reset instead of EOF: for the reader it is the same end.
	if n == 0 && err == nil || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		if rd.r != rd.w {
			return true, io.ErrUnexpectedEOF // inside a frame
		}
		return true, nil
	}
	return err != nil, err
}

// pause stops the loop for Detach, keeping the unread bytes.
func (c *Conn) pause(rd *frameLoop) error {
	c.leftover = append([]byte(nil), rd.buf[rd.r:rd.w]...)
	close(c.paused)
	return ErrPaused
}

// countIn adds frames handed out by ReadLoop to the statistics, once per
// batch rather than per frame.
func (c *Conn) countIn(frames uint64, bytes int) {
	if frames > 0 {
		c.Stats.FramesIn.Add(frames)
		c.Stats.BytesIn.Add(uint64(bytes))
	}
}

func (c *Conn) takeRights(oob []byte, accept bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			if !accept {
				unix.Close(fd)
				continue
			}
			c.fdmu.Lock()
			c.fds = append(c.fds, fd)
			c.fdmu.Unlock()
		}
	}
}

// Pair returns a connected pair of unix stream sockets as files, both
// close-on-exec: the parent's end and the end to hand to a child.
func Pair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("bridge: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "bridge"), os.NewFile(uintptr(fds[1]), "bridge-child"), nil
}
