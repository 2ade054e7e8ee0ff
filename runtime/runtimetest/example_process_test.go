package runtimetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/runtimetest"
)

// testSurvivesSigkill runs the code under test in real child processes (the
// package's TestMain calls runtimetest.Main(m)): a SIGKILL of the worker's
// child is a crash, after which the worker runs again under a new pid. At
// the end the kit checks that no child, zombie, goroutine or descriptor was
// left behind.
func testSurvivesSigkill(t *testing.T) {
	rt := runtimetest.NewProcess(t, runtime.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, _ := rt.StartWorker(ctx, actors.Spec{Name: "s", Type: "steady", StartAt: phases.PostmasterStart, Restart: actors.Fixed(0)})
	pid, err := h.WaitStarted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rt.Kill("s")
	if err := rt.Until(ctx, func() bool { w, _ := rt.Info("s"); return w.State == runtime.Running && w.PID != pid }); err != nil {
		t.Fatal(err)
	}
	if ex := rt.Exits("s")[0]; ex.Reason != "signal:KILL" || !ex.Crash {
		t.Fatalf("exit %+v, want a SIGKILL crash", ex)
	}
}

// A worker's integration test in real processes: see testSurvivesSigkill.
func ExampleNewProcess() {
	var _ = testSurvivesSigkill
}
