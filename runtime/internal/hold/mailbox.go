package hold

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// Mailbox is a protoactor mailbox (an actor.Mailbox, made by a
// MailboxProducer) that takes user messages in batches: a goroutine that
// has many messages for the actor (the child's bridge reader, with a whole
// read of frames) posts them with one lock (PostBatch), and the run takes
// every message posted so far with one lock too. protoactor's default
// unbounded mailbox takes a lock and two atomic operations on each side
// per message, and the reader and the run contend for that lock.
//
// The actor sees what it sees with protoactor's mailbox: user messages one
// at a time, in the order they were posted; system messages before the
// next user message (checked before each one); none while it is suspended
// (SuspendMailbox, ResumeMailbox); a panic escalated with the message that
// caused it. Middlewares are called as by the default mailbox. A
// MessageBatch posted whole is unpacked, and also delivered itself, as the
// default mailbox does.
type Mailbox struct {
	mu        sync.Mutex
	user      []any // posted, not yet taken by the run
	sys       []any // system messages posted, not yet handled
	scheduled bool  // a run is scheduled or running; with mu
	taken     int   // len(cur) when the run last took the user queue, for UserMessageCount; with mu
	sysN      atomic.Int32

	// Owned by the run.
	cur       []any // the user messages the run took; handled ones are nil
	pos       int   // the next of cur to handle
	suspended bool

	invoker     actor.MessageInvoker
	dispatcher  actor.Dispatcher
	middlewares []actor.MailboxMiddleware
	runFn       func() // run, as the func value given to the dispatcher
}

var _ actor.Mailbox = (*Mailbox)(nil)

// NewMailbox returns an empty mailbox with these middlewares.
func NewMailbox(middlewares ...actor.MailboxMiddleware) *Mailbox {
	m := &Mailbox{middlewares: middlewares}
	m.runFn = m.run
	return m
}

// keepCap is the largest queue array a mailbox keeps for reuse once it is
// empty; a larger one (a burst the actor fell behind on) is left to the
// garbage collector.
const keepCap = 64 << 10

// PostUserMessage posts one user message.
func (m *Mailbox) PostUserMessage(message any) {
	m.unpack(message)
	for _, mw := range m.middlewares {
		mw.MessagePosted(message)
	}
	m.mu.Lock()
	m.user = append(m.user, message)
	start := !m.scheduled
	m.scheduled = true
	m.mu.Unlock()
	if start {
		m.dispatcher.Schedule(m.runFn)
	}
}

// unpack posts the messages of a MessageBatch, bare or in an envelope,
// before the batch itself, as protoactor's default mailbox does.
func (m *Mailbox) unpack(message any) {
	if b, ok := message.(actor.MessageBatch); ok {
		for _, msg := range b.GetMessages() {
			m.PostUserMessage(msg)
		}
	}
	if env, ok := message.(*actor.MessageEnvelope); ok {
		if b, ok := env.Message.(actor.MessageBatch); ok {
			for _, msg := range b.GetMessages() {
				m.PostUserMessage(msg)
			}
		}
	}
}

// PostBatch posts msgs, in order, as PostUserMessage would one by one,
// with one lock, and schedules a run if the mailbox was idle. It returns
// an empty slice for the caller's next batch: the mailbox keeps msgs, or
// copies them and hands their array back, cleared.
func (m *Mailbox) PostBatch(msgs []any) (next []any) {
	for _, msg := range msgs {
		if m.isBatch(msg) {
			return m.postSlow(msgs)
		}
	}
	if len(m.middlewares) > 0 {
		for _, msg := range msgs {
			for _, mw := range m.middlewares {
				mw.MessagePosted(msg)
			}
		}
	}
	m.mu.Lock()
	if len(m.user) == 0 {
		m.user, next = msgs, m.user[:0]
	} else {
		m.user = append(m.user, msgs...)
		clear(msgs)
		next = msgs[:0]
	}
	start := !m.scheduled
	m.scheduled = true
	m.mu.Unlock()
	if start {
		m.dispatcher.Schedule(m.runFn)
	}
	return next
}

