package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/internal/codec"
)

// ReplyID is the PID Id of a reply address: a PID{Address: the peer's reply
// address, Id: ReplyID, RequestId: n} routes a response to request n.
const ReplyID = "$reply"

// RemoteError is the result of a request that the far side answered with an
// error: it could not decode the message or encode the response, or the
// target does not exist. A future returns it as its result.
type RemoteError struct {
	Target string
	Reason string
	Err    error // a sentinel the failure is, when there is one (ErrReattached)
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("bridge: request to %q failed on the far side: %s", e.Target, e.Reason)
}

// Unwrap returns Err.
func (e *RemoteError) Unwrap() error { return e.Err }

// ErrReattached is what requests in flight to the host fail with when a
// new image of the host carried the bridge on (an in-place upgrade): the
// actors they went to are gone, so no answer comes.
var ErrReattached = errors.New("bridge: the host was replaced by a new image of itself; requests in flight to it are lost")

// Reattached fails every pending request with ErrReattached.
func (e *Endpoint) Reattached() {
	e.mu.Lock()
	pending := e.pending
	e.pending = map[uint32]pendingRequest{}
	e.mu.Unlock()
	for _, r := range pending {
		e.system.Root.Send(r.sender, &RemoteError{Target: r.target, Reason: ErrReattached.Error(), Err: ErrReattached})
	}
}

// Endpoint connects an actor system to the far side of a Conn. It is an
// actor.Process: a message sent to a PID that resolves to it crosses the
// bridge; a message that arrives is delivered to a local actor found by
// Resolve. Requests across the bridge keep the sender locally, keyed by a
// request id, so responses find their futures; when the connection ends
// every pending sender gets a dead letter, never a hang.
type Endpoint struct {
	conn   *Conn
	system *actor.ActorSystem
	// resolve finds the local actor for an inbound target name ("" = the
	// default one). nil PID and an error reason when there is none.
	resolve func(target string) (*actor.PID, error)
	// replyTo is the address by which local actors answer inbound requests.
	replyTo string
	log     *slog.Logger

	nextID  atomic.Uint32
	mu      sync.Mutex
	pending map[uint32]pendingRequest
	closed  bool

	// Owned by the goroutine that calls Handle: the last inbound target
	// name, the decoder of inbound messages, and where they go.
	lastTarget string
	dec        codec.Decoder
	deliver    func(dst *actor.PID, msg any)

	// Counters for metrics.
	Undeliverable atomic.Uint64 // inbound messages with no target or that failed to decode
	EncodeErrors  atomic.Uint64 // outbound messages that could not be encoded
}

// pendingRequest is a request sent across and not yet answered.
type pendingRequest struct {
	sender *actor.PID // where the response goes
	target string     // whom it was sent to, for errors
}

// NewEndpoint makes an endpoint. replyTo is an address that the system
// resolves back to this endpoint (see ReplyPID).
func NewEndpoint(conn *Conn, system *actor.ActorSystem, replyTo string, resolve func(string) (*actor.PID, error), log *slog.Logger) *Endpoint {
	return &Endpoint{conn: conn, system: system, replyTo: replyTo, resolve: resolve, log: log, pending: map[uint32]pendingRequest{}}
}

// SetDeliver makes Handle pass every inbound tell and request to fn, in
// the order they were read, instead of sending each with the actor
// system's root context: fn gets the local actor and the message as the
// root context would send it (a request as an *actor.MessageEnvelope whose
// Sender is the reply PID). fn runs on the goroutine that calls Handle; a
// reader that batches them must deliver them before its next read blocks.
// Call it before the read loop starts; nil restores the root context.
func (e *Endpoint) SetDeliver(fn func(dst *actor.PID, msg any)) { e.deliver = fn }

// Conn returns the endpoint's connection.
func (e *Endpoint) Conn() *Conn { return e.conn }

// SendUserMessage sends a message across: a response when pid is a reply
// PID, a request when the envelope has a sender, a tell otherwise. pid.Id
// names the target on the far side ("" = the far side's worker).
func (e *Endpoint) SendUserMessage(pid *actor.PID, message any) {
	_, msg, sender := actor.UnwrapEnvelope(message)
	if pid.Id == ReplyID {
		e.respond(pid.RequestId, pid, msg)
		return
	}
	target := pid.Id
	if sender == nil {
		if err := e.Tell(target, msg); err != nil {
			e.log.Warn("bridge: message dropped", "target", target, "err", err)
		}
		return
	}
	if err := e.request(target, msg, sender); err != nil {
		e.system.Root.Send(sender, &RemoteError{Target: target, Reason: err.Error()})
	}
}

