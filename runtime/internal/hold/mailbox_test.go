package hold

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// manual is a dispatcher that keeps the scheduled run for the test to call.
type manual struct{ runs []func() }

func (d *manual) Schedule(fn func()) { d.runs = append(d.runs, fn) }
func (d *manual) Throughput() int    { return 300 }

// runOne runs the one scheduled run; it fails if there is not exactly one.
func (d *manual) runOne(t *testing.T) {
	t.Helper()
	if len(d.runs) != 1 {
		t.Fatalf("%d runs scheduled, want 1", len(d.runs))
	}
	fn := d.runs[0]
	d.runs = nil
	fn()
}

// invoker records what it is given, in order, and can act on a message.
type invoker struct {
	got       []string
	escalated []string
	on        func(msg any)
}

func name(msg any) string {
	switch m := msg.(type) {
	case string:
		return m
	case *actor.MessageEnvelope:
		return "env:" + name(m.Message)
	case *actor.Started:
		return "sys:started"
	case *actor.Stop:
		return "sys:stop"
	}
	return fmt.Sprintf("%T", msg)
}

func (i *invoker) InvokeSystemMessage(msg any) { i.got = append(i.got, name(msg)); i.act(msg) }
func (i *invoker) InvokeUserMessage(msg any)   { i.got = append(i.got, name(msg)); i.act(msg) }
func (i *invoker) EscalateFailure(reason, msg any) {
	i.escalated = append(i.escalated, fmt.Sprintf("%v on %s", reason, name(msg)))
}
func (i *invoker) act(msg any) {
	if i.on != nil {
		i.on(msg)
	}
}

func newTestMailbox(mws ...actor.MailboxMiddleware) (*Mailbox, *invoker, *manual) {
	m, inv, d := NewMailbox(mws...), &invoker{}, &manual{}
	m.RegisterHandlers(inv, d)
	return m, inv, d
}

func TestMailboxBatchOrder(t *testing.T) {
	m, inv, d := newTestMailbox()
	m.PostUserMessage("a")
	next := m.PostBatch([]any{"b", "c"})
	if len(next) != 0 {
		t.Fatalf("PostBatch returned %d messages, want an empty slice", len(next))
	}
	next = m.PostBatch(append(next, "d", "e"))
	m.PostUserMessage("f")
	if got := m.UserMessageCount(); got != 6 {
		t.Errorf("UserMessageCount = %d, want 6", got)
	}
	d.runOne(t) // one run for all: the mailbox was scheduled once
	if want := []string{"a", "b", "c", "d", "e", "f"}; !slices.Equal(inv.got, want) {
		t.Fatalf("handled %v, want %v", inv.got, want)
	}
	if got := m.UserMessageCount(); got != 0 {
		t.Errorf("UserMessageCount after the run = %d, want 0", got)
	}
	// A slice handed back is empty and cleared: the caller appends to it.
	if next = m.PostBatch(append(next, "g")); len(next) != 0 || slices.ContainsFunc(next[:cap(next)], func(v any) bool { return v != nil }) {
		t.Fatalf("slice handed back %v (cap %d): want empty and cleared", next, cap(next))
	}
	d.runOne(t)
	if inv.got[len(inv.got)-1] != "g" {
		t.Fatalf("handled %v, want g last", inv.got)
	}
}

func TestMailboxSystemMessagesFirst(t *testing.T) {
	m, inv, d := newTestMailbox()
	m.PostBatch([]any{"u1", "u2", "u3"})
	m.PostSystemMessage(&actor.Started{})
	// Posted while u1 is handled: before u2.
	inv.on = func(msg any) {
		if msg == "u1" {
			m.PostSystemMessage(&actor.Stop{})
		}
	}
	d.runOne(t)
	if want := []string{"sys:started", "u1", "sys:stop", "u2", "u3"}; !slices.Equal(inv.got, want) {
		t.Fatalf("handled %v, want %v", inv.got, want)
	}
}

func TestMailboxSuspendResume(t *testing.T) {
	m, inv, d := newTestMailbox()
	inv.on = func(msg any) {
		if msg == "u1" {
			m.PostSystemMessage(&actor.SuspendMailbox{})
		}
	}
	m.PostBatch([]any{"u1", "u2", "u3"})
	d.runOne(t)
	if want := []string{"u1"}; !slices.Equal(inv.got, want) {
		t.Fatalf("suspended mailbox handled %v, want %v", inv.got, want)
	}
	m.PostUserMessage("u4") // a run starts, and stops at once: still suspended
	d.runOne(t)
	if len(inv.got) != 1 {
		t.Fatalf("suspended mailbox handled %v", inv.got)
	}
	m.PostSystemMessage(&actor.ResumeMailbox{})
	d.runOne(t)
	if want := []string{"u1", "u2", "u3", "u4"}; !slices.Equal(inv.got, want) {
		t.Fatalf("handled %v, want %v", inv.got, want)
	}
}

