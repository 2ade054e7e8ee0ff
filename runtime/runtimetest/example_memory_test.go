package runtimetest_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/runtimetest"
)

// The code under test: a worker that fails while its upstream is away.
func init() {
	actors.MustDefine(actors.Spec{Name: "fetcher", Run: func(ctx context.Context, w actors.Worker) error {
		return errors.New("fetcher: upstream unavailable")
	}})
}

// testFetcherGivesUp is what a test of it looks like: it retries three
// times with backoff, then is failed, asserted to the millisecond of
// virtual time, in milliseconds of wall time.
func testFetcherGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{})
		t0 := time.Now()
		rt.StartWorker(t.Context(), actors.Spec{Name: "f", Type: "fetcher", StartAt: phases.PostmasterStart,
			Restart:   actors.Exponential{Initial: time.Second, Multiplier: 2, Max: time.Minute},
			Intensity: actors.Intensity{MaxRestarts: 3, Window: time.Hour}})
		if err := rt.WaitState(t.Context(), "f", runtime.Failed); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d != 7*time.Second { // restarts at 1 s, 3 s and 7 s
			t.Fatalf("failed after %v, want 7s", d)
		}
	})
}

// A worker's test in memory and in virtual time: see testFetcherGivesUp.
func ExampleNew() {
	var _ = testFetcherGivesUp
}
