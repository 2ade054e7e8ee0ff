// Package runtimetest is a test kit for people who write workers: what
// net/http/httptest is for HTTP handlers. It runs the real postmaster of
// package runtime on the worker code under test, in one of two modes.
//
// # In memory, in virtual time
//
// New runs every worker's real Run or Props code in goroutines of the
// test process. Inside testing/synctest's Test, time is virtual: a worker
// with Exponential{Initial: time.Second, Multiplier: 2, Max: 4 * time.Second}
// that fails at once restarts at exactly 1 s, 3 s, 7 s and 11 s, and the
// test that says so with == finishes in milliseconds.
//
//	func TestRetries(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			rt := runtimetest.New(t, runtime.Config{})
//			rt.StartWorker(ctx, actors.Spec{Name: "w", Type: "mycode", StartAt: phases.PostmasterStart})
//			rt.WaitState(ctx, "w", runtime.Failed)
//			// rt.Starts("w"), rt.Exits("w"), rt.Events() carry virtual times
//		})
//	}
//
// The worker's side of the API (actors.Worker: its logger, Arg, Send and
// Request to host actors exposed with Expose, Ready, SetActivity, Reload,
// the segment of a shared-memory worker) behaves as in a child, and every
// message goes through the codec, so a type that could not cross the
// bridge fails here too.
//
// # In real processes
//
// NewProcess is the same API with real children: the test binary,
// re-executed. The package's TestMain must call Main:
//
//	func TestMain(m *testing.M) { runtimetest.Main(m) }
//
// It is for the integration tests that need real signals, real shared
// memory and real exit codes.
//
// # Faults
//
// Both modes inject the same faults by worker name: Crash (a panic: exit
// 2), Exit (a code, by the exit contract), Kill (SIGKILL), Stall (the
// child stops heartbeating and is killed at the heartbeat timeout),
// FailNextStart (a failed start), and for shared-memory workers
// DieMidWrite (an exit without the goodbye, which resets the group).
//
// # Assertions and clean-up
//
// WaitState waits for a worker's state on the runtime's events, never by
// polling. Events, WorkerEvents, Starts and Exits return what happened,
// with times. The restart jitter draws 0 unless WithRandom says otherwise,
// so schedules are exact. At the end of the test (t.Cleanup) the runtime is
// shut down (fast), and in process mode the kit fails the test, saying
// what, if a child, a zombie, a goroutine or a descriptor was left behind;
// in memory, the runtime's goroutines have all ended once Shutdown
// returns, and synctest fails a bubble whose goroutines are left blocked.
//
// The kit's fault injection lives in this package and in the child code
// it hooks into only when a test binary links it: a service binary that
// does not import runtimetest contains none of it.
package runtimetest
