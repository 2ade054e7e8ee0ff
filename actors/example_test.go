package actors_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// A module builds its spec and passes it to actors.Register from init(),
// which validates it the same way Validate does:
//
//	func init() { actors.MustRegister(indexerSpec) }
//
// (The example calls Validate only: the registry is global and closes once
// a runtime has read it.)
func ExampleSpec_Validate() {
	spec := actors.Spec{
		Name:         "indexer",
		StartAt:      phases.ConsistentState,
		SharedMemory: true,
		Regions:      []shmactor.Region{{Name: "counters", Size: 4096}},
		Run: func(ctx context.Context, w actors.Worker) error {
			<-ctx.Done()
			return nil
		},
		Restart:   actors.Exponential{Initial: 50 * time.Millisecond, Max: time.Second},
		Intensity: actors.Intensity{MaxRestarts: 5, Window: time.Minute},
	}
	fmt.Println("valid:", spec.Validate())

	early := spec
	early.StartAt = phases.PostmasterStart // before shared memory exists
	err := early.Validate()
	fmt.Println(errors.Is(err, actors.ErrInvalidSpec))
	fmt.Println(err)
	// Output:
	// valid: <nil>
	// true
	// actors: worker "indexer": invalid worker spec: shared memory is not available at postmaster_start; start at consistent_state or later
}

// The waits of a crash-looping worker: doubling from Initial up to Max.
// With Jitter, each wait is taken at random from [d×(1−Jitter), d].
func ExampleExponential() {
	policy := actors.Exponential{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}
	b := actors.NewBackoff(policy, actors.Intensity{MaxRestarts: -1})
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for n := 1; n <= 7; n++ {
		wait, err := b.Next(now, 10*time.Millisecond, 0)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("restart %d after %v\n", n, wait)
		now = now.Add(wait + 10*time.Millisecond)
	}

	jittered := actors.NewBackoff(actors.Exponential{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.2}, actors.Intensity{MaxRestarts: -1})
	for _, rnd := range []float64{0, 0.5, 0.999} {
		wait, _ := jittered.Next(now, time.Minute, rnd) // a minute's run resets the growth
		fmt.Printf("jitter 0.2, rnd %v: %v\n", rnd, wait)
	}
	// Output:
	// restart 1 after 100ms
	// restart 2 after 200ms
	// restart 3 after 400ms
	// restart 4 after 800ms
	// restart 5 after 1.6s
	// restart 6 after 2s
	// restart 7 after 2s
	// jitter 0.2, rnd 0: 100ms
	// jitter 0.2, rnd 0.5: 90ms
	// jitter 0.2, rnd 0.999: 80.02ms
}