// SendSystemMessage drops system messages: watch and stop do not cross the
// bridge (a worker's life is the postmaster's business).
func (e *Endpoint) SendSystemMessage(*actor.PID, any) {}

// Stop does nothing: the far side is stopped by the postmaster.
func (e *Endpoint) Stop(*actor.PID) {}

// Tell sends msg one way to target on the far side.
func (e *Endpoint) Tell(target string, msg any) error {
	return e.send(false, KindTell, 0, target, msg)
}

// codecError marks an error of the codec, as opposed to the connection.
type codecError struct{ err error }

func (c *codecError) Error() string { return c.err.Error() }
func (c *codecError) Unwrap() error { return c.err }

// send encodes one Tell, Request or Response (status OK) frame straight
// into the connection's write queue, or, when urgent and the connection is
// quiet, into the buffer that the caller then writes to the socket itself
// (Conn.Append). No temporary buffer: a 64-byte tell costs no allocation.
// An encoding error drops the frame and is returned as a *codecError.
func (e *Endpoint) send(urgent bool, k Kind, id uint64, target string, msg any) error {
	err := e.conn.Append(urgent, func(b []byte) ([]byte, error) {
		out, err := appendMessage(b, k, id, target, msg)
		if err != nil {
			return out, &codecError{err}
		}
		return out, nil
	})
	if _, ok := err.(*codecError); ok { // as returned by build: not wrapped
		e.EncodeErrors.Add(1)
	}
	return err
}

// appendMessage appends a whole message frame: the header, then the
// payload as the codec writes it. On error it returns b as it was (its
// array may have grown).
func appendMessage(b []byte, k Kind, id uint64, target string, msg any) ([]byte, error) {
	var s int
	// The built-in types name themselves: no need to patch the name in.
	switch m := msg.(type) {
	case []byte:
		b, s = appendMessageHeader(b, k, id, target, codec.TypeBytes)
		return FinishFrame(append(b, m...), s), nil
	case string:
		b, s = appendMessageHeader(b, k, id, target, codec.TypeString)
		return FinishFrame(append(b, m...), s), nil
	}
	b, s = appendMessageHeader(b, k, id, target, "")
	typPos := len(b) - 2
	typ, out, err := codec.Encode(b, msg)
	if err != nil {
		return out[:s], err
	}
	return FinishFrame(patchType(out, typPos, typ), s), nil
}

func appendMessageHeader(b []byte, k Kind, id uint64, target, typ string) ([]byte, int) {
	switch k {
	case KindTell:
		return AppendTellHeader(b, target, typ)
	case KindRequest:
		return AppendRequestHeader(b, id, target, typ)
	default:
		return AppendResponseHeader(b, id, StatusOK, typ)
	}
}

// patchType inserts the type name, written as an empty string at typPos,
// now that the codec has said what it is. Type names are short, so the
// move of the payload is cheap; doing it this way lets the codec append the
// payload without a temporary buffer.
func patchType(b []byte, typPos int, typ string) []byte {
	if len(typ) == 0 {
		return b
	}
	n := len(typ)
	b = append(b, make([]byte, n)...)
	copy(b[typPos+2+n:], b[typPos+2:len(b)-n])
	b[typPos] = byte(n)
	b[typPos+1] = byte(n >> 8)
	copy(b[typPos+2:], typ)
	return b
}

func (e *Endpoint) request(target string, msg any, sender *actor.PID) error {
	id := e.nextID.Add(1)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.pending[id] = pendingRequest{sender: sender, target: target}
	e.mu.Unlock()
	// The sender waits for a frame still to be read: if it runs on the
	// reading goroutine (ReadLoop's yield), reading must go on elsewhere.
	e.conn.KeepReading()
	err := e.send(true, KindRequest, uint64(id), target, msg)
	if err != nil {
		e.mu.Lock()
		delete(e.pending, id)
		e.mu.Unlock()
	}
	return err
}

