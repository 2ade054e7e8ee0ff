package spi

import (
	"context"
	"fmt"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

const (
	// Name is the name of the registered worker.
	Name = "spi_counter"
	// StoreName is the name under which the host must expose the store
	// actor (Runtime.Expose).
	StoreName = "store"
	// DefaultNaptime is the wait between two rounds when the worker's Arg
	// is empty (worker_spi.naptime).
	DefaultNaptime = 250 * time.Millisecond
	// ReportEvery is how many rounds pass between two requests for the
	// total.
	ReportEvery = 8
)

// Fold adds Delta to the total that the store keeps for Worker. Workers
// send it with Worker.Send; the store does not answer.
type Fold struct {
	Worker string
	Delta  int
}

// Total asks the store for the sum of every worker's total; the store
// answers with a [Sum].
type Total struct{}

// Sum is the store's answer to [Total].
type Sum struct {
	Total   int // the sum over all workers
	Workers int // how many workers have folded work so far
	Folds   int // how many Fold messages the store has received
}

func init() {
	// The message types cross the process bridge as JSON. Host and child
	// are the same binary, so registering here covers both sides.
	for _, m := range []any{Fold{}, Total{}, Sum{}} {
		if err := actors.RegisterMessage(m); err != nil {
			panic(err)
		}
	}
	actors.MustRegister(actors.Spec{
		Name:    Name,
		StartAt: phases.RecoveryFinished,
		Connect: true,
		Restart: actors.Fixed(time.Second),
		Run:     run,
	})
}

// naptime parses the worker's Arg.
func naptime(arg []byte) (time.Duration, error) {
	if len(arg) == 0 {
		return DefaultNaptime, nil
	}
	d, err := time.ParseDuration(string(arg))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("spi: Arg %q is not a positive duration", arg)
	}
	return d, nil
}

// run is the worker's main loop, worker_spi_main in PostgreSQL.
func run(ctx context.Context, w actors.Worker) error {
	nap, err := naptime(w.Arg())
	if err != nil {
		return err
	}
	log := w.Logger()
	log.Info("spi: started", "naptime", nap, "incarnation", w.Incarnation())
	tick := time.NewTicker(nap)
	defer tick.Stop()
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			log.Info("spi: asked to stop", "rounds", round-1)
			return nil
		case <-tick.C:
		}
		if err := w.Send(StoreName, Fold{Worker: w.Name(), Delta: 1}); err != nil {
			return fmt.Errorf("spi: fold: %w", err)
		}
		if round%ReportEvery != 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := w.Request(rctx, StoreName, Total{})
		cancel()
		switch {
		case ctx.Err() != nil:
			continue // stopping: the next select returns
		case err != nil:
			return fmt.Errorf("spi: ask the store: %w", err)
		}
		s, ok := r.(Sum)
		if !ok {
			return fmt.Errorf("spi: the store answered %T, want spi.Sum", r)
		}
		log.Info("spi: store total", "total", s.Total, "workers", s.Workers, "round", round)
	}
}