func (m *Mailbox) isBatch(msg any) bool {
	if _, ok := msg.(actor.MessageBatch); ok {
		return true
	}
	env, ok := msg.(*actor.MessageEnvelope)
	if !ok {
		return false
	}
	_, ok = env.Message.(actor.MessageBatch)
	return ok
}

// postSlow is PostBatch for a batch that holds a MessageBatch: message by
// message.
func (m *Mailbox) postSlow(msgs []any) []any {
	for _, msg := range msgs {
		m.PostUserMessage(msg)
	}
	clear(msgs)
	return msgs[:0]
}

// PostSystemMessage posts a system message: it is handled before the next
// user message.
func (m *Mailbox) PostSystemMessage(message any) {
	for _, mw := range m.middlewares {
		mw.MessagePosted(message)
	}
	m.mu.Lock()
	m.sys = append(m.sys, message)
	m.sysN.Add(1)
	start := !m.scheduled
	m.scheduled = true
	m.mu.Unlock()
	if start {
		m.dispatcher.Schedule(m.runFn)
	}
}

// RegisterHandlers sets the actor that handles the messages and the
// dispatcher that schedules runs.
func (m *Mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker, m.dispatcher = invoker, dispatcher
}

// Start tells the middlewares that the mailbox started.
func (m *Mailbox) Start() {
	for _, mw := range m.middlewares {
		mw.MailboxStarted()
	}
}

// UserMessageCount returns about how many user messages wait: those not
// yet taken by a run, and those of the run's last take (some of which it
// may have handled). Only metrics read it.
func (m *Mailbox) UserMessageCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.user) + m.taken
}

// run handles messages until the mailbox is empty (or, suspended, has only
// user messages), then marks it idle. It is what the mailbox gives its
// dispatcher to schedule; only one run is going at a time.
func (m *Mailbox) run() {
	for {
		m.drain()
		m.mu.Lock()
		if m.sysN.Load() == 0 && (m.suspended || (m.pos == len(m.cur) && len(m.user) == 0)) {
			m.scheduled = false
			empty := !m.suspended
			m.taken = len(m.cur) - m.pos
			m.mu.Unlock()
			if empty {
				for _, mw := range m.middlewares {
					mw.MailboxEmpty()
				}
			}
			return
		}
		m.mu.Unlock()
	}
}

// drain handles messages until there are none it may handle, or a message
// panicked (escalated to the actor's supervisor, as by protoactor's
// mailbox: the failed message is consumed, the rest wait).
func (m *Mailbox) drain() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	i, t := 0, m.dispatcher.Throughput()
	for {
		if i > t {
			i = 0
			runtime.Gosched()
		}
		i++
		if m.sysN.Load() > 0 {
			m.mu.Lock()
			msg = m.sys[0]
			m.sys[0] = nil
			m.sys = m.sys[1:]
			if len(m.sys) == 0 {
				m.sys = nil
			}
			m.sysN.Add(-1)
			m.mu.Unlock()
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended = true
			case *actor.ResumeMailbox:
				m.suspended = false
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			for _, mw := range m.middlewares {
				mw.MessageReceived(msg)
			}
			continue
		}
		if m.suspended {
			return
		}
		if m.pos == len(m.cur) && !m.take() {
			return
		}
		msg = m.cur[m.pos]
		m.cur[m.pos] = nil
		m.pos++
		m.invoker.InvokeUserMessage(msg)
		for _, mw := range m.middlewares {
			mw.MessageReceived(msg)
		}
	}
}

// take swaps the posted user messages in as the run's own; false when
// there were none.
func (m *Mailbox) take() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.user) == 0 {
		return false
	}
	old := m.cur[:0] // every element handled, so nil
	if cap(old) > keepCap {
		old = nil
	}
	m.cur, m.user, m.pos = m.user, old, 0
	m.taken = len(m.cur)
	return true
}
