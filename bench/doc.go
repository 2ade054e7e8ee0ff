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
// # Suite shm
//
// The shared memory of package shmactor against the same work in one
// process: a queue of 4 KiB messages to a child against copy() (target
// ratio >= 0.5), and atomic adds by two processes on the segment against two
// goroutines on a private page (target ratio >= 0.9). See shm.go.
package bench
