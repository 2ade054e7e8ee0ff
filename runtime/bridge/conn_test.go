package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// unixConn turns one end of Pair into a *net.UnixConn, closing the file
// (net.FileConn duplicates it).
func unixConn(t *testing.T, f *os.File) *net.UnixConn {
	t.Helper()
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatalf("net.FileConn: %v", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		t.Fatalf("net.FileConn returned %T, want *net.UnixConn", nc)
	}
	return uc
}

// newPair returns the two ends of a real socketpair, each a Conn: a is the
// parent's end, b the child's. b's frame cap is maxFrame (0 = default).
func newPair(t *testing.T, maxFrame int) (a, b *Conn) {
	t.Helper()
	parent, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	return NewConn(unixConn(t, parent), 0), NewConn(unixConn(t, child), maxFrame)
}

// readLoop runs c.ReadLoop in a goroutine and returns its result channel.
func readLoop(c *Conn, h Handler, acceptFDs bool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.ReadLoop(h, acceptFDs) }()
	return done
}

// raw queues bytes as they are, bypassing the frame encoders.
func raw(b []byte) func([]byte) []byte {
	return func(buf []byte) []byte { return append(buf, b...) }
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestConnManyWriters sends frames from several goroutines at once, some
// larger than the reader's initial buffer, mixing Send and SendUrgent:
// every frame must arrive whole and each goroutine's frames in the order it
// sent them.
func TestConnManyWriters(t *testing.T) {
	a, b := newPair(t, 0)
	const (
		writers   = 8
		perWriter = 2000
	)
	next := make([]uint64, writers) // the reader's next expected sequence per writer
	var payloadBytes uint64
	done := readLoop(b, func(k Kind, body []byte) error {
		if k != KindTell {
			return fmt.Errorf("frame of kind %v, want tell", k)
		}
		m, err := ParseMessage(k, body)
		if err != nil {
			return err
		}
		var g int
		if _, err := fmt.Sscanf(string(m.Target), "writer-%d", &g); err != nil || g < 0 || g >= writers {
			return fmt.Errorf("bad target %q", m.Target)
		}
		if len(m.Payload) < 8 {
			return fmt.Errorf("writer %d: %d-byte payload", g, len(m.Payload))
		}
		seq := binary.LittleEndian.Uint64(m.Payload)
		if seq != next[g] {
			return fmt.Errorf("writer %d: frame %d arrived when %d was due", g, seq, next[g])
		}
		next[g]++
		pad := m.Payload[8:]
		if len(pad) != padLen(seq) || bytes.Count(pad, []byte{byte(g)}) != len(pad) {
			return fmt.Errorf("writer %d frame %d: payload of %d bytes is damaged, want %d bytes of %d", g, seq, len(pad), padLen(seq), g)
		}
		payloadBytes += uint64(len(m.Payload))
		return nil
	}, false)

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			target := fmt.Sprintf("writer-%d", g)
			for i := range uint64(perWriter) {
				build := func(buf []byte) []byte {
					buf, s := AppendTellHeader(buf, target, "seq")
					buf = binary.LittleEndian.AppendUint64(buf, i)
					buf = append(buf, bytes.Repeat([]byte{byte(g)}, padLen(i))...)
					return FinishFrame(buf, s)
				}
				var err error
				if i%3 == 0 {
					err = a.SendUrgent(build) // written inline when the queue is empty
				} else {
					err = a.Send(build)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d, frame %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// CloseWrite flushes, so the reader sees EOF after the last frame.
	if err := a.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ReadLoop = %v, want nil at a clean EOF", err)
	}
	for g, n := range next {
		if n != perWriter {
			t.Errorf("writer %d: %d frames arrived, want %d", g, n, perWriter)
		}
	}
	if in, out := b.Stats.FramesIn.Load(), a.Stats.FramesOut.Load(); in != writers*perWriter || out != in {
		t.Errorf("frames out %d, in %d; want %d", out, in, writers*perWriter)
	}
	if in, out := b.Stats.BytesIn.Load(), a.Stats.BytesOut.Load(); in != out || in <= payloadBytes {
		t.Errorf("bytes out %d, in %d (payload %d)", out, in, payloadBytes)
	}
	a.Close()
	b.Close()
	if err := a.Send(emptyFrame(KindHeartbeat)); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t)
}

// padLen varies frame sizes: mostly small, every 500th above the reader's
// largest batch buffer (64 KiB).
func padLen(seq uint64) int {
	if seq%500 == 499 {
		return 200 << 10
	}
	return int(seq % 300)
}

func emptyFrame(k Kind) func([]byte) []byte {
	return func(b []byte) []byte { return AppendEmpty(b, k) }
}

// TestConnPassFile passes an os.Pipe read end with SCM_RIGHTS. With
// acceptFDs the receiver gets it from TakeFile; without, the descriptor is
// closed on arrival; accepted but never taken, Close closes it (the fd
// count returns to its baseline).
func TestConnPassFile(t *testing.T) {
	for _, mode := range []string{"accept", "refuse", "never taken"} {
		t.Run(mode, func(t *testing.T) {
			accept := mode != "refuse"
			a, b := newPair(t, 0)
			base := fdCount(t)

			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			taken := make(chan *os.File, 1)
			done := readLoop(b, func(k Kind, body []byte) error {
				if k != KindAssign {
					return fmt.Errorf("got a %v frame, want assign", k)
				}
				if _, err := ParseAssign(body); err != nil {
					return err
				}
				if mode == "never taken" {
					taken <- nil
					return nil
				}
				taken <- b.TakeFile("shm")
				return nil
			}, accept)

			err = a.SendWithFile(func(buf []byte) []byte {
				return AppendAssign(buf, Assign{Incarnation: 1, Flags: FlagSharedMemory, Name: "w", Code: "w"})
			}, pr)
			if err != nil {
				t.Fatalf("SendWithFile: %v", err)
			}
			if err := a.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			pr.Close() // the sender's copy; only the receiver's remains
			f := <-taken

			switch mode {
			case "accept":
				if f == nil {
					t.Fatal("TakeFile = nil, want the passed pipe")
				}
				if _, err := pw.Write([]byte("ping")); err != nil {
					t.Fatalf("write to the pipe: %v", err)
				}
				got := make([]byte, 4)
				if _, err := io.ReadFull(f, got); err != nil || string(got) != "ping" {
					t.Errorf("read from the passed fd = %q, %v; want \"ping\"", got, err)
				}
				if again := b.TakeFile("again"); again != nil {
					t.Errorf("second TakeFile = %v, want nil", again.Name())
					again.Close()
				}
				f.Close()
			case "refuse":
				if f != nil {
					t.Errorf("TakeFile = %v with acceptFDs=false, want nil", f.Name())
					f.Close()
				}
				// Every read end is closed, so the write end sees EPIPE.
				if _, err := pw.Write([]byte("ping")); !errors.Is(err, syscall.EPIPE) {
					t.Errorf("write to the pipe after the receiver refused its read end: %v, want EPIPE", err)
				}
			}
			pw.Close()
			if err := a.CloseWrite(); err != nil {
				t.Errorf("CloseWrite: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("ReadLoop = %v", err)
			}

			want := base
			if mode == "never taken" {
				want++ // held by b until Close
			}
			if got := fdCount(t); got != want {
				t.Errorf("fd count %d after the transfer, want %d (baseline %d)", got, want, base)
			}
			a.Close()
			b.Close()
			if got := fdCount(t); got != base-2 {
				t.Errorf("fd count %d after Close, want %d (baseline less the two sockets)", got, base-2)
			}
			goleak.VerifyNone(t)
		})
	}
}

// TestConnLastReceivedAndBuffered: LastReceived moves when bytes arrive,
// and Buffered counts the bytes the peer sent that no read has taken yet,
// so a watchdog can tell a silent peer from a reader that fell behind.
func TestConnLastReceivedAndBuffered(t *testing.T) {
	a, b := newPair(t, 0)
	defer a.Close()
	defer b.Close()
	t0 := b.LastReceived()
	if n, err := b.Buffered(); err != nil || n != 0 {
		t.Fatalf("Buffered on a silent peer = %d, %v; want 0", n, err)
	}
	hb := AppendEmpty(nil, KindHeartbeat)
	if err := a.Send(raw(hb)); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	// The frame is in b's socket, unread: Buffered sees it; LastReceived
	// has not moved, since nothing was read.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n, _ := b.Buffered(); n != len(hb); n, _ = b.Buffered() {
		<-tick.C
	}
	if !b.LastReceived().Equal(t0) {
		t.Fatal("LastReceived moved before anything was read")
	}
	got := make(chan struct{})
	go b.ReadLoop(func(Kind, []byte) error { close(got); return io.EOF }, false)
	<-got
	if !b.LastReceived().After(t0) {
		t.Fatalf("LastReceived %v did not move past %v after a read", b.LastReceived(), t0)
	}
	if n, err := b.Buffered(); err != nil || n != 0 {
		t.Fatalf("Buffered after the read = %d, %v; want 0", n, err)
	}
}

// TestConnTruncatedFrame: a frame cut short by the peer closing gives
// io.ErrUnexpectedEOF, after the whole frames before it were handled.
func TestConnTruncatedFrame(t *testing.T) {
	for _, tt := range []struct {
		name  string
		close func(c *Conn) error
	}{
		{"Close", func(c *Conn) error { return c.Close() }},
		{"CloseWrite", func(c *Conn) error { return c.CloseWrite() }},
	} {
		for _, cut := range []int{1, 3, 4, 5, 20} {
			t.Run(fmt.Sprintf("%s/%d bytes", tt.name, cut), func(t *testing.T) {
				a, b := newPair(t, 0)
				var kinds []Kind
				done := readLoop(b, func(k Kind, body []byte) error { kinds = append(kinds, k); return nil }, false)
				whole := AppendEmpty(nil, KindReady)
				cutFrame := AppendHello(nil, Hello{Version: Version})[:cut]
				if err := a.Send(raw(append(whole, cutFrame...))); err != nil {
					t.Fatal(err)
				}
				if err := a.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := tt.close(a); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != io.ErrUnexpectedEOF {
					t.Errorf("ReadLoop = %v, want io.ErrUnexpectedEOF", err)
				}
				if len(kinds) != 1 || kinds[0] != KindReady {
					t.Errorf("frames handled: %v, want [ready]", kinds)
				}
				a.Close()
				b.Close()
				goleak.VerifyNone(t)
			})
		}
	}
}

// TestConnOversizedLength: a length prefix above the reader's cap ends the
// read loop with a protocol error, without allocating the announced size.
func TestConnOversizedLength(t *testing.T) {
	for _, tt := range []struct {
		name     string
		maxFrame int
		length   uint32
		reason   string
	}{
		{"cap 1024, length 1025", 1024, 1025, "length 1025 above the cap 1024"},
		{"default cap, 0xFFFFFFFF", 0, 0xFFFFFFFF, "length 4294967295 above the cap 1048576"},
		{"default cap, cap+1", 0, DefaultMaxFrame + 1, "above the cap"},
		{"zero length", 0, 0, "zero length"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newPair(t, tt.maxFrame)
			// A frame of exactly the cap is fine; then the bad prefix.
			limit := b.MaxFrame()
			ok := append(header(uint32(limit), KindTell), make([]byte, limit-1)...)
			bad := append(header(tt.length, KindTell), "junk"...)
			var handled int
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := readLoop(b, func(k Kind, body []byte) error { handled++; return nil }, false)
			if err := a.Send(raw(append(ok, bad...))); err != nil {
				t.Fatal(err)
			}
			err := <-done
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("ReadLoop = %v, want a protocol error with %q", err, tt.reason)
			}
			if handled != 1 {
				t.Errorf("%d frames handled, want the 1 frame before the bad prefix", handled)
			}
			// The reader's buffers, the frame of the cap and the writer's
			// batch; nothing near the announced length.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > uint64(3*limit+(1<<20)) {
				t.Errorf("%d bytes allocated while rejecting a %d-byte length, want < %d", grew, tt.length, 3*limit+(1<<20))
			}
			a.Close()
			b.Close()
			goleak.VerifyNone(t)
		})
	}
}