func TestMailboxPanicEscalates(t *testing.T) {
	m, inv, d := newTestMailbox()
	inv.on = func(msg any) {
		if msg == "bad" {
			panic("boom")
		}
	}
	m.PostBatch([]any{"u1", "bad", "u2"})
	d.runOne(t)
	if want := []string{"boom on bad"}; !slices.Equal(inv.escalated, want) {
		t.Fatalf("escalated %v, want %v", inv.escalated, want)
	}
	// The failed message is consumed; the run goes on with the rest (the
	// supervisor suspends the mailbox with a system message if it wants to).
	if want := []string{"u1", "bad", "u2"}; !slices.Equal(inv.got, want) {
		t.Fatalf("handled %v, want %v", inv.got, want)
	}
}

type batch []any

func (b batch) GetMessages() []any { return b }

func TestMailboxMessageBatch(t *testing.T) {
	m, inv, d := newTestMailbox()
	m.PostBatch([]any{"u1", batch{"b1", "b2"}, "u2"})
	d.runOne(t)
	// As protoactor's default mailbox: the batch's messages, then the batch.
	if want := []string{"u1", "b1", "b2", "hold.batch", "u2"}; !slices.Equal(inv.got, want) {
		t.Fatalf("handled %v, want %v", inv.got, want)
	}
}

// counting is a middleware that counts the calls the default mailbox makes.
type counting struct {
	mu                              sync.Mutex
	started, posted, received, idle int
}

func (c *counting) MailboxStarted()     { c.mu.Lock(); c.started++; c.mu.Unlock() }
func (c *counting) MessagePosted(any)   { c.mu.Lock(); c.posted++; c.mu.Unlock() }
func (c *counting) MessageReceived(any) { c.mu.Lock(); c.received++; c.mu.Unlock() }
func (c *counting) MailboxEmpty()       { c.mu.Lock(); c.idle++; c.mu.Unlock() }

func TestMailboxMiddlewares(t *testing.T) {
	mw := &counting{}
	m, _, d := newTestMailbox(mw)
	m.Start()
	m.PostSystemMessage(&actor.Started{})
	m.PostBatch([]any{"u1", "u2"})
	m.PostUserMessage("u3")
	d.runOne(t)
	mw.mu.Lock()
	defer mw.mu.Unlock()
	if got, want := [4]int{mw.started, mw.posted, mw.received, mw.idle}, [4]int{1, 4, 4, 1}; got != want {
		t.Errorf("middleware calls (started, posted, received, empty) = %v, want %v", got, want)
	}
}

// An actor of a real actor system with the mailbox: messages posted by
// several goroutines, one by one and in batches, arrive one at a time and
// in each sender's order.
func TestMailboxActorOrder(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	defer sys.Shutdown()
	const senders, per = 4, 5000
	var (
		mu      sync.Mutex
		inside  bool
		overlap bool
		last    [senders]int
		bad     []string
		done    = make(chan struct{})
		total   int
	)
	var mbox *Mailbox
	var spawned sync.WaitGroup
	spawned.Add(1)
	props := actor.PropsFromFunc(func(c actor.Context) {
		msg, ok := c.Message().([2]int)
		if !ok {
			return
		}
		mu.Lock()
		if inside {
			overlap = true
		}
		inside = true
		if s, n := msg[0], msg[1]; n != last[s]+1 {
			bad = append(bad, fmt.Sprintf("sender %d: %d after %d", s, n, last[s]))
		}
		last[msg[0]] = msg[1]
		inside = false
		total++
		if total == senders*per {
			close(done)
		}
		mu.Unlock()
	}).Configure(actor.WithMailbox(func() actor.Mailbox {
		mbox = NewMailbox()
		spawned.Done()
		return mbox
	}))
	pid := sys.Root.Spawn(props)
	spawned.Wait()
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			var b []any
			for n := 1; n <= per; n++ {
				m := [2]int{s, n}
				switch {
				case s%2 == 0:
					sys.Root.Send(pid, m) // through protoactor, PostUserMessage
				case n%7 == 0:
					b = mbox.PostBatch(append(b, m))
				default:
					b = append(b, m)
					if len(b) == 50 {
						b = mbox.PostBatch(b)
					}
				}
			}
			if len(b) > 0 {
				mbox.PostBatch(b)
			}
		})
	}
	wg.Wait()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("two messages were handled at once")
	}
	if len(bad) > 0 {
		t.Errorf("out of order: %v", bad[:min(len(bad), 5)])
	}
}
