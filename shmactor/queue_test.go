package shmactor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func init() {
	helpers["qsend"] = helperQueueSend
	helpers["qrecv"] = helperQueueReceive
	helpers["qsend-hang"] = helperQueueSendHang
	helpers["qrecv-hang"] = helperQueueReceiveHang
	helpers["qrecv-detach"] = helperQueueReceiveDetach
}

// msgGen makes a reproducible stream of messages of random sizes up to max:
// the sender and the receiver each run one from the same seed.
type msgGen struct {
	sizes *rand.Rand
	bytes *rand.ChaCha8
	max   int
}

func newMsgGen(seed uint64, max int) *msgGen {
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 10))
	return &msgGen{sizes: rand.New(rand.NewPCG(seed, 1)), bytes: rand.NewChaCha8(key), max: max}
}

func (g *msgGen) next(buf []byte) []byte {
	var n int
	switch r := g.sizes.IntN(100); {
	case r < 50:
		n = g.sizes.IntN(min(64, g.max) + 1)
	case r < 85:
		n = g.sizes.IntN(min(4096, g.max) + 1)
	default:
		n = g.sizes.IntN(g.max + 1)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	g.bytes.Read(buf)
	return buf
}

// sendAll sends n messages from gen.
func sendAll(ctx context.Context, s *Sender, gen *msgGen, n int) error {
	var buf []byte
	for i := range n {
		buf = gen.next(buf)
		if err := s.Send(ctx, buf); err != nil {
			return fmt.Errorf("Send #%d (%d bytes): %w", i, len(buf), err)
		}
	}
	return nil
}

// receiveAll receives n messages and checks them against gen.
func receiveAll(ctx context.Context, r *Receiver, gen *msgGen, n int) error {
	var want, buf []byte
	for i := range n {
		want = gen.next(want)
		got, err := r.Receive(ctx, buf)
		if err != nil {
			return fmt.Errorf("Receive #%d: %w", i, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("Receive #%d: got %d bytes, want %d bytes (equal: %v)", i, len(got), len(want), bytes.Equal(got, want))
		}
		if len(got) > 0 && len(buf) > 0 && cap(buf) >= len(got) && &got[0] != &buf[0] {
			return fmt.Errorf("Receive #%d: did not reuse a big enough buffer", i)
		}
		buf = got[:cap(got)]
	}
	return nil
}

func mustInitQueue(mem []byte) {
	if err := InitQueue(mem); err != nil {
		panic(err)
	}
}

func queueSegment(t *testing.T, ring int) (*Segment, []byte) {
	t.Helper()
	seg, err := Build(1, []Region{{Name: "q", Size: QueueSize(ring), Init: mustInitQueue}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	mem, err := seg.Region("q")
	if err != nil {
		t.Fatal(err)
	}
	return seg, mem
}

func helperQueue() (*Segment, []byte, error) {
	seg, err := helperSegment()
	if err != nil {
		return nil, nil, err
	}
	mem, err := seg.Region("q")
	if err != nil {
		seg.Close()
		return nil, nil, err
	}
	return seg, mem, nil
}

func helperGen() (*msgGen, int) {
	return newMsgGen(uint64(envInt("SHMTEST_SEED")), envInt("SHMTEST_MAX")), envInt("SHMTEST_N")
}

func helperQueueSend() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, mem, err := helperQueue()
	if err != nil {
		return err
	}
	defer seg.Close()
	s, err := AttachSender(mem)
	if err != nil {
		return err
	}
	defer s.Detach()
	gen, n := helperGen()
	return sendAll(ctx, s, gen, n)
}

func helperQueueReceive() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, mem, err := helperQueue()
	if err != nil {
		return err
	}
	defer seg.Close()
	r, err := AttachReceiver(mem)
	if err != nil {
		return err
	}
	defer r.Detach()
	gen, n := helperGen()
	if err := receiveAll(ctx, r, gen, n); err != nil {
		return err
	}
	if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrDetached) {
		return fmt.Errorf("Receive after the last message = %v, want ErrDetached", err)
	}
	return nil
}

func helperQueueSendHang() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, mem, err := helperQueue()
	if err != nil {
		return err
	}
	defer seg.Close()
	s, err := AttachSender(mem)
	if err != nil {
		return err
	}
	gen, n := helperGen()
	if err := sendAll(ctx, s, gen, n); err != nil {
		return err
	}
	say("sent")
	blockUntilKilled()
	return nil
}