// TestConnBatchAliasing: after writing a batch larger than 2×MaxPending
// the writer used to keep, as its spare, the array it had handed to senders
// as the write queue, so a Send during the next write overwrote bytes not
// yet written and the peer received frames carrying other frames' bytes.
func TestConnBatchAliasing(t *testing.T) {
	for _, tt := range []struct {
		name       string
		maxPending int
		bigFrames  int // frames of 1000 KiB in the one large batch
	}{
		{"MaxPending 1MiB, 3 MB batch", 1 << 20, 3},
		{"default MaxPending, 17 MB batch", 0, 17},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parent, child, err := Pair()
			if err != nil {
				t.Fatal(err)
			}
			a := NewConn(unixConn(t, parent), 0)
			a.WriteTimeout = time.Minute
			if tt.maxPending > 0 {
				a.MaxPending = tt.maxPending
			}
			peer := unixConn(t, child) // read by hand, to control when the writer blocks
			peer.SetReadDeadline(time.Now().Add(time.Minute))
			read := func(n int) []byte {
				t.Helper()
				buf := make([]byte, n)
				if _, err := io.ReadFull(peer, buf); err != nil {
					t.Fatalf("read %d bytes: %v", n, err)
				}
				return buf
			}
			frames := func(tag byte, count, size int) func([]byte) []byte {
				return func(b []byte) []byte {
					for i := range count {
						var s int
						b, s = AppendTellHeader(b, "", "t")
						b = append(b, tag, byte(i))
						b = append(b, bytes.Repeat([]byte{tag}, size)...)
						b = FinishFrame(b, s)
					}
					return b
				}
			}
			size := func(build func([]byte) []byte) int { return len(build(nil)) }

			// 1. A 900 KiB batch, written and flushed: the writer keeps its
			//    buffer (call it S) as the spare.
			first := frames('A', 1, 900<<10)
			a.Send(first)
			read(size(first))
			if err := a.Flush(); err != nil {
				t.Fatal(err)
			}
			// 2. A batch above 2×MaxPending. Once its first byte is out, the
			//    writer has taken it and made S the write queue; it blocks
			//    writing, since nobody reads.
			big := frames('B', tt.bigFrames, 1000<<10)
			a.Send(big)
			read(1)
			//    800 KiB of X frames are queued in S.
			xs := frames('X', 8, 100<<10)
			a.Send(xs)
			read(size(big) - 1)
			// 3. The big batch is out. Too big to keep, so S stays the spare:
			//    the writer now writes the X frames from S and hands S[:0] to
			//    senders as the new queue. Wait for the first X byte.
			read(1)
			//    400 KiB of Y frames are appended at S[0:], over X frames the
			//    writer has not written yet (the socket holds far less).
			ys := frames('Y', 4, 100<<10)
			a.Send(ys)
			stream := append([]byte{xs(nil)[0]}, read(size(xs)-1+size(ys))...)

			want := append(xs(nil), ys(nil)...)
			for i := 0; len(stream) > 0 && len(want) > 0; i++ {
				k, body, n, err := SplitFrame(stream, DefaultMaxFrame)
				if err != nil || n == 0 {
					t.Fatalf("frame %d: SplitFrame = %v, %d, %v", i, k, n, err)
				}
				m, err := ParseMessage(k, body)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				wk, wbody, wn, _ := SplitFrame(want, DefaultMaxFrame)
				wm, _ := ParseMessage(wk, wbody)
				if !bytes.Equal(m.Payload, wm.Payload) {
					t.Errorf("frame %d should be %c%d; it carries %d bytes of X and %d of Y", i, wm.Payload[0], wm.Payload[1],
						bytes.Count(m.Payload[2:], []byte{'X'}), bytes.Count(m.Payload[2:], []byte{'Y'}))
				}
				stream, want = stream[n:], want[wn:]
			}
			a.Close()
			peer.Close()
			goleak.VerifyNone(t)
		})
	}
}

