package runtime

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

func TestWorkerRequestResponseAndTell(t *testing.T) {
	h := newHarness(t, Config{})
	hd, pid := h.start("echo1", "echo", "", nil)
	if pid <= 0 {
		t.Fatalf("pid = %d", pid)
	}
	root := h.rt.System().Root
	r, err := root.RequestFuture(hd.PID(), Ping{N: 7, Text: "hi"}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.(Ping); !ok || got.N != 7 || got.Text != "hi" {
		t.Fatalf("response = %#v, want Ping{7, hi}", r)
	}
	r, err = root.RequestFuture(hd.PID(), []byte("raw"), 5*time.Second).Result()
	if err != nil || string(r.([]byte)) != "raw" {
		t.Fatalf("bytes response = %v, %v", r, err)
	}
	for range 100 {
		root.Send(hd.PID(), Ping{N: 1})
	}
	r, err = root.RequestFuture(hd.PID(), "count", 5*time.Second).Result()
	if err != nil || r.(string) != "100" {
		t.Fatalf("count = %v, %v; want 100 (tells are delivered in order before the request)", r, err)
	}
	// An unregistered Go type is an error at the sender, not a silent drop.
	type unregistered struct{ X int }
	r, _ = root.RequestFuture(hd.PID(), unregistered{1}, 5*time.Second).Result()
	if err, ok := r.(error); !ok || !strings.Contains(err.Error(), "register") {
		t.Fatalf("unserialisable request result = %#v, want an error naming registration", r)
	}
	wi := h.info("echo1")
	if wi.State != Running || wi.PID != pid || !wi.Dynamic {
		t.Fatalf("info = %+v", wi)
	}
	if err := hd.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ex == nil || ex.Crash {
		t.Fatalf("exit after terminate = %+v, want a clean stop", ex)
	}
	// Not running: requests get a dead letter at once.
	if _, err := root.RequestFuture(hd.PID(), Ping{}, 5*time.Second).Result(); !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("request to stopped worker: err = %v, want ErrDeadLetter", err)
	}
}

func TestConnectWorkerReachesExposedHostActor(t *testing.T) {
	h := newHarness(t, Config{})
	got := make(chan Ping, 4)
	store := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(Ping); ok {
			if ctx.Sender() != nil {
				ctx.Respond(Ping{N: p.N + 1})
			} else {
				got <- p
			}
		}
	}))
	defer h.rt.System().Root.Stop(store)
	if err := h.rt.Expose("store", store); err != nil {
		t.Fatal(err)
	}
	h.start("caller1", "caller", "store", func(s *actors.Spec) { s.Connect = true })
	select {
	case p := <-got:
		if p.N != 1 {
			t.Fatalf("tell = %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no tell from the connected worker")
	}
	// An unknown target: the request fails and the worker exits 1.
	hd, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "caller2", Type: "caller", Connect: true, Arg: []byte("nosuch"), StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reason != ReasonExit1 || !strings.Contains(ex.Stderr, "nosuch") {
		t.Fatalf("exit = %+v, want exit1 with an error naming the target", ex)
	}
}

func TestWorkerWithoutConnectCannotReachHost(t *testing.T) {
	h := newHarness(t, Config{})
	store := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(Ping); ok && ctx.Sender() != nil {
			ctx.Respond(Ping{N: 42})
		}
	}))
	defer h.rt.System().Root.Stop(store)
	h.rt.Expose("store", store)
	hd, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "nc", Type: "plain_caller", Arg: []byte("store"), StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reason != ReasonExit1 || !strings.Contains(ex.Stderr, "Connect") {
		t.Fatalf("exit = %+v, want exit1 with ErrNotConnected", ex)
	}
}

// SIGKILL from outside is a crash, reason signal:KILL,
// and the worker restarts with a new pid.
func TestSigkillIsCrashAndRestarts(t *testing.T) {
	h := newHarness(t, Config{})
	_, pid := h.start("k", "fault", "run", nil)
	_, sib := h.start("sib", "fault", "run", nil)
	syscall.Kill(pid, syscall.SIGKILL) // the test is outside the runtime; it may use a raw pid
	ev := h.waitState("k", Crashed)
	if ev.Exit.Reason != "signal:KILL" || !ev.Exit.Crash {
		t.Fatalf("exit = %+v, want signal:KILL crash", ev.Exit)
	}
	pe := h.waitState("k", Pending)
	if pe.Backoff != 50*time.Millisecond {
		t.Fatalf("backoff = %v, want 50ms", pe.Backoff)
	}
	re := h.waitState("k", Running)
	if re.PID == pid || re.PID == 0 {
		t.Fatalf("new pid %d, old %d", re.PID, pid)
	}
	if lag := re.At.Sub(pe.At); lag < 50*time.Millisecond {
		t.Fatalf("restarted %v after the crash, before the 50ms backoff", lag)
	}
	if h.info("sib").PID != sib {
		t.Fatal("sibling pid changed")
	}
	if wi := h.info("k"); wi.Restarts != 1 {
		t.Fatalf("restarts = %d, want 1", wi.Restarts)
	}
}

