package crasher

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

const (
	// Name is the name of the registered crashing worker.
	Name = "crasher"
	// TickerType is the name of the defined code for dynamic workers: a
	// spec passed to Runtime.StartWorker names it in its Type.
	TickerType = "ticker"
	// crashPrefix starts an Arg that asks the crasher to panic.
	crashPrefix = "crash-after="
)

// Restart is the crasher's restart policy: the first restart after 100ms,
// each next wait doubled up to 2s, each shortened by up to 20% at random.
var Restart = actors.Exponential{
	Initial:    100 * time.Millisecond,
	Max:        2 * time.Second,
	Multiplier: 2,
	Jitter:     0.2,
}

// CrashArg returns the Arg that makes the crasher panic d after it starts.
// Since registered specs are fixed at init, a host passes it by setting the
// Arg of the crasher's spec in Config.Workers.
func CrashArg(d time.Duration) []byte { return []byte(crashPrefix + d.String()) }

// crashAfter parses an Arg; ok is false when the Arg asks for no crash.
func crashAfter(arg []byte) (d time.Duration, ok bool, err error) {
	s, found := strings.CutPrefix(string(arg), crashPrefix)
	if !found {
		return 0, false, nil
	}
	d, err = time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false, fmt.Errorf("crasher: Arg %q: want %sDURATION", arg, crashPrefix)
	}
	return d, true, nil
}

func init() {
	actors.MustRegister(actors.Spec{
		Name:    Name,
		StartAt: phases.ConsistentState,
		Restart: Restart,
		Run:     runCrasher,
	})
	actors.MustDefine(actors.Spec{
		Name: TickerType,
		Run:  runTicker,
	})
}

func runCrasher(ctx context.Context, w actors.Worker) error {
	d, crash, err := crashAfter(w.Arg())
	if err != nil {
		return err
	}
	log := w.Logger()
	if !crash {
		log.Info("crasher: running without a crash planned")
		<-ctx.Done()
		return nil
	}
	log.Info("crasher: will panic", "after", d, "incarnation", w.Incarnation())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	panic(fmt.Sprintf("crasher: crash injected after %v (incarnation %d)", d, w.Incarnation()))
}

func runTicker(ctx context.Context, w actors.Worker) error {
	log := w.Logger()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			log.Info("ticker: tick", "n", n)
		}
	}
}
