package runtime

import "sync"

// holdDispatcher is a protoactor Dispatcher that lets a goroutine that is
// about to wait for an actor run the actor's mailbox itself. Like
// protoactor's default dispatcher it starts a goroutine for each mailbox
// run, except for a run scheduled while some goroutine holds the
// dispatcher: that run is kept, and the goroutine whose take returns it
// runs it. On a small machine the thread wake-up that a new goroutine
// costs is most of a message's latency (0.05-0.1 ms on a 2-vCPU VM).
//
// The postmaster's dispatcher is held by API calls and by the goroutines
// that report a child's progress (Runtime.tellAndRun): the postmaster
// never blocks, so they may run it; the spawner's locked thread and timers
// never hold it. A child's worker actor's is held by the bridge reader
// while it handles one batch of frames (child.read); the reader runs the
// kept run on a loan of its goroutine (bridge.Conn.ReadLoopLending), and
// reading moves to a new goroutine when the worker sends a request of its
// own or keeps the loan for more than a second, so a worker that waits on
// the bridge is still served.
type holdDispatcher struct {
	mu      sync.Mutex
	holders int
	held    func()
}

// Throughput is protoactor's default: messages per mailbox run before the
// run yields the processor.
func (d *holdDispatcher) Throughput() int { return 300 }

// Schedule keeps fn for a holder, or runs it on a new goroutine.
func (d *holdDispatcher) Schedule(fn func()) {
	d.mu.Lock()
	if d.holders > 0 && d.held == nil {
		d.held = fn
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	go fn()
}

// hold begins a hold: a mailbox run scheduled until the matching take is
// kept for the holders.
func (d *holdDispatcher) hold() {
	d.mu.Lock()
	d.holders++
	d.mu.Unlock()
}

// take ends one hold and returns the kept run, if any, for the caller to
// run.
func (d *holdDispatcher) take() func() {
	d.mu.Lock()
	d.holders--
	fn := d.held
	d.held = nil
	d.mu.Unlock()
	return fn
}
