package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is a frame's type, the byte after its length.
type Kind uint8

// Frame kinds. Child → host: Hello, Idle, Ready, Activity, Goodbye; host →
// child: Welcome, Assign, Terminate, Reload; either direction: Tell,
// Request, Response, Heartbeat. Which are legal when is the table in
// protocol.go.
const (
	KindHello     Kind = 1  // child → host: magic, version, pid, cookie
	KindWelcome   Kind = 2  // host → child: version, heartbeat interval, max frame
	KindIdle      Kind = 3  // child → host: actor system up, waiting for Assign
	KindAssign    Kind = 4  // host → child: the worker to run (fd via SCM_RIGHTS when shared memory)
	KindReady     Kind = 5  // child → host: worker actor started
	KindTell      Kind = 6  // either way: one-way message
	KindRequest   Kind = 7  // either way: message expecting a Response with the same id
	KindResponse  Kind = 8  // either way: answer to a Request
	KindHeartbeat Kind = 9  // either way: liveness, no body
	KindGoodbye   Kind = 10 // child → host: clean exit with this code follows
	KindTerminate Kind = 11 // host → child: stop by this deadline
	KindActivity  Kind = 12 // child → host: what the worker is doing now (text), coalesced
	KindReload    Kind = 13 // host → child: reload the configuration (SIGHUP)
	KindReattach  Kind = 14 // host → child: a new image of the host carries the bridge on; requests in flight are lost
	kindMax       Kind = 14
)

var kindNames = [...]string{"", "hello", "welcome", "idle", "assign", "ready", "tell", "request", "response", "heartbeat", "goodbye", "terminate", "activity", "reload", "reattach"}