func helperQueueReceiveHang() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, mem, err := helperQueue()
	if err != nil {
		return err
	}
	defer seg.Close()
	r, err := AttachReceiver(mem)
	if err != nil {
		return err
	}
	if _, err := r.Receive(ctx, nil); err != nil {
		return err
	}
	say("got")
	blockUntilKilled()
	return nil
}

func helperQueueReceiveDetach() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, mem, err := helperQueue()
	if err != nil {
		return err
	}
	defer seg.Close()
	r, err := AttachReceiver(mem)
	if err != nil {
		return err
	}
	if _, err := r.Receive(ctx, nil); err != nil {
		return err
	}
	r.Detach()
	return nil
}

func genEnv(seed uint64, max, n int) []string {
	return []string{
		"SHMTEST_SEED=" + strconv.FormatUint(seed, 10),
		"SHMTEST_MAX=" + strconv.Itoa(max),
		"SHMTEST_N=" + strconv.Itoa(n),
	}
}

// TestQueueAcrossProcesses streams thousands of messages of random sizes,
// up to the largest the ring takes, through a 16 KiB ring, which wraps
// around hundreds of times, in each direction.
func TestQueueAcrossProcesses(t *testing.T) {
	const ring, n = 16 << 10, 3000
	for _, childSends := range []bool{true, false} {
		name := map[bool]string{true: "child sends", false: "child receives"}[childSends]
		t.Run(name, func(t *testing.T) {
			checkLeaks(t)
			ctx := testContext(t)
			seg, mem := queueSegment(t, ring)
			max := ring - frameHeader
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			if childSends {
				r, err := AttachReceiver(mem)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Detach()
				c := startChild(ctx, t, "qsend", seg, genEnv(seed, max, n)...)
				if err := receiveAll(ctx, r, newMsgGen(seed, max), n); err != nil {
					c.kill()
					t.Fatalf("%v (helper: %v)", err, c.wait())
				}
				// The sender detached after its last message.
				if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrDetached) {
					t.Errorf("Receive after the last message = %v, want ErrDetached", err)
				}
				c.mustSucceed()
				if laps := r.head / ring; laps < 100 {
					t.Errorf("the ring wrapped %d times, want many", laps)
				}
			} else {
				s, err := AttachSender(mem)
				if err != nil {
					t.Fatal(err)
				}
				c := startChild(ctx, t, "qrecv", seg, genEnv(seed, max, n)...)
				if err := sendAll(ctx, s, newMsgGen(seed, max), n); err != nil {
					c.kill()
					t.Fatalf("%v (helper: %v)", err, c.wait())
				}
				s.Detach()
				c.mustSucceed()
			}
		})
	}
}

