package runtime

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bgworker/bgworker/phases"
)

// GET /events: the runtime's event stream as server-sent events, for the
// status page and for tools. Each event is one "data:" line holding a JSON
// object with at least "type" and "at"; see eventJSON for the keys.
//
// The subscriber callback runs inside the postmaster, so it never waits:
// it puts the event in the client's bounded queue, and when that is full
// the client is dropped (its connection is closed once the handler has
// finished its current write, at most eventWriteTimeout later). A client
// that reconnects (EventSource does, after the "retry" the stream sets)
// has missed the events in between and should read /workers and /status
// again.
const (
	eventQueue        = 1024                   // events queued per client before it is dropped
	eventMaxClients   = 64                     // clients at once; more get 503
	eventWriteTimeout = 10 * time.Second       // one write to a client; then it is dropped
	eventPing         = 15 * time.Second       // a comment line, so proxies and clients see the stream is alive
	eventRetry        = 1000                   // ms a client waits before reconnecting
	eventCloseGrace   = 200 * time.Millisecond // at shutdown, to send what is queued
)

// eventHub serves /events and ends every stream when the server closes.
type eventHub struct {
	rt      *Runtime
	queue   int           // per-client bound
	done    chan struct{} // closed by close
	wg      sync.WaitGroup
	dropped atomic.Uint64 // clients dropped for falling behind

	mu      sync.Mutex
	closed  bool
	clients map[*eventClient]struct{}
}

func newEventHub(rt *Runtime, queue int) *eventHub {
	return &eventHub{rt: rt, queue: queue, done: make(chan struct{}), clients: map[*eventClient]struct{}{}}
}

// eventClient is one /events connection.
type eventClient struct {
	hub  *eventHub
	q    chan Event
	drop chan struct{} // closed when the queue overflowed
	once sync.Once
	rc   *http.ResponseController

	mu      sync.Mutex // orders finish against the handler arming a write
	closing bool
}

// offer is the subscriber: it never blocks.
func (c *eventClient) offer(e Event) {
	if we, ok := e.(WorkerEvent); ok && we.Exit != nil {
		x := *we.Exit // the handler reads it on another goroutine
		we.Exit = &x
		e = we
	}
	select {
	case c.q <- e:
	default:
		c.once.Do(func() {
			c.hub.dropped.Add(1)
			close(c.drop)
		})
	}
}

// arm sets the deadline of the next write; once the stream is being
// closed it leaves the closing deadline in place.
func (c *eventClient) arm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		_ = c.rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	}
}

// finish gives the stream eventCloseGrace to send what is queued: a write
// in progress or started later fails after that. The deadline is a
// property of the connection, safe to set from another goroutine.
func (c *eventClient) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	_ = c.rc.SetWriteDeadline(time.Now().Add(eventCloseGrace))
}

func (h *eventHub) add(c *eventClient) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.clients) >= eventMaxClients {
		return false
	}
	h.clients[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *eventHub) remove(c *eventClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	h.wg.Done()
}

// close ends every stream, after what is queued for it (the shutdown
// events), and waits for their handlers to return.
func (h *eventHub) close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
		for c := range h.clients {
			c.finish()
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *eventHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &eventClient{hub: h, q: make(chan Event, h.queue), drop: make(chan struct{}), rc: http.NewResponseController(w)}
	if !h.add(c) {
		http.Error(w, "runtime: /events: too many clients, or shutting down", http.StatusServiceUnavailable)
		return
	}
	defer h.remove(c)
	unsubscribe := h.rt.Subscribe(c.offer)
	defer unsubscribe()

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Connection", "close") // a dropped client sees EOF
	w.WriteHeader(http.StatusOK)
	buf := []byte("retry: " + strconv.Itoa(eventRetry) + "\n: bgworker events\n\n")
	ping := time.NewTicker(eventPing)
	defer ping.Stop()
	write := func() bool {
		c.arm()
		if _, err := w.Write(buf); err != nil {
			return false
		}
		buf = buf[:0]
		return c.rc.Flush() == nil
	}
	for {
		if len(buf) > 0 && !write() {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			for more := true; more; {
				select {
				case e := <-c.q:
					buf = appendEvent(buf, e)
				default:
					more = false
				}
			}
			if len(buf) > 0 {
				write()
			}
			return
		case <-c.drop:
			h.rt.log.Warn("runtime: http: /events client fell behind; dropped", "remote", r.RemoteAddr, "queue", h.queue)
			return
		case <-ping.C:
			buf = append(buf, ": ping\n\n"...)
		case e := <-c.q:
			// Send what is queued in one write.
			for more := true; more; {
				buf = appendEvent(buf, e)
				select {
				case e = <-c.q:
				default:
					more = false
				}
			}
		}
	}
}