// TestReadLoopLends runs yield's work on the reading goroutine and moves
// reading elsewhere when the work waits for a later frame: through
// KeepReading, or through the watchdog (CheckLoan). Without the move the
// work would wait forever. Every frame is handled once, in order, and the
// loop's end (nil at EOF) reaches ended while the work still holds the
// goroutine that began the loop (the work waits for it). "pipelined" runs
// with four Ps, where a long batch is handled beside a new reader.
func TestReadLoopLends(t *testing.T) {
	for _, how := range []string{"KeepReading", "CheckLoan", "pipelined"} {
		t.Run(how, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			if how == "pipelined" {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
			}
			a, b := newPair(t, 0)
			defer a.Close()
			defer b.Close()
			var got []uint64
			var mu sync.Mutex
			second := make(chan struct{})
			endedCh := make(chan struct{})
			var pending bool
			var works atomic.Int32
			block := make(chan struct{}, 1)
			h := func(k Kind, body []byte) error {
				seq := binary.LittleEndian.Uint64(body)
				mu.Lock()
				got = append(got, seq)
				mu.Unlock()
				if seq == 1 {
					pending = true
				}
				if seq == 2 {
					close(second)
				}
				return nil
			}
			yield := func() func() {
				if !pending {
					return nil
				}
				pending = false
				return func() {
					works.Add(1)
					block <- struct{}{}
					<-second  // a frame still to be read
					<-endedCh // the end of the loop, from another goroutine
				}
			}
			done := make(chan error, 1)
			go b.ReadLoopLending(h, false, yield, func(err error) { done <- err; close(endedCh) })
			send := func(seq uint64) {
				if err := a.Send(func(buf []byte) []byte {
					buf, s := begin(buf, KindTell)
					return end(binary.LittleEndian.AppendUint64(buf, seq), s)
				}); err != nil {
					t.Fatal(err)
				}
			}
			send(1)
			if how == "pipelined" {
				for seq := uint64(100); seq < 100+pipelineFrames; seq++ {
					send(seq) // may or may not join frame 1's batch
				}
			}
			<-block // the work runs and waits
			switch how {
			case "KeepReading":
				b.KeepReading()
			case "CheckLoan":
				b.CheckLoan(0)
			case "pipelined":
				b.CheckLoan(0) // in case frame 1 came alone
			}
			send(2)
			for seq := uint64(3); seq <= 1000; seq++ {
				send(seq)
			}
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("ReadLoop = %v, want nil at EOF", err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []uint64{1}
			if how == "pipelined" {
				for seq := uint64(100); seq < 100+pipelineFrames; seq++ {
					want = append(want, seq)
				}
			}
			for seq := uint64(2); seq <= 1000; seq++ {
				want = append(want, seq)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("frames handled %v…, want %v… (%d vs %d)", got[:min(8, len(got))], want[:8], len(got), len(want))
			}
			if works.Load() != 1 {
				t.Fatalf("work ran %d times, want 1", works.Load())
			}
		})
	}
}