func (k Kind) String() string {
	if k >= 1 && k <= kindMax {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Protocol constants.
const (
	// Magic opens every Hello; a peer that sends anything else is not a
	// bgworker child.
	Magic = "BGW\x01"
	// Version is the protocol version. A child of another version is
	// refused at the handshake (CheckVersion).
	Version = 2
	// HeaderLen is the length prefix (4 bytes) plus the kind (1 byte).
	HeaderLen = 5
	// DefaultMaxFrame caps a frame's length; a larger length prefix is a
	// protocol violation detected before anything is allocated.
	DefaultMaxFrame = 1 << 20
	// CookieLen is the length of the handshake cookie.
	CookieLen = 16
)

// Errors of the decoder. Every protocol violation wraps ErrProtocol.
var (
	ErrProtocol = errors.New("bridge: protocol violation")
)

// ProtocolError describes a violation: which frame and what was wrong.
type ProtocolError struct {
	Kind   Kind
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("bridge: protocol violation in %v frame: %s", e.Kind, e.Reason)
}

// Unwrap returns ErrProtocol.
func (e *ProtocolError) Unwrap() error { return ErrProtocol }

func violation(k Kind, format string, args ...any) error {
	return &ProtocolError{Kind: k, Reason: fmt.Sprintf(format, args...)}
}

// begin appends a frame header with a placeholder length and returns the
// offset of the frame's start; end patches the length in.
func begin(b []byte, k Kind) ([]byte, int) {
	start := len(b)
	return append(b, 0, 0, 0, 0, byte(k)), start
}

func end(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// reader is a bounds-checked cursor over a frame body.
type reader struct {
	k   Kind
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = violation(r.k, "truncated %s", what)
	}
}

func (r *reader) u8(what string) uint8 {
	if len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16(what string) uint16 {
	if len(r.b) < 2 {
		r.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32(what string) uint32 {
	if len(r.b) < 4 {
		r.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64(what string) uint64 {
	if len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int, what string) []byte {
	if n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str(what string) string {
	n := int(r.u16(what))
	return string(r.bytes(n, what))
}

// strBytes returns a length-prefixed string without copying.
func (r *reader) strBytes(what string) []byte {
	n := int(r.u16(what))
	return r.bytes(n, what)
}

func (r *reader) rest() []byte {
	v := r.b
	r.b = nil
	return v
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = violation(r.k, "%d trailing bytes", len(r.b))
	}
	return r.err
}

// Hello is the child's first frame.
type Hello struct {
	Version uint16
	PID     uint32
	Cookie  [CookieLen]byte
}

// AppendHello appends a Hello frame.
func AppendHello(b []byte, h Hello) []byte {
	b, s := begin(b, KindHello)
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint16(b, h.Version)
	b = binary.LittleEndian.AppendUint32(b, h.PID)
	b = append(b, h.Cookie[:]...)
	return end(b, s)
}

// ParseHello decodes a Hello body.
func ParseHello(body []byte) (Hello, error) {
	r := reader{k: KindHello, b: body}
	var h Hello
	if m := r.bytes(len(Magic), "magic"); r.err == nil && string(m) != Magic {
		return h, violation(KindHello, "bad magic %q", m)
	}
	h.Version = r.u16("version")
	h.PID = r.u32("pid")
	copy(h.Cookie[:], r.bytes(CookieLen, "cookie"))
	return h, r.done()
}

// Welcome is the host's answer to Hello.
type Welcome struct {
	Version     uint16
	HeartbeatMS uint32 // the child sends a heartbeat at this interval; 0 = none
	MaxFrame    uint32
}

// AppendWelcome appends a Welcome frame.
func AppendWelcome(b []byte, w Welcome) []byte {
	b, s := begin(b, KindWelcome)
	b = binary.LittleEndian.AppendUint16(b, w.Version)
	b = binary.LittleEndian.AppendUint32(b, w.HeartbeatMS)
	b = binary.LittleEndian.AppendUint32(b, w.MaxFrame)
	return end(b, s)
}

// ParseWelcome decodes a Welcome body.
func ParseWelcome(body []byte) (Welcome, error) {
	r := reader{k: KindWelcome, b: body}
	w := Welcome{Version: r.u16("version"), HeartbeatMS: r.u32("heartbeat"), MaxFrame: r.u32("max frame")}
	return w, r.done()
}

// Assign flags.
const (
	FlagConnect      = 1 << 0
	FlagSharedMemory = 1 << 1
	FlagNotifyReady  = 1 << 2 // Ready waits for the worker's own call
)

// Assign tells a child which worker to become.
type Assign struct {
	Incarnation uint64
	Flags       uint8
	Segment     uint64 // segment generation, with FlagSharedMemory
	Name        string // the worker's name
	Code        string // the registered name of the code to run
	Arg         []byte
}

// AppendAssign appends an Assign frame.
func AppendAssign(b []byte, a Assign) []byte {
	b, s := begin(b, KindAssign)
	b = binary.LittleEndian.AppendUint64(b, a.Incarnation)
	b = append(b, a.Flags)
	b = binary.LittleEndian.AppendUint64(b, a.Segment)
	b = appendStr(b, a.Name)
	b = appendStr(b, a.Code)
	b = append(b, a.Arg...)
	return end(b, s)
}

// ParseAssign decodes an Assign body.
func ParseAssign(body []byte) (Assign, error) {
	r := reader{k: KindAssign, b: body}
	a := Assign{Incarnation: r.u64("incarnation"), Flags: r.u8("flags"), Segment: r.u64("segment")}
	a.Name = r.str("name")
	a.Code = r.str("code")
	a.Arg = append([]byte(nil), r.rest()...)
	return a, r.done()
}

// Message is a Tell, Request or Response frame. Its slices point into the
// read buffer and are valid only until the handler returns.
type Message struct {
	Kind    Kind
	ID      uint64 // Request and Response
	Status  uint8  // Response: StatusOK or an error status
	Target  []byte // Tell and Request: the name of the destination; empty = the peer's worker
	Type    []byte // codec type name; for an error Response, empty
	Payload []byte
}

// Response statuses.
const (
	StatusOK          = 0
	StatusError       = 1 // Payload is an error text from the responder
	StatusUnavailable = 2 // no such target, or it is gone: a dead letter
)

// AppendTellHeader appends the start of a Tell frame up to its payload and
// returns the frame start for FinishFrame.
func AppendTellHeader(b []byte, target, typ string) ([]byte, int) {
	b, s := begin(b, KindTell)
	b = appendStr(b, target)
	b = appendStr(b, typ)
	return b, s
}

// AppendRequestHeader appends the start of a Request frame up to its payload.
func AppendRequestHeader(b []byte, id uint64, target, typ string) ([]byte, int) {
	b, s := begin(b, KindRequest)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = appendStr(b, target)
	b = appendStr(b, typ)
	return b, s
}

// AppendResponseHeader appends the start of a Response frame up to its payload.
func AppendResponseHeader(b []byte, id uint64, status uint8, typ string) ([]byte, int) {
	b, s := begin(b, KindResponse)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = append(b, status)
	b = appendStr(b, typ)
	return b, s
}

// FinishFrame patches the length of the frame that starts at start.
func FinishFrame(b []byte, start int) []byte { return end(b, start) }

// ParseMessage decodes a Tell, Request or Response body without copying.
func ParseMessage(k Kind, body []byte) (Message, error) {
	var m Message
	if m.parseFast(k, body) {
		return m, nil
	}
	return parseMessage(k, body)
}

// parseFast is ParseMessage for a well-formed body, into m (which must be
// zero), without the bookkeeping of the error path: it runs once per
// message on the hot path. It returns false for anything parseMessage must
// look at.
func (m *Message) parseFast(k Kind, b []byte) bool {
	m.Kind = k
	switch k {
	case KindTell:
	case KindRequest:
		if len(b) < 8 {
			return false
		}
		m.ID = binary.LittleEndian.Uint64(b)
		b = b[8:]
	case KindResponse:
		if len(b) < 9 || b[8] > StatusUnavailable {
			return false
		}
		m.ID = binary.LittleEndian.Uint64(b)
		m.Status = b[8]
		b = b[9:]
	default:
		return false
	}
	if k != KindResponse {
		if len(b) < 2 {
			return false
		}
		n := 2 + int(binary.LittleEndian.Uint16(b))
		if len(b) < n {
			return false
		}
		m.Target = b[2:n:n]
		b = b[n:]
	}
	if len(b) < 2 {
		return false
	}
	n := 2 + int(binary.LittleEndian.Uint16(b))
	if len(b) < n {
		return false
	}
	m.Type = b[2:n:n]
	m.Payload = b[n:]
	return true
}

// parseMessage is ParseMessage with full error reporting.
func parseMessage(k Kind, body []byte) (Message, error) {
	r := reader{k: k, b: body}
	m := Message{Kind: k}
	switch k {
	case KindTell:
		m.Target = r.strBytes("target")
	case KindRequest:
		m.ID = r.u64("id")
		m.Target = r.strBytes("target")
	case KindResponse:
		m.ID = r.u64("id")
		m.Status = r.u8("status")
		if r.err == nil && m.Status > StatusUnavailable {
			return m, violation(k, "unknown status %d", m.Status)
		}
	default:
		return m, violation(k, "not a message frame")
	}
	m.Type = r.strBytes("type")
	m.Payload = r.rest()
	return m, r.done()
}

// AppendEmpty appends a frame without a body (Idle, Ready, Heartbeat).
func AppendEmpty(b []byte, k Kind) []byte {
	b, s := begin(b, k)
	return end(b, s)
}

// AppendGoodbye appends a Goodbye frame with the exit code that follows.
func AppendGoodbye(b []byte, code uint8) []byte {
	b, s := begin(b, KindGoodbye)
	b = append(b, code)
	return end(b, s)
}

// ParseGoodbye decodes a Goodbye body.
func ParseGoodbye(body []byte) (uint8, error) {
	r := reader{k: KindGoodbye, b: body}
	c := r.u8("code")
	return c, r.done()
}

// AppendTerminate appends a Terminate frame with the kill deadline in
// Unix nanoseconds.
func AppendTerminate(b []byte, deadlineUnixNano int64) []byte {
	b, s := begin(b, KindTerminate)
	b = binary.LittleEndian.AppendUint64(b, uint64(deadlineUnixNano))
	return end(b, s)
}

// ParseTerminate decodes a Terminate body.
func ParseTerminate(body []byte) (int64, error) {
	r := reader{k: KindTerminate, b: body}
	d := int64(r.u64("deadline"))
	return d, r.done()
}

// MaxActivity caps an Activity frame's text, in bytes; longer text is cut.
const MaxActivity = 256

// AppendActivity appends an Activity frame: what the worker reports doing
// (cut to MaxActivity bytes) and when it said so, in Unix nanoseconds.
func AppendActivity(b []byte, atUnixNano int64, text string) []byte {
	b, s := begin(b, KindActivity)
	b = binary.LittleEndian.AppendUint64(b, uint64(atUnixNano))
	if len(text) > MaxActivity {
		text = text[:MaxActivity]
	}
	b = append(b, text...)
	return end(b, s)
}

// ParseActivity decodes an Activity body.
func ParseActivity(body []byte) (atUnixNano int64, text string, err error) {
	r := reader{k: KindActivity, b: body}
	at := int64(r.u64("time"))
	t := r.rest()
	if r.err == nil && len(t) > MaxActivity {
		return 0, "", violation(KindActivity, "text of %d bytes above %d", len(t), MaxActivity)
	}
	return at, string(t), r.done()
}

// ParseEmpty checks that a body-less frame has no body.
func ParseEmpty(k Kind, body []byte) error {
	if len(body) != 0 {
		return violation(k, "%d unexpected bytes", len(body))
	}
	return nil
}

// SplitFrame looks at the start of buf. It returns the frame's kind and body
// and the total length consumed when a whole frame is there, n == 0 when
// more bytes are needed, and an error for a length above maxFrame or an
// unknown kind, checked before any allocation.
func SplitFrame(buf []byte, maxFrame int) (k Kind, body []byte, n int, err error) {
	if len(buf) < 4 {
		return 0, nil, 0, nil
	}
	l := binary.LittleEndian.Uint32(buf)
	if l < 1 {
		return 0, nil, 0, violation(0, "zero length")
	}
	if uint64(l) > uint64(maxFrame) {
		return 0, nil, 0, violation(0, "length %d above the cap %d", l, maxFrame)
	}
	if len(buf) >= 5 {
		k = Kind(buf[4])
		if k < 1 || k > kindMax {
			return k, nil, 0, violation(k, "unknown kind")
		}
	}
	if uint64(len(buf)) < 4+uint64(l) {
		return k, nil, 0, nil
	}
	return k, buf[5 : 4+l], int(4 + l), nil
}