func init() {
	// stopper: an actor with a child actor that stops itself on the
	// request "stop" after answering it; with Arg "bounded" its Props
	// bring their own mailbox (the receiver-middleware lifecycle).
	actors.MustDefine(actors.Spec{Name: "stopper", Props: func(w actors.Worker) *actor.Props {
		props := actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case *actor.Started:
				ctx.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
			case string:
				if m == "stop" {
					ctx.Respond("stopping")
					ctx.Stop(ctx.Self())
				}
			}
		})
		if string(w.Arg()) == "bounded" {
			props = props.Configure(actor.WithMailbox(actor.Bounded(64)))
		}
		return props
	}})
}

// A worker actor that stops itself (waiting for its own child actor to
// stop first) ends its process with exit 0, with or without a mailbox of
// its own, and is not restarted.
func TestWorkerActorStopIsCleanExit(t *testing.T) {
	h := newHarness(t, Config{})
	for _, arg := range []string{"", "bounded"} {
		name := "stopper-" + arg
		hd, _ := h.start(name, "stopper", arg, nil)
		r, err := h.rt.System().Root.RequestFuture(hd.PID(), "stop", 5*time.Second).Result()
		if err != nil || r != "stopping" {
			t.Fatalf("%s: stop request = %v, %v", name, r, err)
		}
		ex, err := hd.WaitStopped(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if ex == nil || ex.Reason != ReasonExit0 || ex.Crash {
			t.Fatalf("%s: exit = %+v, want a clean exit 0", name, ex)
		}
		if wi := h.info(name); wi.State != Stopped || wi.Restarts != 0 {
			t.Fatalf("%s: info = %+v, want stopped, not restarted", name, wi)
		}
	}
}

func init() {
	// relay: a connected actor that, handling a request from the host,
	// asks the host actor named by its Arg and answers with that answer:
	// it blocks in Receive on a frame the bridge has still to read.
	actors.MustDefine(actors.Spec{Name: "relay", Connect: true, Props: func(w actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if p, ok := ctx.Message().(Ping); ok && ctx.Sender() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r, err := w.Request(rctx, string(w.Arg()), p)
				if err != nil {
					ctx.Respond(Ping{N: -1, Text: err.Error()})
					return
				}
				ctx.Respond(r)
			}
		})
	}})
}

func init() {
	// bounded: counts tells in a mailbox of its own that holds 4.
	actors.MustDefine(actors.Spec{Name: "bounded", Props: func(actors.Worker) *actor.Props {
		count := 0
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case []byte:
				count++
			case string:
				if m == "count" {
					ctx.Respond(strconv.Itoa(count))
				}
			}
		}).Configure(actor.WithMailbox(actor.Bounded(4)))
	}})
}

// A worker whose Props bring a small bounded mailbox gets a batch of
// frames far larger than the mailbox: the reader must not hold the mailbox
// run for the end of the batch (it would wait on a full mailbox for a run
// only it can start); every tell arrives.
func TestBoundedMailboxWorkerGetsLargeBatch(t *testing.T) {
	h := newHarness(t, Config{})
	hd, _ := h.start("bounded1", "bounded", "", nil)
	root := h.rt.System().Root
	msg := make([]byte, 64)
	const n = 5000
	for range n {
		root.Send(hd.PID(), msg)
	}
	r, err := root.RequestFuture(hd.PID(), "count", 20*time.Second).Result()
	if err != nil {
		t.Fatalf("count after %d tells: %v", n, err)
	}
	if r != strconv.Itoa(n) {
		t.Fatalf("count = %v, want %d", r, n)
	}
}

// A worker actor runs on the bridge's reading goroutine when a message
// from the host schedules it (holdDispatcher). One that waits, inside
// Receive, for its own request to the host is answered: reading moves to
// another goroutine before the request goes out, not by the watchdog,
// which the child here only runs after an hour.
func TestActorBlockingOnHostRequestInReceive(t *testing.T) {
	h := newHarness(t, Config{ChildEnv: append(pmtChildEnv(), "RTTEST_LOAN_LIMIT=1h")})
	store := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(Ping); ok && ctx.Sender() != nil {
			ctx.Respond(Ping{N: p.N * 10, Text: "store"})
		}
	}))
	defer h.rt.System().Root.Stop(store)
	if err := h.rt.Expose("store", store); err != nil {
		t.Fatal(err)
	}
	hd, _ := h.start("relay1", "relay", "store", func(s *actors.Spec) { s.Connect = true })
	for i := 1; i <= 50; i++ {
		r, err := h.rt.System().Root.RequestFuture(hd.PID(), Ping{N: i}, 10*time.Second).Result()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if p, ok := r.(Ping); !ok || p.N != 10*i || p.Text != "store" {
			t.Fatalf("request %d: answer %#v, want Ping{%d, store}", i, r, 10*i)
		}
	}
}
