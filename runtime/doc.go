// Package runtime is the postmaster: the root actor that starts every
// worker in its own child process, at the start phase it asked for,
// supervises it with its restart policy, and stops it at shutdown. It also
// holds the child's entry point (Main), the dynamic-worker API and the HTTP
// endpoint with the Prometheus metrics, the status page and the event
// stream.
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
// One protoactor actor owns the worker table, the phase, the warm pool, the
// shared-memory group and the shutdown state; everything else reports to it
// by message, so it never blocks on a child. It decides (what follows an
// exit, the backoff, the intensity, an all-for-one reset, what to start in
// this server-loop iteration) with pure functions of the worker's state,
// the event and the clock, and it does through a launcher: the production
// one spawns real processes; runtime/runtimetest runs the same postmaster
// on workers in goroutines, in virtual time.
//
// Each server-loop iteration starts at most Config.StartsPerIteration
// pending workers, then yields to its mailbox, so requests are served
// during a start storm; while Config.MaxStarting children are starting it
// waits for one of them instead of looping. [Runtime.Workers],
// [Runtime.WorkerByPID], [Handle.Status] and [Runtime.Status] do not ask
// the postmaster at all: each worker's row is republished when it changes,
// before the event that reports the change. Every state change is one
// [WorkerEvent] on the event stream ([Runtime.Subscribe], GET /events),
// one log line and a metrics update. See [WorkerState] for the state
// machine.
//
// # What PostgreSQL's API has, here
//
//   - WaitForBackgroundWorkerStartup: [Handle.WaitStarted]; when the worker
//     dies before it is ready, the error is an [*ExitError] with the exit's
//     reason, code, signal and the tail of its output.
//   - GetBackgroundWorkerPid: [Handle.Status]; GetBackgroundWorkerTypeByPid:
//     [Runtime.WorkerByPID].
//   - bgw_notify_pid: [Runtime.StartWatched] attaches the watch in the call
//     that starts the worker, so no transition is missed.
//   - Readiness after setup (systemd's Type=notify): a spec with NotifyReady
//     is starting until the worker calls Worker.Ready.
//   - pgstat_report_activity: Worker.SetActivity, shown in the rows and in
//     GET /workers as activity, cleared by every state change.
//   - SIGHUP and ProcessConfigFile: [Runtime.Reload]; with HandleSignals,
//     SIGHUP to the host. A worker never gets SIGHUP itself.
//   - Process titles: a child's process name (its main thread's) is its
//     worker's name (cut to 15 bytes), so ps and top show it; an idle
//     child is bgw-idle.
//   - restart_after_crash = off: Config.NoRestartAfterCrash.
//
// # Children
//
// A child is /proc/self/exe with a marker and a handshake cookie in its
// environment and one end of a close-on-exec socketpair on fd 3. It says
// hello (magic, version, cookie), is welcomed, builds its actor system,
// reports idle, is assigned its worker, and reports ready once the worker
// actor has started (or, with NotifyReady, once the worker says so). It is
// spawned from one goroutine locked to its OS thread for the runtime's
// life, so its parent-death signal cannot fire early (golang/go#27505); the
// child catches that signal, and EOF on the bridge, by killing its own
// cgroup leaf or process group. Each child is in its own process group, killed as a
// group, reaped exactly once through a pidfd, and signalled only through
// os.Process. Its stdout and stderr are logged line by line, each line
// capped, and the reader of a reaped child's output never waits on a pipe
// that a descendant keeps open.
//
// Liveness is judged from what a child sends: any frame counts, and an
// idle child beats, with a byte on its beat pipe (drained by the watchdog,
// so that no reader wakes for it) or a heartbeat frame. One watchdog
// checks every child; a child silent
// for Config.HeartbeatTimeout is killed, unless bytes from it wait unread
// (the host fell behind) or the host itself was not running (stopped,
// paused): silence is counted from the host's resume.
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
// [Handle.Request] turns the answers that are errors (not running, a stale
// handle, a failure on the far side) into errors.
//
// # Shared memory
//
// A generation of the segment is replaced by every all-for-one reset and
// retired once the last child that held it is reaped: its memory is given
// back, while host code that still holds it reads zeros, for the next
// RetiredSegmentsMapped retirements; after those it is unmapped, so take
// the segment again at each SegmentEvent ([Runtime.Segment]).
//
// # In-place upgrade
//
// [Runtime.Upgrade] (or SIGUSR2 with Config.HandleSignals) exec's a new
// host binary in the host's own process, same pid, after systemd's
// daemon-reexec, and every worker keeps running: the children stay the
// process's children; their bridges, output pipes, the shared segment, the
// lock file and the HTTP listener cross the exec as inherited descriptors;
// the postmaster's state crosses in a sealed memfd. The new image's [New]
// finds it and its Start adopts everything ([Runtime.Upgraded] reports it).
//
// Guaranteed: the new binary first runs in a check mode that reads the
// state and must accept it; if it does not (another state format, a worker
// whose code it lacks, another shared-memory layout), or if it is not a
// bgworker host at all (accepting is a line with a nonce the check gives
// it, not merely exiting 0), the upgrade is
// refused with [ErrUpgradeRefused] and the host goes on unchanged. If the
// exec itself fails, the host adopts its own children back and goes on. A
// stop, reload or shutdown asked while the upgrade waits for quiet is
// carried out at once (a shutdown calls the upgrade off); one asked while
// the children are handed over is held, and the upgrade calls itself off
// rather than lose it in the exec. Not guaranteed: one asked in the moment
// of the exec itself, after the upgrade's last check, is lost.
// Every worker keeps its pid, restart history and exits; counters carry
// on; messages on a shared-memory queue are not touched.
//
// Not guaranteed: if the new image dies before it has adopted (a panic in
// an init, say), the children see EOF on their bridges and exit, as
// whenever their host dies. Requests in flight between host actors and
// workers at the exec are lost (a worker's fail at once with
// bridge.ErrReattached; the host's actors are gone with the old image),
// and watches and waits do not carry over. Workers run the old code until
// they are restarted: [Runtime.Roll] restarts them onto the new one, one
// by one, the shared-memory group as one unit on the same segment.
package runtime