// TestConnDetach: a stream carried from one Conn to another (an in-place
// upgrade hands sockets to a new image) loses nothing and repeats nothing:
// the old read loop stops at a frame boundary, the bytes of a frame begun
// go with the socket, and the new Conn hands out the rest in order.
func TestConnDetach(t *testing.T) {
	a, b := newPair(t, 0)
	defer a.Close()
	frame := func(n byte) []byte {
		h, s := AppendTellHeader(nil, "", "t")
		return FinishFrame(append(h, n, n, n), s)
	}
	var mu sync.Mutex
	var got []byte
	handler := func(k Kind, body []byte) error {
		m, err := ParseMessage(k, body)
		if err != nil {
			return err
		}
		mu.Lock()
		got = append(got, m.Payload[0])
		mu.Unlock()
		return nil
	}
	done := readLoop(b, handler, false)
	third := frame(3)
	if err := a.Send(raw(append(append(frame(1), frame(2)...), third[:4]...))); err != nil {
		t.Fatal(err)
	}
	a.Flush()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 2 {
			break
		}
		<-tick.C
	}
	<-time.After(10 * time.Millisecond) // the tail of frame 3 is in b's buffer by now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, leftover, err := b.Detach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrPaused) {
		t.Fatalf("the detached read loop ended with %v, want ErrPaused", err)
	}
	if string(leftover) != string(third[:4]) {
		t.Fatalf("leftover %x, want the 4 bytes of frame 3 sent so far %x", leftover, third[:4])
	}
	nc := NewConnWith(unixConn(t, f), 0, leftover)
	defer nc.Close()
	if err := a.Send(raw(append(third[4:], frame(4)...))); err != nil {
		t.Fatal(err)
	}
	done2 := readLoop(nc, handler, false)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 4 {
			break
		}
		<-tick.C
	}
	mu.Lock()
	defer mu.Unlock()
	if string(got) != "\x01\x02\x03\x04" {
		t.Fatalf("frames handed out %v, want 1 2 3 4 once each", got)
	}
	a.Close()
	if err := <-done2; err != nil {
		t.Fatalf("the new read loop ended with %v, want a clean EOF", err)
	}
}