func TestQueuePeerDetaches(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	seg, mem := queueSegment(t, 4096)
	s, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach()
	c := startChild(ctx, t, "qrecv-detach", seg)
	if err := s.Send(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.mustSucceed()
	if err := s.Send(ctx, []byte("anyone?")); !errors.Is(err, ErrDetached) {
		t.Errorf("Send after the receiver detached = %v, want ErrDetached", err)
	}
}

func TestQueuePeerKilled(t *testing.T) {
	t.Run("sender killed", func(t *testing.T) {
		checkLeaks(t)
		ctx := testContext(t)
		const n = 40
		seg, mem := queueSegment(t, 4096)
		r, err := AttachReceiver(mem)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Detach()
		c := startChild(ctx, t, "qsend-hang", seg, genEnv(1, 64, n)...)
		gen := newMsgGen(1, 64)
		if err := receiveAll(ctx, r, gen, 1); err != nil { // the sender is seen alive
			t.Fatal(err)
		}
		c.expectLine("sent")
		c.kill()
		if err := c.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("helper exit: %v, want killed", err)
		}
		// Every message sent before the sender died is still delivered.
		if err := receiveAll(ctx, r, gen, n-1); err != nil {
			t.Fatal(err)
		}
		_, err = r.Receive(ctx, nil)
		if !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "exited") {
			t.Errorf("Receive from a dead sender = %v, want ErrDetached", err)
		}
	})
	t.Run("receiver killed", func(t *testing.T) {
		checkLeaks(t)
		ctx := testContext(t)
		seg, mem := queueSegment(t, 4096)
		s, err := AttachSender(mem)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Detach()
		c := startChild(ctx, t, "qrecv-hang", seg)
		if err := s.Send(ctx, []byte("first")); err != nil {
			t.Fatal(err)
		}
		c.expectLine("got")
		c.kill()
		if err := c.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("helper exit: %v, want killed", err)
		}
		// Sends succeed while there is room, then fail instead of blocking.
		msg := make([]byte, 1000)
		for i := 0; ; i++ {
			err := s.Send(ctx, msg)
			if err == nil {
				if i > 4096/len(msg) {
					t.Fatalf("%d sends into a 4 KiB ring succeeded", i+1)
				}
				continue
			}
			if !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "exited") {
				t.Fatalf("Send to a dead receiver = %v, want ErrDetached", err)
			}
			break
		}
	})
}

// TestQueueInProcess runs both ends in one process, through tiny rings, so
// that nearly every call waits for the other side.
func TestQueueInProcess(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	for _, ring := range []int{64, 128, 1000} {
		_, mem := queueSegment(t, ring)
		s, err := AttachSender(mem)
		if err != nil {
			t.Fatal(err)
		}
		r, err := AttachReceiver(mem)
		if err != nil {
			t.Fatal(err)
		}
		const n = 5000
		max := s.MaxMessage()
		errc := make(chan error, 1)
		go func() {
			errc <- sendAll(ctx, s, newMsgGen(uint64(ring), max), n)
			s.Detach()
		}()
		if err := receiveAll(ctx, r, newMsgGen(uint64(ring), max), n); err != nil {
			t.Errorf("ring %d: %v", ring, err)
		}
		if err := <-errc; err != nil {
			t.Errorf("ring %d: %v", ring, err)
		}
		if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrDetached) {
			t.Errorf("ring %d: Receive after Detach = %v, want ErrDetached", ring, err)
		}
		r.Detach()
	}
}

func TestQueueWrap(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	_, mem := queueSegment(t, 64)
	s, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach()
	r, err := AttachReceiver(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Detach()
	if s.MaxMessage() != 56 {
		t.Fatalf("MaxMessage() = %d, want 56", s.MaxMessage())
	}
	// 40 bytes take a 48-byte frame; the next frame's header sits at 48..56
	// and its 20-byte payload at 56..64 and 0..12; the third frame starts
	// at 16 and ends at 64.
	for i, size := range []int{40, 20, 40, 56, 0, 56, 1} {
		msg := bytes.Repeat([]byte{byte('a' + i)}, size)
		if err := s.Send(ctx, msg); err != nil {
			t.Fatalf("Send #%d: %v", i, err)
		}
		got, err := r.Receive(ctx, make([]byte, 0, 64))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Receive #%d = %q, %v; want %q", i, got, err, msg)
		}
	}
}

