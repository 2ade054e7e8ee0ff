// Package bridge is the wire protocol between the postmaster and a child
// process: length-prefixed frames on a unix socket, and the connection and
// endpoint that carry protoactor messages across it.
//
// # Frames
//
// A frame is a 4-byte little-endian length, a kind byte and a body. The
// length is checked against the cap before anything is allocated
// ([SplitFrame]); an unknown kind, a truncated body or trailing bytes are
// a [ProtocolError]. No checksum: a unix socket does not corrupt bytes, and
// a child that writes garbage is killed for it.
//
// # Handshake
//
//	child → host   Hello{magic, version, pid, cookie}
//	host  → child  Welcome{version, heartbeat interval, max frame}
//	child → host   Idle        (actor system up)
//	host  → child  Assign{worker, incarnation, flags, arg} (+ segment fd by SCM_RIGHTS)
//	child → host   Ready       (worker actor started)
//	...            Tell / Request / Response, Heartbeat, Terminate
//	child → host   Goodbye{code} before a clean exit
//
// Becoming a child (Hello to Idle) is separate from becoming a worker
// (Assign), so a child can be started ahead of time.
//
// A quiet child beats once per heartbeat interval: a Heartbeat frame, or,
// when its host gave it a beat pipe (EnvBeat, Conn.SetBeat), a byte on that
// pipe, which the host reads for all its children in one pass instead of
// waking a reader per beat.
//
// # Connection
//
// [Conn] queues frames and one writer goroutine flushes the queue in as
// few syscalls as it can (batching is most of a bridge's throughput); the
// queue is bounded and a sender waits for room (backpressure). A request
// or response is written by its sender when nothing is queued (no
// hand-off to the writer). [Endpoint] is an actor.Process: sending to a
// PID that resolves to it crosses the bridge; requests keep their sender
// by id, and all pending senders get a dead letter when the connection
// ends.
//
// # Messages
//
// Tell, Request and Response frames carry the target name (not in a
// response), the codec's type name and the payload:
//
//	tell      u16 len, target, u16 len, type, payload
//	request   u64 id, u16 len, target, u16 len, type, payload
//	response  u64 id, u8 status, u16 len, type, payload (error text if status != OK)
//
// The type name is carried as text, not as an interned id: looking it up
// costs no allocation ([codec.DecodeBytes] indexes its tables with the
// frame's bytes), a []byte or string message is framed without a detour
// through the codec, and a frame is self-describing in a capture. An
// unknown type name is not a protocol violation: a request gets an error
// response, a tell is counted (Endpoint.Undeliverable) and dropped.
//
// The hot paths allocate little: an outbound message is encoded straight
// into the write queue (no closure, no temporary buffer; a []byte tell
// allocates nothing), and an inbound []byte message is one copy carved out
// of a shared block together with its slice header ([codec.Decoder]).
//
// [codec.DecodeBytes]: github.com/bgworker/bgworker/internal/codec.DecodeBytes
// [codec.Decoder]: github.com/bgworker/bgworker/internal/codec.Decoder
package bridge
