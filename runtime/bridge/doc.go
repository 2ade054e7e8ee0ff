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
// # Connection
//
// [Conn] queues frames and one writer goroutine flushes the queue in as
// few syscalls as it can (batching is most of a bridge's throughput); the
// queue is bounded and a sender waits for room (backpressure). [Endpoint]
// is an actor.Process: sending to a PID that resolves to it crosses the
// bridge; requests keep their sender by id, and all pending senders get a
// dead letter when the connection ends.
package bridge
