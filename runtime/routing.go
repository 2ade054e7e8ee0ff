package runtime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
)

// Routing: host actors reach a worker through a PID that names it, and
// workers with Connect reach the host actors exposed by name. A PID of a
// worker resolves, without any registry entry, to a workerProcess, which
// forwards to the endpoint of the child the worker runs in now (a route,
// published by the postmaster while the worker runs).

// PID returns the PID of the named worker's bridge: a message sent to it
// from any host actor is delivered to the worker actor in its child
// process, and a request gets its response back across the bridge. It
// follows the name: after a restart, or after a new dynamic worker took the
// name, it reaches the current one (Handle.PID does not). While the worker
// is not running, requests get a dead letter (the future fails with
// actor.ErrDeadLetter) and tells are dropped.
func (rt *Runtime) PID(name string) *actor.PID { return actor.NewPID(workerAddress, name) }

// workerAddress is the actor address of worker bridges: a PID with it
// resolves, without any registry entry, to a workerProcess for the name
// (and generation) in its Id.
const workerAddress = "bgworker-worker"

func (rt *Runtime) resolveWorker(pid *actor.PID) (actor.Process, bool) {
	if pid.Address != workerAddress {
		return nil, false
	}
	name, gen := pid.Id, uint64(0)
	if i := strings.LastIndexByte(name, '#'); i >= 0 {
		g, err := strconv.ParseUint(name[i+1:], 10, 64)
		if err != nil {
			return nil, false
		}
		name, gen = name[:i], g
	}
	return &workerProcess{rt: rt, name: name, gen: gen}, true
}

// route is a running worker's child endpoint, published by the postmaster.
type route struct {
	ep  actor.Process // the child's endpoint: crosses to the worker actor
	gen uint64        // the slot's handle generation
}

// workerProcess routes messages for a worker name to its current process;
// with a generation, only to that generation's worker.
type workerProcess struct {
	rt   *Runtime
	name string
	gen  uint64 // zero: whichever worker has the name
}

var workerTarget = &actor.PID{}

func (w *workerProcess) SendUserMessage(_ *actor.PID, message any) {
	if v, ok := w.rt.routes.Load(w.name); ok {
		if r := v.(*route); w.gen == 0 || r.gen == w.gen {
			r.ep.SendUserMessage(workerTarget, message)
			return
		}
	}
	w.rt.metrics.undeliverable.Inc()
	if _, _, sender := actor.UnwrapEnvelope(message); sender != nil {
		// A request through a stale handle is told so; one to a worker
		// that is not running gets a dead letter, as from any actor
		// that is gone.
		if w.gen != 0 {
			if _, err := w.rt.pm.published(w.name, w.gen); errors.Is(err, ErrStaleHandle) {
				w.rt.system.Root.Send(sender, err)
				return
			}
		}
		w.rt.system.Root.Send(sender, &actor.DeadLetterResponse{})
	}
}
func (w *workerProcess) SendSystemMessage(*actor.PID, any) {}
func (w *workerProcess) Stop(*actor.PID)                   {}

// Expose makes a host actor reachable by name from workers whose spec has
// Connect (Worker.Send and Worker.Request). Exposing a name again replaces
// the actor.
func (rt *Runtime) Expose(name string, pid *actor.PID) error {
	if err := actors.ValidName(name); err != nil {
		return fmt.Errorf("runtime: expose %q: %w", name, err)
	}
	if pid == nil {
		return fmt.Errorf("runtime: expose %q: nil PID", name)
	}
	rt.exposed.Store(name, pid)
	return nil
}

// Unexpose removes a name exposed with Expose.
func (rt *Runtime) Unexpose(name string) { rt.exposed.Delete(name) }

func (rt *Runtime) resolveExposed(target string) (*actor.PID, error) {
	if v, ok := rt.exposed.Load(target); ok {
		return v.(*actor.PID), nil
	}
	return nil, fmt.Errorf("%w: %q", bridge.ErrNoTarget, target)
}
