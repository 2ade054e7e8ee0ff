package bridge

import (
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// endpointPair is a host and a child endpoint in one process, each with
// its own actor system, over a real socketpair: the bridge as the runtime
// uses it, minus the process boundary.
type endpointPair struct {
	hostSys, childSys *actor.ActorSystem
	host, child       *Endpoint
	worker            *actor.PID // the child's sink/echo actor
	target            *actor.PID // host-side PID that crosses to the worker
	count             atomic.Uint64
	reached           chan struct{}
	want              atomic.Uint64
	done              []<-chan error
}

const (
	pairChildAddr = "bench-child" // host system: resolves to the host endpoint
	pairHostAddr  = "bench-host"  // child system: resolves to the child endpoint
)

func unixConnTB(tb testing.TB, f *os.File) *net.UnixConn {
	tb.Helper()
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		tb.Fatalf("net.FileConn: %v", err)
	}
	return nc.(*net.UnixConn)
}

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

func newEndpointPair(tb testing.TB) *endpointPair {
	tb.Helper()
	parent, childF, err := Pair()
	if err != nil {
		tb.Fatal(err)
	}
	hc := NewConn(unixConnTB(tb, parent), 0)
	cc := NewConn(unixConnTB(tb, childF), 0)
	p := &endpointPair{hostSys: quietSystem(), childSys: quietSystem(), reached: make(chan struct{}, 1)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p.worker = p.childSys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case []byte:
			if c.Sender() == nil {
				if n := p.count.Add(1); n == p.want.Load() {
					p.reached <- struct{}{}
				}
			} else {
				c.Respond(m)
			}
		case string:
			if m == "unencodable" {
				c.Respond(make(chan int))
				return
			}
			c.Respond(strconv.FormatUint(p.count.Load(), 10))
		}
	}))
	p.host = NewEndpoint(hc, p.hostSys, pairChildAddr, func(string) (*actor.PID, error) { return nil, ErrNoTarget }, log)
	p.child = NewEndpoint(cc, p.childSys, pairHostAddr, func(target string) (*actor.PID, error) {
		if target != "" {
			return nil, ErrNoTarget
		}
		return p.worker, nil
	}, log)
	p.hostSys.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		return p.host, pid.Address == pairChildAddr
	})
	p.childSys.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		return p.child, pid.Address == pairHostAddr
	})
	p.target = actor.NewPID(pairChildAddr, "")
	p.done = append(p.done, readLoop(hc, p.host.Handle, false), readLoop(cc, p.child.Handle, false))
	tb.Cleanup(func() {
		hc.Close()
		cc.Close()
		for _, d := range p.done {
			<-d
		}
		p.host.Close()
		p.child.Close()
		p.hostSys.Shutdown()
		p.childSys.Shutdown()
	})
	return p
}

// BenchmarkEndpointTell is the Tell throughput of the bridge in one
// process: host Send → encode → socket → decode → worker mailbox, until the
// worker has counted every message.
func BenchmarkEndpointTell(b *testing.B) {
	p := newEndpointPair(b)
	var msg any = make([]byte, 64)
	p.want.Store(uint64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p.hostSys.Root.Send(p.target, msg)
	}
	select {
	case <-p.reached:
	case <-time.After(time.Minute):
		b.Fatalf("worker counted %d of %d", p.count.Load(), b.N)
	}
}

// BenchmarkEndpointRequest is the 64-byte request/response round trip
// through RequestFuture.
func BenchmarkEndpointRequest(b *testing.B) {
	p := newEndpointPair(b)
	var msg any = make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		v, err := p.hostSys.Root.RequestFuture(p.target, msg, 5*time.Second).Result()
		if err != nil {
			b.Fatal(err)
		}
		if bs, ok := v.([]byte); !ok || len(bs) != 64 {
			b.Fatalf("response %T %v", v, v)
		}
	}
}

// BenchmarkTellEncode is the sending side alone: Endpoint.Tell into a Conn
// whose peer discards what it reads.
func BenchmarkTellEncode(b *testing.B) {
	parent, childF, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	hc := NewConn(unixConnTB(b, parent), 0)
	peer := unixConnTB(b, childF)
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, peer); close(drained) }()
	ep := NewEndpoint(hc, nil, pairChildAddr, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var msg any = make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := ep.Tell("", msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := hc.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	<-drained
	b.StopTimer()
	hc.Close()
	peer.Close()
}

// BenchmarkHandleTell is the receiving side alone: Endpoint.Handle of a
// 64-byte []byte tell into a counting actor (whose goroutine runs
// concurrently), until the actor has counted them all.
func BenchmarkHandleTell(b *testing.B) {
	sys := quietSystem()
	defer sys.Shutdown()
	var count atomic.Uint64
	want := uint64(b.N)
	reached := make(chan struct{})
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().([]byte); ok {
			if count.Add(1) == want {
				close(reached)
			}
		}
	}))
	ep := NewEndpoint(nil, sys, pairHostAddr, func(string) (*actor.PID, error) { return pid, nil },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	frame := benchTellFrame(b)
	k, body, _, err := SplitFrame(frame, DefaultMaxFrame)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := ep.Handle(k, body); err != nil {
			b.Fatal(err)
		}
	}
	<-reached
}

// benchTellFrame is one 64-byte []byte tell to the default target.
func benchTellFrame(tb testing.TB) []byte {
	b, s := AppendTellHeader(nil, "", "bytes")
	return FinishFrame(append(b, make([]byte, 64)...), s)
}

// BenchmarkRawPingPong is the baseline of BenchmarkEndpointRequest: 64
// bytes each way over a socketpair through the netpoller, in one process.
func BenchmarkRawPingPong(b *testing.B) {
	parent, childF, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	a, c := unixConnTB(b, parent), unixConnTB(b, childF)
	defer a.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := a.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			b.Fatal(err)
		}
	}
}