// A send to a peer whose end is closed fails with an error PeerGone
// recognises, and so does a send on a Conn closed here; an error of
// another kind is not taken for a departed peer.
func TestPeerGone(t *testing.T) {
	a, b := newPair(t, 0)
	defer a.Close()
	b.Close()
	assign := func(buf []byte) []byte { return AppendAssign(buf, Assign{Incarnation: 1, Name: "w", Code: "c"}) }
	var err error
	for range 100 { // the first write may land in the socket buffer before the kernel sees the close
		if err = a.SendUrgent(assign); err != nil {
			break
		}
	}
	if err == nil || !PeerGone(err) {
		t.Errorf("SendUrgent to a closed peer: %v; want an error PeerGone reports", err)
	}
	c, d := newPair(t, 0)
	d.Close()
	c.Close()
	if err := c.Send(assign); !PeerGone(err) {
		t.Errorf("Send on a closed Conn: %v; want an error PeerGone reports", err)
	}
	if PeerGone(ErrBackpressure) || PeerGone(nil) {
		t.Error("PeerGone took backpressure or nil for a departed peer")
	}
}

// With a beat pipe, Heartbeat writes a byte there and nothing on the
// socket; once the pipe's reader is gone (EPIPE), it sends heartbeat
// frames instead, that beat and the later ones.
func TestConnHeartbeatBeatPipe(t *testing.T) {
	a, b := newPair(t, 0)
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	r := fds[0]
	a.SetBeat(fds[1])
	kinds := make(chan Kind, 16)
	done := readLoop(b, func(k Kind, body []byte) error { kinds <- k; return nil }, false)
	for range 3 {
		if err := a.Heartbeat(); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Read(r, buf); n != 3 || err != nil {
		t.Fatalf("beat pipe holds %d bytes (%v) after 3 beats, want 3", n, err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if h := a.Handed(); h != 0 {
		t.Fatalf("%d frames handed to the connection for beats on the pipe, want 0", h)
	}
	unix.Close(r)
	for range 2 {
		if err := a.Heartbeat(); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if k := <-kinds; k != KindHeartbeat {
			t.Fatalf("frame %v after the beat pipe broke, want heartbeat", k)
		}
	}
	a.Close()
	b.Close()
	<-done
}
