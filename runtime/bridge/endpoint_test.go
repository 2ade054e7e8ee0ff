package bridge

import (
	"bytes"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/internal/codec"
)

// rawSend queues a hand-built frame on the host's connection.
func (p *endpointPair) rawSend(t *testing.T, frame []byte) {
	t.Helper()
	if err := p.host.conn.Send(raw(frame)); err != nil {
		t.Fatal(err)
	}
}

// count asks the worker for its tell count through the bridge.
func (p *endpointPair) countTells(t *testing.T) string {
	t.Helper()
	v, err := p.hostSys.Root.RequestFuture(p.target, "count", 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := v.(string)
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Second); !cond(); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestEndpointUnknownType: a message whose type name the receiver does not
// know is answered with an error (request) or counted and dropped (tell);
// the connection stays up and later messages get through.
func TestEndpointUnknownType(t *testing.T) {
	p := newEndpointPair(t)

	tell, s := AppendTellHeader(nil, "", "no.such.Type")
	p.rawSend(t, FinishFrame(append(tell, 1, 2, 3), s))
	waitFor(t, "the undeliverable tell to be counted", func() bool { return p.child.Undeliverable.Load() == 1 })

	// A request of an unknown type, hand-built, with a future registered
	// as its sender.
	id := p.host.nextID.Add(1)
	f := actor.NewFuture(p.hostSys, 5*time.Second)
	p.host.mu.Lock()
	p.host.pending[id] = pendingRequest{sender: f.PID(), target: "t"}
	p.host.mu.Unlock()
	req, s := AppendRequestHeader(nil, uint64(id), "", "no.such.Type")
	p.rawSend(t, FinishFrame(append(req, 9), s))
	v, err := f.Result()
	if err != nil {
		t.Fatal(err)
	}
	re, ok := v.(*RemoteError)
	if !ok || !bytes.Contains([]byte(re.Reason), []byte("no codec")) || re.Target != "t" {
		t.Fatalf("request of an unknown type answered with %T %v, want a RemoteError about the codec", v, v)
	}
	if got := p.countTells(t); got != "0" {
		t.Errorf("worker counted %s tells, want 0", got)
	}
}

// TestEndpointEncodeErrors: a message the codec cannot encode fails at the
// sender with the codec's error and leaves nothing behind in the queue or
// on the socket: the next messages arrive intact, both queued and urgent.
func TestEndpointEncodeErrors(t *testing.T) {
	p := newEndpointPair(t)
	p.want.Store(2)

	if err := p.host.Tell("", []byte("one")); err != nil {
		t.Fatal(err)
	}
	err := p.host.Tell("", make(chan int))
	if !errors.Is(err, codec.ErrUnknownType) {
		t.Fatalf("Tell(chan) = %v, want an error wrapping codec.ErrUnknownType", err)
	}
	// Urgent path: the request fails, the socket is given back.
	v, rerr := p.hostSys.Root.RequestFuture(p.target, make(chan int), 5*time.Second).Result()
	if rerr != nil {
		t.Fatal(rerr)
	}
	if _, ok := v.(*RemoteError); !ok {
		t.Fatalf("request of an unencodable message answered with %T %v, want a RemoteError", v, v)
	}
	if err := p.host.Tell("", []byte("two")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.reached:
	case <-time.After(5 * time.Second):
		t.Fatalf("worker counted %d tells, want 2", p.count.Load())
	}
	if got := p.host.EncodeErrors.Load(); got != 2 {
		t.Errorf("EncodeErrors = %d, want 2", got)
	}
	// A response the child cannot encode becomes an error response.
	v, rerr = p.hostSys.Root.RequestFuture(p.target, "unencodable", 5*time.Second).Result()
	if rerr != nil {
		t.Fatal(rerr)
	}
	if _, ok := v.(*RemoteError); !ok {
		t.Fatalf("unencodable response arrived as %T %v, want a RemoteError", v, v)
	}
	// Echo still works, through the inline path.
	v, rerr = p.hostSys.Root.RequestFuture(p.target, []byte("echo"), 5*time.Second).Result()
	if b, ok := v.([]byte); rerr != nil || !ok || string(b) != "echo" {
		t.Fatalf("echo = %T %v, %v", v, v, rerr)
	}
	if p.host.Undeliverable.Load() != 0 || p.child.Undeliverable.Load() != 0 {
		t.Errorf("undeliverable: host %d, child %d; want 0", p.host.Undeliverable.Load(), p.child.Undeliverable.Load())
	}
}

// TestEndpointOrder: tells and requests from one sender arrive in order,
// whether a request is written inline or queued behind tells.
func TestEndpointOrder(t *testing.T) {
	p := newEndpointPair(t)
	var msg any = make([]byte, 64)
	for round := 1; round <= 20; round++ {
		for range 500 {
			p.hostSys.Root.Send(p.target, msg)
		}
		if got, want := p.countTells(t), round*500; got != strconv.Itoa(want) {
			t.Fatalf("round %d: worker counted %s tells before the request, want %d", round, got, want)
		}
	}
}

// TestTellEncodeAllocs: sending a []byte or string tell allocates nothing.
func TestTellEncodeAllocs(t *testing.T) {
	a, b := newPair(t, 0)
	done := readLoop(b, func(Kind, []byte) error { return nil }, false)
	ep := NewEndpoint(a, nil, "x", nil, nil)
	var bs any = make([]byte, 64)
	var str any = "a string message"
	// Warm up the queue's buffers.
	for range 1000 {
		ep.Tell("", bs)
	}
	for _, msg := range []any{bs, str} {
		if n := testing.AllocsPerRun(1000, func() { ep.Tell("", msg) }); n > 0.01 {
			t.Errorf("Tell(%T) allocates %v times per message, want 0", msg, n)
		}
	}
	a.Close()
	b.Close()
	<-done
}
