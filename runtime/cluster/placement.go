package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/bgworker/bgworker/actors"
)

// argMagic starts the Arg of a worker started by a cluster: the magic,
// the token (8 bytes, big endian), the member's name (1 byte of length,
// then the name), then the spec's own Arg.
const argMagic = "bgwc1"

func encodeArg(token uint64, member string, arg []byte) []byte {
	b := make([]byte, 0, len(argMagic)+9+len(member)+len(arg))
	b = append(b, argMagic...)
	b = binary.BigEndian.AppendUint64(b, token)
	b = append(b, byte(len(member)))
	b = append(b, member...)
	return append(b, arg...)
}

func decodeArg(b []byte) (token uint64, member string, arg []byte, ok bool) {
	if len(b) < len(argMagic)+9 || string(b[:len(argMagic)]) != argMagic {
		return 0, "", b, false
	}
	b = b[len(argMagic):]
	token = binary.BigEndian.Uint64(b)
	n := int(b[8])
	if len(b) < 9+n {
		return 0, "", b, false
	}
	return token, string(b[9 : 9+n]), b[9+n:], true
}

// Token returns the fencing token under which a cluster-scoped worker
// runs, read inside the worker. Tokens of one worker grow with every new
// placement, on whichever member: a resource that a worker writes to
// should remember the highest token it has seen from that worker and
// refuse a lower one (see Fence), which turns away the messages of an
// owner that lost its lease. ok is false for a worker that no cluster
// started.
func Token(w actors.Worker) (token uint64, ok bool) {
	token, _, _, ok = decodeArg(w.Arg())
	return token, ok
}

// Member returns the name of the member that runs a cluster-scoped worker,
// read inside the worker; "" for a worker that no cluster started.
func Member(w actors.Worker) string {
	_, m, _, _ := decodeArg(w.Arg())
	return m
}

// Arg returns the Arg of a cluster-scoped worker's spec, read inside the
// worker (Worker.Arg also carries the placement).
func Arg(w actors.Worker) []byte {
	_, _, a, _ := decodeArg(w.Arg())
	return a
}

// ErrStaleToken is returned by Fence.Check for a token below the highest
// one seen.
var ErrStaleToken = errors.New("cluster: stale fencing token")

// Fence is the check a resource makes with the tokens that a worker's
// messages carry: it admits a token at least as high as every token it
// has admitted, and refuses a lower one. The zero value is ready; it is
// safe for concurrent use.
type Fence struct {
	mu  sync.Mutex
	max uint64
}

// Check admits token, or returns an error wrapping ErrStaleToken.
func (f *Fence) Check(token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if token < f.max {
		return fmt.Errorf("%w: %d, after %d", ErrStaleToken, token, f.max)
	}
	f.max = token
	return nil
}