// appendEvent appends one server-sent event: a data line of eventJSON.
func appendEvent(buf []byte, e Event) []byte {
	b, err := json.Marshal(eventJSON(e))
	if err != nil {
		return buf // every field marshals; unreachable
	}
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	return append(buf, "\n\n"...)
}

// The JSON objects of /events, one type per Event type. Every one has
// "type" and "at".
type (
	workerEventJSON struct {
		Type        string      `json:"type"` // "worker"
		At          time.Time   `json:"at"`
		Worker      string      `json:"worker"`
		WorkerType  string      `json:"worker_type"`
		Incarnation uint64      `json:"incarnation"`
		From        WorkerState `json:"from"`
		To          WorkerState `json:"to"`
		PID         int         `json:"pid"` // zero = no process
		Exit        *Exit       `json:"exit,omitempty"`
		Backoff     int64       `json:"backoff_ns,omitempty"`
		Cold        bool        `json:"cold,omitempty"`
	}
	phaseEventJSON struct {
		Type    string       `json:"type"` // "phase"
		At      time.Time    `json:"at"`
		Phase   phases.Phase `json:"phase"`
		Reset   bool         `json:"reset"`
		Adopted bool         `json:"adopted,omitempty"`
	}
	shutdownEventJSON struct {
		Type string    `json:"type"` // "shutdown"
		At   time.Time `json:"at"`
		Mode string    `json:"mode"`
		Done bool      `json:"done"`
	}
	segmentEventJSON struct {
		Type       string    `json:"type"` // "segment"
		At         time.Time `json:"at"`
		Generation uint64    `json:"generation"`
		Bytes      int       `json:"bytes"`
		Reset      bool      `json:"reset"`
		Adopted    bool      `json:"adopted,omitempty"`
	}
	groupResetEventJSON struct {
		Type       string    `json:"type"` // "group_reset"
		At         time.Time `json:"at"`
		Cause      string    `json:"cause"`
		Generation uint64    `json:"generation"`
		Failed     bool      `json:"failed"`
	}
	unknownEventJSON struct {
		Type string    `json:"type"` // "unknown"
		At   time.Time `json:"at"`
	}
)

// eventJSON returns the JSON shape of e for /events.
func eventJSON(e Event) any {
	switch e := e.(type) {
	case WorkerEvent:
		return workerEventJSON{Type: "worker", At: e.At, Worker: e.Name, WorkerType: e.Type, Incarnation: e.Incarnation,
			From: e.From, To: e.To, PID: e.PID, Exit: e.Exit, Backoff: int64(e.Backoff), Cold: e.Cold}
	case PhaseEvent:
		return phaseEventJSON{Type: "phase", At: e.At, Phase: e.Phase, Reset: e.Reset, Adopted: e.Adopted}
	case ShutdownEvent:
		return shutdownEventJSON{Type: "shutdown", At: e.At, Mode: e.Mode.String(), Done: e.Done}
	case SegmentEvent:
		return segmentEventJSON{Type: "segment", At: e.At, Generation: e.Generation, Bytes: e.Size, Reset: e.Reset, Adopted: e.Adopted}
	case GroupResetEvent:
		return groupResetEventJSON{Type: "group_reset", At: e.At, Cause: e.Cause, Generation: e.Generation, Failed: e.Failed}
	}
	return unknownEventJSON{Type: "unknown", At: time.Now()}
}
