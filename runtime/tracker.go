package runtime

import (
	"context"
	"slices"
	"sync"
)

// tracker is a wait group that knows what it waits for: each goroutine of
// the runtime is started with a description, so that a shutdown whose
// context ends can say what is still held ("output of pid 4242, held open by
// another process") instead of hanging or saying nothing.
type tracker struct {
	mu      sync.Mutex
	next    uint64
	live    map[uint64]string
	changed chan struct{} // closed and replaced whenever a goroutine ends
}

// Go runs fn on a new goroutine, tracked under what.
func (t *tracker) Go(what string, fn func()) {
	t.mu.Lock()
	if t.live == nil {
		t.live = map[uint64]string{}
		t.changed = make(chan struct{})
	}
	t.next++
	id := t.next
	t.live[id] = what
	t.mu.Unlock()
	go func() {
		defer t.done(id)
		fn()
	}()
}

func (t *tracker) done(id uint64) {
	t.mu.Lock()
	delete(t.live, id)
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// Wait returns nil once every tracked goroutine has ended, or ctx's error.
func (t *tracker) Wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		if len(t.live) == 0 {
			t.mu.Unlock()
			return nil
		}
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Held describes the goroutines still running, sorted.
func (t *tracker) Held() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.live))
	for _, w := range t.live {
		out = append(out, w)
	}
	slices.Sort(out)
	return out
}
