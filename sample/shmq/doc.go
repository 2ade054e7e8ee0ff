// Package shmq is a pair of shared-memory sample workers, like PostgreSQL's
// test_shm_mq: a producer streams messages to a consumer through a
// single-producer single-consumer queue in the shared segment, and both
// keep counters in a shared region that the host reads directly.
//
// They register in init(), so a host takes them by blank-importing this
// package. Both start at ConsistentState, when the segment exists. Because
// they hold shared memory they are one all-for-one group: if either
// crashes, both are stopped, the segment is rebuilt (the counters and the
// queue start again from zero) and both restart, as PostgreSQL reinitialises
// shared memory after a backend crash. The producer can be asked to crash
// once, in the first generation, to show it (see CrashArg).
package shmq
