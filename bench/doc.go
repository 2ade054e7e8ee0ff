// Package bench measures the runtime against baselines measured beside it,
// in the same invocation, on the same machine.
//
// Every number the package reports is a pair: what the runtime achieves and
// what the cheapest thing that does the same job achieves (a naive child
// process, a raw socketpair, copy() in one process, an actor in the same
// process), or what a peer achieves (hashicorp/go-plugin, measured in the
// same run; PostgreSQL, quoted). Absolute times on a shared, noisy machine
// mean little from one run to the next; the ratio of two numbers measured a
// second apart does. Each pair is a [Result] with a stable ID and a target
// made of conditions ([Cond]) on the value or on the ratio; whether it was
// met is computed from them ([Result.Met]).
//
// # Running
//
//	bash bench/run.sh                      # every suite, as a table
//	bash bench/run.sh -suite bridge -n 0.2 # one suite, a fifth of the iterations
//	bash bench/run.sh -format json         # one JSON array of every result
//	go run ./bench/cmd/bgwbench -suite shm # without go-plugin's rows
//
// Worker processes and baseline children are the benchmark binary itself,
// re-executed through /proc/self/exe: its main calls the runtime's Main
// (a worker child runs its worker and exits) and then [ChildMain] (a
// baseline child runs its role, registered with [RegisterRole], and exits).
// run.sh builds the binary once into a temporary directory, builds bgwpeers
// from the module bench/peers beside it (go-plugin lives in that module, so
// that this one never depends on it), and runs bgwbench with -peers
// pointing at it; `go run` works too, without the go-plugin rows.
//
// The command prints one table row per [Result] ([Print]), or with -format
// json one array of [JSONResult] objects at the end ([WriteJSON]): id,
// suite, name, value, unit, baseline_name, baseline, ratio (value ÷
// baseline), target and met, null where a result has none. Progress and
// diagnostics go to stderr. It exits 1 only when a suite fails to run,
// never for a missed target. Flags: -suite (comma list, default all), -n
// (scale the iteration counts, see [WithScale]), -format (table or json),
// -peers (the bgwpeers binary, see [WithPeers]), -cpuprofile (the host's
// CPU profile; samples of the bridge suite carry the pprof label
// bridge=cold|first|request|tell, so `go tool pprof -tagfocus bridge=tell`
// isolates one measurement). Setting BGWBENCH_CHILD_CPUPROFILE=path makes
// the worker of the Tell measurement write its own CPU profile (the
// receiving side).
//
// # Result IDs
//
// Each suite declares, in [Suite.IDs], every ID it may return, in the order
// of its rows; [RunSuite] drops (and reports as an error) a result whose ID
// is undeclared or repeated. IDs are dotted, start with the suite's name or
// with "peer." (go-plugin's rows of the bridge suite), and do not change
// with the iteration counts; testdata/ids.golden holds the list, and
// changing it is deliberate. Names may change from run to run (they carry
// the counts).
//
// # Suite bridge
//
// Two runtimes (default heartbeat, logger at Warn), one with WarmPool -1
// (every start is cold) and one with the default pool; dynamic workers
// started with Runtime.StartWorker at phases.PostmasterStart, worker code
// defined in this package: "bench-echo" answers a []byte request with
// itself, and "bench-sink" counts []byte tells; both answer the request
// "count" with the number of tells, and stop on actors.Terminate. The
// in-process baseline is an actor in the first runtime's actor system
// running the same code as bench-echo. All messages are 64 bytes.
//
//   - bridge.cold.p50: StartWorker → WaitStarted without a pool (spawn,
//     handshake, actor system, worker actor Started, ready at the
//     postmaster), p50 of 30 starts with an untimed Terminate and
//     WaitStopped between them. Baseline: the same binary as a naive child
//     that builds an actor system, spawns one actor and writes one byte to
//     its fd 3 when the actor has started, timed from exec to that byte.
//     The two alternate. Target: ratio <= 1.2.
//   - bridge.request.p50, .p99, .inproc.p50: RequestFuture(Handle.PID(),
//     msg).Result() from the host's root context to the worker actor and
//     back, timed one by one, 20,000 in four rounds of a fresh worker each.
//     Baselines, in the same rounds: a raw 64-byte ping-pong over a
//     socketpair with a child of the same binary, both sides through
//     net.Conn (the same netpoller path), a fresh child each round (target:
//     p50 ratio <= 1.3; the p99 row has none); and RequestFuture to the
//     in-process actor (no target: what the process boundary costs).
//   - bridge.tell, bridge.tell.raw: 2M tells with RootContext.Send(
//     Handle.PID(), msg) as fast as Send returns, then the request "count",
//     which the bridge delivers after the tells; the time to its answer
//     gives msg/s, and the answer must equal the tells sent. Median of three
//     rounds, each a fresh worker after a 10,000-tell warm-up. Baselines,
//     in each round: as many tells to the in-process actor, timed the same
//     way (bridge.tell, target ratio >= 0.5); the same number of 64-byte
//     frames written raw in 64 KiB writes to a child that reads and
//     discards them and then reports the byte count (bridge.tell.raw,
//     target >= 5e6 msg/s).
//   - peer.goplugin.KIND.* (with -peers; KIND is netrpc or grpc): go-plugin
//     v1.8 through bgwpeers, an echo plugin whose process is the bgwpeers
//     binary re-executed (it links go-plugin and nothing of ours). Value:
//     ours; baseline: go-plugin's; the target is on that ratio.
//     .start.cold.p50 and .start.warm.p50: StartWorker → the answer to a
//     first 64-byte request, without a pool and from the warm pool, against
//     NewClient → Client → Dispense → the answer to a first 64-byte Echo RPC
//     (go-plugin has no pool); 30 rounds after two warm-ups, the four
//     rotating; targets ratio <= 0.67 (cold) and <= 0.1 (warm).
//     .request.p50: the request p50 above against go-plugin's Echo round
//     trip, timed one by one in the same four rounds, each a fresh plugin,
//     as many calls and warm-up as ours; target ratio <= 0.33.
//     .kill.p50: Terminate → WaitStopped of the worker just started against
//     Client.Kill (graceful too: the plugin is asked to quit, then reaped);
//     no target.
//
// The message is boxed in an interface once, so the caller's conversion of
// a []byte to an interface per send is not charged to the runtime. The
// whole suite takes about 15 s on two cores.
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
//   - postmaster.cold.p50: StartWorker → WaitStarted on an idle runtime
//     with Config.WarmPool -1 (every start execs a child), p50 of 20 after
//     two warm-ups, with an untimed Terminate and WaitStopped between them;
//     measured again before the second storm. No target: it is the unit of
//     the storm's baseline. postmaster.warm.p50 (default pool of two idle
//     children, refilled between starts) is printed beside it.
//   - postmaster.idle100.host: 100 running idle workers on a runtime with
//     the default configuration, a second after the last one is running:
//     the CPU this process used over 5 s (getrusage: postmaster, bridge
//     readers, heartbeats, garbage collection), in percent of one core per
//     100 workers, against the CPU the children used together over the same
//     window (/proc/PID/task/*/schedstat, read before and after it, so that
//     reading /proc is not charged to the host). Target: <= 0.1 % of a core
//     per 100 idle workers. The same runtime before the workers (no
//     workers, the pool's two idle children) is printed to stderr.
//     postmaster.idle1000.host is the same on the first storm's runtime
//     once its 1,000 workers are running.
//   - postmaster.storm, .storm.spi8: 1,000 StartWorker calls back to back
//     (Config.MaxWorkers 1,100, default warm pool), timed from the first
//     call to the 1,000th Running event (Runtime.Subscribe), once with the
//     default StartsPerIteration (1) and once with 8. Baseline: 1,000 × cold
//     p50 ÷ cores, a perfectly parallel storm of cold starts. Target: ratio
//     <= 1.2. The storm's workers have a StartTimeout of 3 min: the start
//     timeout runs from the hand-over to the spawner, which gets the whole
//     storm at once, so with the default 10 s the tail of the storm is
//     killed as start_timeout. The count is lowered (and reported) when
//     MemAvailable is below 16 GiB or too small for 1,000 children at the
//     VmRSS of one (~12 MiB). Of the first storm, without targets unless
//     said: postmaster.storm.child_cpu, the CPU a sample of 50 children had
//     used once all were running (nearly all of it to start), p50, against
//     the CPU of a cold start's child at ready on the idle runtime;
//     .storm.child_rss, the median VmRSS of 20 children against the drop
//     of MemAvailable per child; .storm.host_rss_per_worker, the growth of
//     this process's VmRSS from before the storm to all running, per worker,
//     each read after debug.FreeOSMemory, so that it counts what the
//     workers hold rather than the storm's garbage (target <= 64 KiB; the
//     growth without FreeOSMemory goes to stderr); .storm.shutdown, its
//     fast shutdown.
//   - postmaster.status.p99, .status.p99.spi8: Runtime.WorkersContext from
//     another goroutine every 2 ms during the storm, p99, against the same
//     probe on the same runtime once every worker is running (same table
//     size). Target: ratio <= 2. The probe also logs how late its own 2 ms
//     sleeps wake up, which tells CPU contention from a busy postmaster.
//   - postmaster.shutdown.p50: Runtime.Shutdown(ctx, phases.Fast) with 16
//     running workers (and the default warm pool), p50 of 10, each on a new
//     runtime, against PostgreSQL's fast shutdown with 16 workers, 26.8 ms
//     (quoted: see PostgreSQL below). Target: ratio <= 0.15.
//   - postmaster.restart.pool.p50, .restart.nopool.p50: a worker with
//     Restart actors.Fixed(0) and no restart limit, SIGKILLed (its pid from
//     the Running event) and timed to its next Running event, p50 of 30, on
//     a runtime with the default warm pool and on one without. Each kill
//     alternates with a cold start on a third runtime (no pool), the
//     baseline. Target: ratio <= 1.2 (a restart is the kernel's teardown of
//     the killed child plus a start: without the pool, at most 1.2 cold
//     starts; with it, a regression guard, since a warm restart is ~0.3×).
//
// -n scales every count, the storm included (up to the memory cap), and
// below 1 shortens the idle window (to at least a second). The whole suite
// takes 1.5–2 min on two cores, most of it in the two storms.
//
// # Suite shm
//
// The shared memory of package shmactor against the same work in one
// process, and against the bridge: shm.queue (and .msgs), a queue of 4 KiB
// messages to a child against copy() (target ratio >= 0.5); shm.atomic
// (and .bytes), atomic adds by two processes on the segment against two
// goroutines on a private page (target ratio >= 0.9); and
// shm.queue.vs_bridge, the same queue's bytes per second against Tell of a
// 4 KiB []byte from the host to a bench-sink worker (a runtime without a
// pool), 20,000 tells a trial, alternating with the queue's trials (target
// ratio >= 10). See shm.go and shmbridge.go.
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
//     pool.warm.p50 beside cold p50 (target p50 <= 0.15 ms and ratio <=
//     0.05), pool.warm.p99 beside cold p99 (target p99 <= 0.5 ms),
//     pool.warm.vs_pg, warm p50 against PostgreSQL's fork-only dynamic
//     launch, 260 µs (target ratio <= 0.6; ours includes ready, theirs
//     returns once forked), pool.warm.vs_pg_first_log, warm p50 against
//     PostgreSQL's launch → the worker's first log line, 1.0 ms (no
//     target), and pool.cold.p50 beside the naive child (target p50 <= 5
//     ms). The naive child is the role "pool-exec-byte": the same binary
//     re-executed, which writes one byte on fd 3 from ChildMain (no actor
//     system), timed from exec to that byte, so the ratio is what the
//     runtime adds over exec → main.
//   - Restart: a worker with Restart actors.Fixed(0) and no restart limit on
//     each runtime, SIGKILLed through a pidfd (pid from its Running event)
//     and timed to its next Running event, 30 kills each after two
//     warm-ups, alternating, each after the warm pool is full again and 5
//     ms. The same pidfd, polled until it is readable, times the kernel's
//     teardown of that very child, SIGKILL → exited, whoever reaps it. Rows:
//     pool.restart.p50, warm p50 against that teardown's p50 plus the warm
//     start p50 of this run, what a restart cannot avoid (target ratio <=
//     1.1), and pool.restart.vs_cold, warm p50 beside cold p50 (target p50
//     <= 1.5 ms).
//
// Suite reset: two runtimes side by side, each with 8 dynamic
// bench-reset-shm workers (Restart Fixed(0), unlimited), GroupStopTimeout
// 1 s, GroupResetIntensity unlimited (MaxRestarts -1), one with WarmPool 8
// and one with WarmPool -1. Each reset SIGKILLs one member (rotating) and
// is timed to the last of 8 Running events with a higher incarnation after
// the SegmentEvent with Reset; 15 resets each after two warm-ups,
// alternating, each after the warm runtime's pool is full again and 10 ms.
// Rows: reset.warm.p50 beside cold p50 (target p50 <= 20 ms and ratio <=
// 0.15), reset.warm.vs_pg, warm p50 against PostgreSQL's crash restart,
// 73.3 ms (target ratio <= 0.05), and reset.cold.p50 beside the same
// (target p50 <= 20 ms). stderr splits each reset: kill → GroupResetEvent,
// → the last other member's exit (stop of the others), → SegmentEvent
// (rebuild), → the last Starting event (assignments or spawns), → all
// Running.
//
// Both suites take 5–15 s on two cores; -n scales the counts.
//
// # Upgrade
//
// Suite "upgrade": a host process (this binary in the role upgrade-host)
// runs N bench-echo workers (N = 10, then 100) and one loop that requests
// each in turn, stamping CLOCK_MONOTONIC (one clock across processes and
// exec's) into a memfd shared with every image of the host: its first
// answer, its first full round, its latest answer. The suite tells it,
// alternately, "upgrade" (Runtime.Upgrade to the same binary; every worker
// runs on) and "restart" (a fast shutdown, then an exec of the same binary
// that starts every worker afresh: the cheapest full restart, with no fork
// and no supervisor in between), one of each to warm up, then 8 of each
// (-n scales, at least 3). Rows: upgrade.pause.wN, the old image's last
// answer → the new image's first, and upgrade.all.wN, → every worker has
// answered the new image, each p50 beside the restart's p50 (no target).
// The check-mode run of the new binary comes before the quiesce and is not
// in the pause: the old image answers throughout it. About 4 s in all.
//
// # PostgreSQL
//
// There is no PostgreSQL server where the bench runs, so its numbers are
// quoted, not measured in the same run: PostgreSQL 15 with worker_spi,
// measured on 2026-12-01 on the machine of that day's bench runs (2 vCPU
// AMD EPYC KVM guest, Linux 6.18). Dynamic launch, returning
// once forked: 260 µs median (242–338); launch → the worker's first log
// line: 1.0–1.3 ms; kill -9 of a worker → every worker back: 73.3 ms; fast
// shutdown with 16 workers: 26.8 ms. Their rows name "PG 15 worker_spi,
// 2026-12-01, quoted" in the baseline.
package bench
