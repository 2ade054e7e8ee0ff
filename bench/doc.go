// Package bench measures the runtime against baselines measured beside it,
// in the same invocation, on the same machine.
//
// Every number the package reports is a pair: what the runtime achieves and
// what the cheapest thing that does the same job achieves (a naive child
// process, a raw socketpair, copy() in one process). Absolute times on a
// shared, noisy machine mean little from one run to the next; the ratio of
// two numbers measured a second apart does. Each pair is a [Result] with a
// Target and whether it was Met.
//
// # Running
//
//	bash bench/run.sh                      # every suite
//	bash bench/run.sh -suite bridge -n 0.2 # one suite, a fifth of the iterations
//	go run ./bench/cmd/bgwbench -suite shm
//
// Worker processes and baseline children are the benchmark binary itself,
// re-executed through /proc/self/exe: its main calls the runtime's Main
// (a worker child runs its worker and exits) and then [ChildMain] (a
// baseline child runs its role, registered with [RegisterRole], and exits).
// run.sh builds the binary once into a temporary directory and runs it;
// `go run` works too. The command prints one table row per [Result]
// ([Print]); it exits 1 only when a suite fails to run, never for a missed
// target. Flags: -suite (comma list, default all), -n (scale the iteration
// counts, see [WithScale]), -cpuprofile (the host's CPU profile; samples
// of the bridge suite carry the pprof label bridge=cold|request|tell, so
// `go tool pprof -tagfocus bridge=tell` isolates one measurement). Setting
// BGWBENCH_CHILD_CPUPROFILE=path makes the worker of the Tell measurement
// write its own CPU profile (the receiving side).
//
// # Suite bridge
//
// One runtime (default heartbeat, logger at Warn), dynamic workers started
// with Runtime.StartWorker at phases.PostmasterStart, worker code defined in
// this package: "bench-echo" answers a []byte request with itself, and
// "bench-sink" counts []byte tells; both answer the request "count" with
// the number of tells, and stop on actors.Terminate. All messages are 64
// bytes.
//
//   - Cold start: StartWorker → WaitStarted (spawn, handshake, actor system,
//     worker actor Started, ready at the postmaster), p50 of 30 starts with
//     an untimed Terminate and WaitStopped between them. Baseline: the same
//     binary as a naive child that builds an actor system, spawns one actor
//     and writes one byte to its fd 3 when the actor has started, timed from
//     exec to that byte. The two alternate. Target: ratio <= 1.2. This is the
//     cost floor every cold worker pays (~9 ms on an idle machine, see
//     FACTS.md); the runtime's own protocol should add little to it.
//   - Request/response: RequestFuture(Handle.PID(), msg).Result() from the
//     host's root context to the worker actor and back, timed one by one,
//     20,000 in four rounds of a fresh worker each; p50 and p99 (the p99 row
//     has no target). Baseline: a raw 64-byte ping-pong over a socketpair
//     with a child of the same binary, both sides through net.Conn (the same
//     netpoller path), four fresh children. Target: p50 ratio <= 2.
//   - Tell throughput: 2M tells with RootContext.Send(Handle.PID(), msg) as
//     fast as Send returns, then the request "count", which the bridge
//     delivers after the tells; the time to its answer gives msg/s, and the
//     answer must equal the tells sent. Median of three rounds, each a fresh
//     worker after a 10,000-tell warm-up. Baseline, printed beside it: the
//     same number of 64-byte frames written raw in 64 KiB writes to a child
//     that reads and discards them and then reports the byte count (~30M
//     msg/s; one write per frame would be ~0.6M). Target: >= 5M msg/s.
//
// The message is boxed in an interface once, so the caller's conversion of
// a []byte to an interface per send is not charged to the runtime. The
// whole suite takes about 10 s on two cores.
//
// # Suite postmaster
//
// The postmaster under load, with dynamic workers of the code
// "bench-pm-block" (a RunFunc that blocks until its context is cancelled,
// then returns nil: exit 0), started at phases.PostmasterStart. Baselines
// are measured in the same invocation, each next to what it is compared
// with, because the machine is shared. Progress and diagnostics (child CPU,
// scheduling delay, exit reasons) go to stderr.
//
//   - Cold start: StartWorker → WaitStarted on an idle runtime with
//     Config.WarmPool -1 (every start execs a child), p50 of 20 after two
//     warm-ups, with an untimed Terminate and WaitStopped between them;
//     measured again before the second storm. No target: it is the unit of
//     the storm's baseline. The warm start (default pool of two idle
//     children, refilled between starts) is printed beside it.
//   - Start storm: 1,000 StartWorker calls back to back (Config.MaxWorkers
//     1,100, default warm pool), timed from the first call to the 1,000th
//     Running event (Runtime.Subscribe), once with the default
//     StartsPerIteration (1) and once with 8. Baseline: 1,000 × cold p50 ÷
//     cores, a perfectly parallel storm of cold starts. Target: ratio <=
//     1.3. The storm's workers have a StartTimeout of 3 min: the start
//     timeout runs from the hand-over to the spawner, which gets the whole
//     storm at once, so with the default 10 s the tail of the storm is
//     killed as start_timeout. The count is lowered (and reported) when
//     MemAvailable is below 16 GiB or too small for 1,000 children at the
//     VmRSS of one (~15 MiB; the MemAvailable drop per child, ~5.5 MiB, is
//     printed beside the median VmRSS of 20 children).
//   - Status latency: Runtime.WorkersContext from another goroutine every
//     2 ms during the storm, p99, against the same probe on the same runtime
//     once every worker is running (same table size). Target: ratio <= 3.
//     The probe also logs how late its own 2 ms sleeps wake up, which tells
//     CPU contention from a busy postmaster. The first storm runtime's fast
//     shutdown is printed without a target.
//   - Fast shutdown: Runtime.Shutdown(ctx, phases.Fast) with 16 running
//     workers (and the default warm pool), p50 of 10, each on a new runtime.
//     Target: p50 <= 20 ms. The baseline column is PostgreSQL 15's 41 ms
//     from FACTS.md, not measured here (there is no server on this machine).
//   - Restart after SIGKILL: a worker with Restart actors.Fixed(0) and no
//     restart limit, SIGKILLed (its pid from the Running event) and timed
//     to its next Running event, p50 of 30, on a runtime with the default
//     warm pool and on one without. Each kill alternates with a cold start
//     on a third runtime (no pool), the baseline. Target: ratio <= 1.2 (a
//     restart is a cold start plus kill detection); FACTS.md's 9.2 ms for a
//     protoactor child is printed in the label.
//
// -n scales every count, the storm included (up to the memory cap). The
// whole suite takes 1–1.5 min on two cores, most of it in the two storms.
//
// # Suite shm
//
// The shared memory of package shmactor against the same work in one
// process: a queue of 4 KiB messages to a child against copy() (target
// ratio >= 0.5), and atomic adds by two processes on the segment against two
// goroutines on a private page (target ratio >= 0.9). See shm.go.
//
// # Suites pool and reset
//
// See pool.go. Worker code: "bench-pool-block" (a RunFunc blocking on its
// context, exit 0) and "bench-reset-shm" (SharedMemory, StartAt
// ConsistentState, one 4 KiB region "bench-reset" it maps and touches, then
// blocks on its context). Defining a shared-memory code makes every runtime
// of the bench binary size that region into its segment; only runtimes that
// reach ConsistentState build one. Runtime warnings are counted by message
// and printed at the end; the crash warnings every kill causes are not
// echoed. Breakdowns (from the events' At and Exit.At) go to stderr.
//
// Suite pool: two runtimes side by side, Config.WarmPool 4 and -1.
//
//   - Start: StartWorker → WaitStarted of bench-pool-block, 50 rounds after
//     two warm-ups, each round a warm start (after waiting, untimed, until
//     Runtime.IdleChildren has 4 pids), a cold start and a naive exec, in an
//     order that rotates; Terminate and WaitStopped between, untimed. Rows:
//     warm p50 beside cold p50 (target p50 <= 0.3 ms; PostgreSQL's fork-only
//     dynamic launch is 0.33–0.43 ms in FACTS.md), warm p99 beside cold p99
//     (no target), and cold p50 beside the naive child (target p50 <= 5 ms).
//     The naive child is the role "pool-exec-byte": the same binary
//     re-executed, which writes one byte on fd 3 from ChildMain (no actor
//     system), timed from exec to that byte, so the ratio is what the
//     runtime adds over exec → main.
//   - Restart: a worker with Restart actors.Fixed(0) and no restart limit on
//     each runtime, SIGKILLed (pid from its Running event) and timed to its
//     next Running event, 30 kills each after two warm-ups, alternating,
//     each after the warm pool is full again and 5 ms. Row: warm p50 beside
//     cold p50; target warm p50 <= 1.5 ms.
//
// Suite reset: two runtimes side by side, each with 8 dynamic
// bench-reset-shm workers (Restart Fixed(0), unlimited), GroupStopTimeout
// 1 s, GroupResetIntensity unlimited (MaxRestarts -1), one with WarmPool 8
// and one with WarmPool -1. Each reset SIGKILLs one member (rotating) and
// is timed to the last of 8 Running events with a higher incarnation after
// the SegmentEvent with Reset; 15 resets each after two warm-ups,
// alternating, each after the warm runtime's pool is full again and 10 ms.
// Rows: warm p50 beside cold p50, and cold p50 beside PostgreSQL's crash
// restart (~160 ms, FACTS.md, not measured here); target p50 <= 20 ms for
// both. stderr splits each reset: kill → GroupResetEvent, → the last other
// member's exit (stop of the others), → SegmentEvent (rebuild), → the last
// Starting event (assignments or spawns), → all Running.
//
// Both suites take 5–15 s on two cores; -n scales the counts.
package bench
