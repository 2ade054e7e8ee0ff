// Package actors defines what a worker is: its [Spec], its registration and
// the [Worker] view it has of itself in its child process.
//
// # Registering a worker
//
// A package registers its workers from init(), the way a PostgreSQL module
// named in shared_preload_libraries calls RegisterBackgroundWorker from
// _PG_init; the service blank-imports the package:
//
//	func init() {
//		actors.MustRegister(actors.Spec{
//			Name:    "hello",
//			StartAt: phases.RecoveryFinished,
//			Restart: actors.Fixed(time.Second),
//			Run: func(ctx context.Context, w actors.Worker) error {
//				<-ctx.Done()
//				return nil // exit 0: done, not restarted
//			},
//		})
//	}
//
// [Register] validates the spec ([Spec.Validate]) and fails on a duplicate
// name. Code that is only started dynamically is added with [Define]; a
// dynamic spec names it in its Type. The registry is read, and closed, when a
// runtime is created.
//
// # The exit contract
//
// A worker runs in its own child process. A [RunFunc] that returns nil exits
// 0: done, never restarted. One that returns an error exits 1: restarted
// after its backoff. A panic exits 2: a crash. Anything else (a signal,
// another code) is a crash too. A shared-memory worker that exits without
// its goodbye on the bridge is a crash, whatever its code.
//
// # Restart policies
//
// [Fixed] is PostgreSQL's bgw_restart_time; [Exponential] grows the wait
// geometrically up to a cap, with jitter that only shortens it, and resets
// after a stable run; [NeverRestart] never restarts. [Intensity] fails a
// worker restarted more than MaxRestarts times within Window (OTP's MaxR and
// MaxT); a failed Critical worker shuts the runtime down. [Backoff] is the
// per-worker state machine, with flat cost per restart.
//
// # Messages
//
// Messages crossing the bridge are []byte, string, protocol buffers, or Go
// types registered with [RegisterMessage].
package actors
