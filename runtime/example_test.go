package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
)

// Starting a dynamic worker, asking it something across the bridge and
// shutting down. The test binary is the host here: its TestMain calls
// runtime.Main first, as a service's main must, so the child process it
// re-executes runs the worker. "echo" is code defined by this package's
// tests with actors.Define.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := runtime.New(runtime.Config{
		Workers: []actors.Spec{}, // no static workers
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(ctx, phases.Fast)

	h, err := rt.StartWorker(ctx, actors.Spec{Name: "echo-1", Type: "echo", StartAt: phases.PostmasterStart})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := h.WaitStarted(ctx); err != nil {
		fmt.Println(err)
		return
	}
	answer, err := rt.System().Root.RequestFuture(h.PID(), []byte("hello across the bridge"), 5*time.Second).Result()
	fmt.Printf("%s %v\n", answer, err)
	for _, w := range rt.Workers() {
		fmt.Println(w.Name, w.Type, w.State, w.Dynamic)
	}
	// Output:
	// hello across the bridge <nil>
	// echo-1 echo running true
}