func (e *Endpoint) respond(id uint32, _ *actor.PID, msg any) {
	if re, ok := msg.(*RemoteError); ok {
		e.sendStatus(id, StatusError, re.Reason)
		return
	}
	if _, ok := msg.(*actor.DeadLetterResponse); ok {
		e.sendStatus(id, StatusUnavailable, "dead letter")
		return
	}
	err := e.send(true, KindResponse, uint64(id), "", msg)
	var ce *codecError
	if errors.As(err, &ce) {
		e.sendStatus(id, StatusError, ce.err.Error())
		return
	}
	if err != nil {
		e.log.Debug("bridge: response dropped", "err", err)
	}
}

func (e *Endpoint) sendStatus(id uint32, status uint8, text string) {
	_ = e.conn.SendUrgent(func(b []byte) []byte {
		out, s := AppendResponseHeader(b, uint64(id), status, "")
		return FinishFrame(append(out, text...), s)
	})
}

// Handle delivers an inbound Tell, Request or Response frame. It returns a
// protocol error for a malformed frame; an unknown target, an unknown type
// name or a payload that does not decode is answered (requests) or counted
// (tells), not fatal. It is the handler of the connection's ReadLoop: it
// must not be called by two goroutines at once.
func (e *Endpoint) Handle(k Kind, body []byte) error {
	var m Message
	if !m.parseFast(k, body) {
		var err error
		if m, err = parseMessage(k, body); err != nil {
			return err
		}
	}
	switch k {
	case KindResponse:
		e.mu.Lock()
		req, ok := e.pending[uint32(m.ID)]
		delete(e.pending, uint32(m.ID))
		e.mu.Unlock()
		if !ok {
			return nil // answered after its future timed out
		}
		switch m.Status {
		case StatusOK:
			msg, err := e.dec.Decode(m.Type, m.Payload)
			if err != nil {
				e.Undeliverable.Add(1)
				e.system.Root.Send(req.sender, &RemoteError{Target: req.target, Reason: err.Error()})
				return nil
			}
			e.system.Root.Send(req.sender, msg)
		case StatusUnavailable:
			e.system.Root.Send(req.sender, &actor.DeadLetterResponse{})
		default:
			e.system.Root.Send(req.sender, &RemoteError{Target: req.target, Reason: string(m.Payload)})
		}
		return nil
	}
	target := e.targetName(m.Target)
	dst, rerr := e.resolve(target)
	if rerr != nil {
		e.Undeliverable.Add(1)
		if k == KindRequest {
			e.sendStatus(uint32(m.ID), StatusError, rerr.Error())
		} else {
			e.log.Warn("bridge: tell to unknown target dropped", "target", target, "err", rerr)
		}
		return nil
	}
	msg, err := e.dec.Decode(m.Type, m.Payload)
	if err != nil {
		e.Undeliverable.Add(1)
		if k == KindRequest {
			e.sendStatus(uint32(m.ID), StatusError, err.Error())
		} else {
			e.log.Warn("bridge: undecodable tell dropped", "target", target, "err", err)
		}
		return nil
	}
	if k == KindRequest {
		reply := &actor.PID{Address: e.replyTo, Id: ReplyID, RequestId: uint32(m.ID)}
		msg = &actor.MessageEnvelope{Message: msg, Sender: reply} // as RequestWithCustomSender builds it
	}
	if e.deliver != nil {
		e.deliver(dst, msg)
	} else {
		e.system.Root.Send(dst, msg)
	}
	return nil
}

// targetName returns target as a string, without an allocation when it is
// the same as the last one (Handle is called by one reader goroutine).
func (e *Endpoint) targetName(target []byte) string {
	if len(target) == 0 {
		return ""
	}
	if string(target) != e.lastTarget {
		e.lastTarget = string(target)
	}
	return e.lastTarget
}

// Close fails every pending request with a dead letter; later requests fail
// at once. It does not close the connection.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.closed = true
	pending := e.pending
	e.pending = map[uint32]pendingRequest{}
	e.mu.Unlock()
	for _, r := range pending {
		e.system.Root.Send(r.sender, &actor.DeadLetterResponse{})
	}
}

// Pending returns the number of requests waiting for a response.
func (e *Endpoint) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pending)
}

// ErrNoTarget is wrapped by resolve functions for an unknown target.
var ErrNoTarget = errors.New("no actor exposed under that name")
