package runtimetest_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
)

// The same test as TestRetriesThreeTimesThenFails, written without the
// kit: real children, wall-clock backoffs that can only be bounded, events
// collected by hand, and no leak check. It is here to compare with the
// kit's version; the README gives both line counts.
func TestRetriesThreeTimesThenFailsWithoutTheKit(t *testing.T) {
	rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var starts []time.Time
	failed := make(chan struct{})
	rt.Subscribe(func(e runtime.Event) {
		we, ok := e.(runtime.WorkerEvent)
		if !ok || we.Name != "w" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if we.To == runtime.Starting {
			starts = append(starts, we.At)
		}
		if we.To == runtime.Failed {
			close(failed)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rt.Shutdown(context.Background(), phases.Fast); err != nil {
			t.Error(err)
		}
	}()
	if _, err := rt.StartWorker(ctx, actors.Spec{Name: "w", Type: "flaky", StartAt: phases.PostmasterStart,
		Restart:   actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: time.Second},
		Intensity: actors.Intensity{MaxRestarts: 3, Window: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("the worker never failed")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 4 {
		t.Fatalf("%d starts, want 4", len(starts))
	}
	// Wall time: each wait can only be bounded from below (jitter aside).
	for i, min := range []time.Duration{80, 160, 320} {
		if d := starts[i+1].Sub(starts[i]); d < min*time.Millisecond {
			t.Errorf("restart %d after %v, want at least %vms", i+1, d, min)
		}
	}
}
