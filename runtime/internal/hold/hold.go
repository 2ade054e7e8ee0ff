// Package hold is a protoactor dispatcher that lets a goroutine about to
// wait for an actor run the actor's mailbox itself, saving the thread
// wake-up that a new goroutine costs.
package hold

import "sync"

// Dispatcher is a protoactor Dispatcher that lets a goroutine that is
// about to wait for an actor run the actor's mailbox itself. Like
// protoactor's default dispatcher it starts a goroutine for each mailbox
// run, except for a run scheduled while some goroutine holds the
// dispatcher: that run is kept, and the goroutine whose take returns it
// runs it (Hold, then Take). On a small machine the thread wake-up that a new goroutine
// costs is most of a message's latency (0.05-0.1 ms on a 2-vCPU VM).
//
// The postmaster's dispatcher is held by the goroutines that report a
// child's progress: the postmaster never blocks, so they may run it; the
// spawner's locked thread and timers never hold it. A child's worker
// actor's is held by the bridge reader while it handles one batch of
// frames; the reader runs the kept run on a loan of its goroutine
// (bridge.Conn.ReadLoopLending), and reading moves to a new goroutine when
// the worker sends a request of its own or keeps the loan for more than a
// second, so a worker that waits on the bridge is still served.
type Dispatcher struct {
	mu      sync.Mutex
	holders int
	held    func()
}

// Throughput is protoactor's default: messages per mailbox run before the
// run yields the processor.
func (d *Dispatcher) Throughput() int { return 300 }

// Schedule keeps fn for a holder, or runs it on a new goroutine.
func (d *Dispatcher) Schedule(fn func()) {
	d.mu.Lock()
	if d.holders > 0 && d.held == nil {
		d.held = fn
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	go fn()
}

// Hold begins a hold: a mailbox run scheduled until the matching take is
// kept for the holders.
func (d *Dispatcher) Hold() {
	d.mu.Lock()
	d.holders++
	d.mu.Unlock()
}

// Take ends one hold and returns the kept run, if any, for the caller to
// run.
func (d *Dispatcher) Take() func() {
	d.mu.Lock()
	d.holders--
	fn := d.held
	d.held = nil
	d.mu.Unlock()
	return fn
}