func TestQueueErrors(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	if got := QueueSize(1000); got != queueHeaderSize+1024 {
		t.Errorf("QueueSize(1000) = %d, want %d", got, queueHeaderSize+1024)
	}
	if got := QueueSize(0); got != queueHeaderSize+64 {
		t.Errorf("QueueSize(0) = %d, want %d", got, queueHeaderSize+64)
	}
	if err := InitQueue(make([]byte, QueueSize(64)-1)); err == nil {
		t.Error("InitQueue of a too small region succeeded")
	}

	seg, err := Build(1, []Region{{Name: "raw", Size: QueueSize(128)}, {Name: "q", Size: QueueSize(128), Init: mustInitQueue}})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	raw, _ := seg.Region("raw")
	if _, err := AttachSender(raw); !errors.Is(err, ErrCorruptQueue) {
		t.Errorf("AttachSender to an uninitialised region = %v, want ErrCorruptQueue", err)
	}
	mem, _ := seg.Region("q")
	s, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AttachSender(mem); err == nil || !strings.Contains(err.Error(), "already has a sender") {
		t.Errorf("second AttachSender = %v", err)
	}
	if err := s.Send(ctx, make([]byte, 121)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send of 121 bytes into a 128-byte ring = %v, want ErrTooLarge", err)
	}
	r, err := AttachReceiver(mem)
	if err != nil {
		t.Fatal(err)
	}

	// Empty queue, full queue: both wait until their context ends.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := r.Receive(short, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive from an empty queue = %v, want DeadlineExceeded", err)
	}
	cancel()
	if err := s.Send(ctx, make([]byte, 120)); err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithCancel(ctx)
	cancel()
	if err := s.Send(short, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Send to a full queue = %v, want Canceled", err)
	}
	if got, err := r.Receive(ctx, nil); err != nil || len(got) != 120 {
		t.Errorf("Receive = %d bytes, %v; want 120", len(got), err)
	}

	// A scribbled frame header is detected, not trusted.
	if err := s.Send(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	ring := mem[queueHeaderSize:]
	ring[r.head&r.e.mask] = 100
	if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrCorruptQueue) {
		t.Errorf("Receive of a scribbled frame = %v, want ErrCorruptQueue", err)
	}
	// So is a tail that ran ahead of the head by more than the ring.
	r.e.q.tail.Store(r.head + 1000)
	r.tail = r.head
	if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrCorruptQueue) {
		t.Errorf("Receive with a scribbled tail = %v, want ErrCorruptQueue", err)
	}

	s.Detach()
	s.Detach()
	r.Detach()
	if err := s.Send(ctx, nil); !errors.Is(err, ErrEndpointDetached) {
		t.Errorf("Send after Detach = %v", err)
	}
	if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrEndpointDetached) {
		t.Errorf("Receive after Detach = %v", err)
	}
	if _, err := AttachReceiver(mem); err == nil {
		t.Error("a receiver re-attached after Detach")
	}
}

// A side that detached cleanly can be attached again on the same queue (a
// worker stopped and started again on the same segment): messages sent
// before its return, and after, arrive in order; an attached side is
// never taken over.
func TestQueueReattachAfterCleanDetach(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	_, mem := queueSegment(t, 256)
	s, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	r, err := AttachReceiver(mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two"} {
		if err := s.Send(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	s.Detach()
	r.Detach()
	if _, err := AttachSender(mem); err != nil {
		t.Fatalf("a sender attaching after a clean detach: %v", err)
	}
	if _, err := AttachSender(mem); err == nil {
		t.Fatal("a second sender took over an attached side")
	}
	r2, err := AttachReceiver(mem)
	if err != nil {
		t.Fatalf("a receiver attaching after a clean detach: %v", err)
	}
	defer r2.Detach()
	buf := make([]byte, 64)
	for _, want := range []string{"one", "two"} {
		got, err := r2.Receive(ctx, buf)
		if err != nil || string(got) != want {
			t.Fatalf("after the reattach: Receive = %q, %v; want %q", got, err, want)
		}
	}
}

// A receiver that saw its sender detach sees the next sender that attaches
// on the same queue: it waits for its messages instead of reporting the
// old one's departure for ever.
func TestQueueReceiverFollowsNewSender(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	_, mem := queueSegment(t, 256)
	s, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	r, err := AttachReceiver(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Detach()
	s.Detach()
	if _, err := r.Receive(ctx, nil); !errors.Is(err, ErrDetached) {
		t.Fatalf("Receive with the sender gone = %v, want ErrDetached", err)
	}
	s2, err := AttachSender(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Detach()
	if err := s2.Send(ctx, []byte("back")); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Receive(ctx, nil); err != nil || string(got) != "back" {
		t.Fatalf("Receive from the new sender = %q, %v", got, err)
	}
}
