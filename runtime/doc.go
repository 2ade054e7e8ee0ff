// Package runtime is the postmaster: the root actor that starts every
// worker in its own child process, at the start phase it asked for,
// supervises it with its restart policy, and stops it at shutdown. It also
// holds the process bridge (the host binary re-executed with a socket on
// fd 3), the child's entry point, the dynamic-worker API and the HTTP
// endpoint with the Prometheus metrics.
//
// The package is named runtime, like k8s.io/apimachinery/pkg/runtime;
// import it with an alias where the standard runtime is also used.
//
// # Embedding
//
//	func main() {
//		runtime.Main() // in a child process this runs the worker and exits
//		rt, err := runtime.New(runtime.Config{HTTPAddr: "127.0.0.1:9464"})
//		...
//		err = rt.Start(ctx)                           // PostmasterStart workers start
//		err = rt.Advance(ctx, phases.RecoveryFinished) // and the later phases
//		h, err := rt.StartWorker(ctx, actors.Spec{Name: "job-1", Type: "copier"})
//		pid, err := h.WaitStarted(ctx)
//		rows := rt.Workers()
//		err = rt.Shutdown(ctx, phases.Fast) // returns when every child is reaped
//	}
//
// # The postmaster
//
// One protoactor actor owns the worker table, the phase and the shutdown
// state; everything else (the spawner, the bridge readers, the reapers,
// timers) reports to it by message, so it never blocks on a child. Each
// server-loop iteration starts at most Config.StartsPerIteration pending
// workers, then yields to its mailbox, so requests are served during a
// start storm; while Config.MaxStarting children are starting it waits for
// one of them instead of looping. [Runtime.Workers] does not ask the
// postmaster at all: each worker's row is republished when it changes,
// before the event that reports the change. Every state change is one [WorkerEvent] on
// the event stream ([Runtime.Subscribe]), one log line and a metrics
// update. See [WorkerState] for the state machine.
//
// # Children
//
// A child is /proc/self/exe with a marker and a handshake cookie in its
// environment and one end of a close-on-exec socketpair on fd 3. It says
// hello (magic, version, cookie), is welcomed, builds its actor system,
// reports idle, is assigned its worker, and reports ready once the worker
// actor has started. It is spawned from one goroutine locked to its OS
// thread for the runtime's life, so its parent-death signal cannot fire
// early (golang/go#27505); the child catches that signal, and EOF on the
// bridge, by killing its own cgroup leaf or process group. Each child is in
// its own process group, killed as a group, reaped exactly once through a
// pidfd, and signalled only through os.Process. Its stdout and stderr are
// logged line by line, each line capped.
//
// # Cgroups
//
// Where cgroup v2 is usable (root on a cgroup2 host, systemd's
// Delegate=yes, a container with a writable cgroup2 mount), each child is
// also started inside a cgroup leaf of its own (clone3 with
// CLONE_INTO_CGROUP), and whenever it ends, by any exit, the leaf is killed
// with cgroup.kill before the child is reaped: its descendants die with it
// even when they left its process group or session (setsid, double forks).
// Each [WorkerInfo] names its leaf in Cgroup. Where the controllers are
// delegated, a spec's actors.Limits are written to memory.max, cpu.max and
// pids.max, and an OOM kill is recorded as [ReasonOOMKilled]; elsewhere a
// spec with Limits is refused with [ErrLimitsUnavailable]. Where cgroup v2
// is not usable, or Config.NoCgroups is set, the runtime says why once at
// Start and relies on process groups.
//
// # Messages
//
// [Runtime.PID] returns a PID that host actors send to: messages cross the
// bridge to the worker actor, requests come back to their futures. A
// worker whose spec has Connect reaches the host actors exposed with
// [Runtime.Expose]. Delivery is at most once; a request in flight when a
// worker dies fails with a dead letter at once, never a hang.
//
// In the child, a message from the host is handled by the goroutine that
// read it: the bridge reader runs the worker actor's mailbox at the end of
// its batch of frames (a long batch is handled beside a new reader
// instead), and goes on reading on a new goroutine as soon as the worker
// sends a request of its own or holds it for more than a second (checked
// at each heartbeat). Worker Props that set their own dispatcher or
// mailbox keep them.
package runtime
