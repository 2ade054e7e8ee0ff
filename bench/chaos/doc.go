// Package chaos is the runtime's chaos soak, run by bench/cmd/bgwchaos:
//
//	go run ./bench/cmd/bgwchaos -duration 10m
//
// It starts a host (the same binary re-executed in host mode, [HostMain])
// as a subprocess it can SIGKILL, on a LockFile in a temporary directory,
// injects faults at random for the duration, and checks invariants the
// whole time. It prints the figures at the end ([Report.Print]) and the
// command exits 1 on any violation, naming it.
//
// # The host
//
// One runtime with HeartbeatInterval 250 ms, HeartbeatTimeout 2 s, a warm
// pool of 3, GroupStopTimeout 500 ms, unlimited restarts (Fixed 100 ms) and
// unlimited all-for-one resets, and these workers:
//
//   - plain-1, plain-2: block until stopped.
//   - escaper-1, escaper-2: keep a `sleep` in a new session (setsid) that
//     shares their stdout and stderr, restarting it when it is killed, and
//     leave it behind when stopped.
//   - leaver: starts such a `sleep`, then exits 1 after 2–6 s (restarted
//     after 500 ms), leaving it behind.
//   - shm-0, shm-1, shm-2: shared-memory workers (the all-for-one group)
//     that write their pid and segment generation into their slot of a
//     ledger region and mark it dirty, every 5 ms.
//
// Every process of a run carries the environment variable BGWCHAOS_RUN
// with the run's id, inherited by everything the host starts, so a process
// that left the process group, the session or the cgroup is still found in
// /proc/*/environ. The host appends to a journal every worker exit its
// Subscribe hook reports (name, incarnation, reason), every all-for-one
// reset, and its checks of shared memory: each new generation, checked as
// the postmaster publishes it, before any member has it (its generation,
// the region initialised, no dirty mark and no slot of the old one), and
// every 300 ms that each member running for 2 s writes its own pid and the
// current generation (never a mix of generations). On SIGTERM it calls
// Shutdown(ctx with a 10 s timeout, Fast) and prints how long it took.
//
// # Faults
//
// Every 150–900 ms one of: SIGKILL of a worker; SIGSTOP of a worker for
// 0.1–0.5 s (short: it must survive) or for 5–7 s (long: it must be killed
// as heartbeat_timeout), then SIGCONT; the same three for an idle pool
// child; SIGKILL of an escaped grandchild. About every 45 s the host itself
// is stopped, short or long, and continued; about every 75 s (after 30 s of
// life) it is SIGKILLed and a new host is started on the same LockFile.
// Every 40 s the binary is started in child mode with a valid cookie and a
// socket whose peer never sends Welcome. Signals go through pidfds, and
// only to processes that carry the run's id.
//
// # Invariants
//
// Checked every 250 ms (a finding must persist 2 s to count, so a process
// caught between two steps of its cleanup is not one):
//
//   - no orphan: every process of the run descends from the live host;
//   - no zombie: no child of the host stays unreaped;
//   - /workers and /proc agree: no row names a pid that is gone, a zombie
//     or not the host's child.
//
// At each settle point (every 20 s, before and after each host pause and
// kill, and at the end: every stop resumed, every injection accounted
// for, every worker but the leaver running, the pool full; within 20 s):
//
//   - every injected kill or long stop of a worker is exactly one exit of
//     that incarnation, with a fitting reason (signal:KILL or
//     heartbeat_timeout; group_reset or shutdown where the runtime was
//     ending it anyway); a short stop is never a heartbeat_timeout; no
//     other exit happens (the leaver's exit1 and the group's group_reset
//     excepted);
//   - every kill or long stop of an idle pool child costs one idle child
//     (bgworker_pool_idle_lost_total), or is the exit of the worker the
//     postmaster had just handed it to (matched by the exit's pid), and
//     nothing else costs one;
//   - the metrics agree with the journal (bgworker_worker_exits_total,
//     bgworker_shmem_resets_total), and no reset happens without a crash;
//   - the host's children that no row names are exactly its pool;
//   - the host's fds other than memfds stay within 12 of its first settled
//     count in the same life, its memfds do not grow (one segment is
//     live), its goroutines stay within 24 and its RSS within max(2×,
//     +64 MiB);
//   - a host pause, short or long, costs no worker and no idle child.
//
// After a SIGKILL of the host every process of it is gone within 3 s (the
// time is measured), and the next host starts on the same LockFile. The
// child-mode start without Welcome exits within 12 s. The final Shutdown
// returns within its 10 s context without error, and nothing of the run is
// left after it.
//
// -nocgroups runs the host with Config.NoCgroups, the process groups that
// were all the runtime had before its cgroup per child; -seed replays a
// fault schedule (the timing of the machine still varies); -keep keeps the
// host logs and the journal, which are kept anyway when something failed.
package chaos
