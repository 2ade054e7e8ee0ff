// Package clusterbench measures runtime/cluster against protoactor-go's
// own cluster and remote, in the same run, on three member processes on
// 127.0.0.1 (this binary re-executed, see [ChildMain]). It is a package
// and a command of its own (bench/cmd/bgwclusterbench) so that bgwbench,
// whose children are re-executions of itself, links no grpc.
//
// Every member has the same provider settings (static peers, heartbeat
// every [Interval], lease and failure detection [Lease]), the
// cluster-scoped worker [Worker] (it echoes a 64-byte BytesValue), a
// protoactor grain kind [GrainKind] whose grain has the worker's identity
// (so rendezvous hashing places both on the same member), and a plain
// remote echo actor.
//
//   - Failover: SIGKILL of the member that owns the worker, timed to the
//     worker's ready report on the member that takes it over (both
//     timestamps from one machine's clock), p50 over at least 10 kills of
//     each of two kinds, alternating: "settled", where the owner has held
//     the worker for a lease (every member has seen it up, and heartbeats
//     have renewed the grants of its placement), as in a running cluster;
//     and "fresh", where it is killed as soon as both survivors have seen
//     it up again and it has taken the worker back, so that the grants
//     are still those of the placement's lease request. The killed member
//     is restarted between kills and the worker moves back to it.
//     Baseline, from the same kills: protoactor's grain re-activation,
//     timed to the first answer from another member to a loop of cluster
//     requests (20 ms timeout per try) started by a third member right
//     after the kill, and a second loop started once that member saw the
//     owner down. Target, for each kind: failover p50 <= the failure
//     detection p50 plus 1.2 × a warm start p50 (StartWorker →
//     WaitStarted with the default pool, measured on the third member in
//     the same run). A failure counts as detected once both survivors (a
//     quorum of three) have seen the owner down: only then have both of
//     their grants of the lease run out (a member is not taken as down
//     while a grant to it still runs). The new owner's own view, the
//     per-kill excess over the detection, the wait for the lease after
//     the new owner's detection, its start (placed → ready), and a warm
//     start of the worker's own code are printed beside it, and every
//     kill on stderr.
//   - Request by name: Cluster.Request from a member that does not hold the
//     worker, one at a time, 5 rounds of 1,000 after 300 warm-ups. Baseline,
//     interleaved round by round: a raw protoactor remote RequestFuture
//     between the same two members to the plain echo actor. Target: p50
//     ratio <= 1.5. The p99 row has no target. Beside it, the bridge round
//     trip that a request by name pays on the holder (a request to the
//     worker through the runtime's PID, from the holder itself), and the
//     difference of the two p50s against it.
//
// A run takes about two minutes on two cores; -n scales the counts.
package clusterbench
