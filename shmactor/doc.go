// Package shmactor is the shared memory of a bgworker runtime: one sealed
// memfd segment per generation, holding named regions that workers request,
// with typed atomics, a cross-process lock and a single-producer
// single-consumer message queue in them. It is PostgreSQL's shared memory
// (RequestAddinShmemSpace, ShmemInitStruct, shm_mq, LWLocks) for processes
// that share nothing else. It is Linux only, and depends on nothing else in
// this module.
//
// # Segments and regions
//
// The host collects the [Region]s that its shared-memory workers request and
// calls [Build] once per generation. Build lays out a header page and then
// each region at a multiple of [RegionAlign] (a cache line), creates a memfd,
// maps it shared, writes the header, runs every [Region.Init] once on zeroed
// memory, and seals the memfd against shrinking and growing. The host passes
// [Segment.File] to each shared-memory worker (as an exec.Cmd extra file) and
// the worker maps it with [Open], which insists on the seals (so that no one
// can truncate the segment under a mapping and fault its readers with
// SIGBUS) and validates the header strictly: a corrupt header is an error,
// never a panic.
//
//	seg, err := shmactor.Build(gen, []shmactor.Region{
//		{Name: "stats", Size: 4096},
//		{Name: "jobs", Size: shmactor.QueueSize(1 << 20), Init: func(mem []byte) {
//			if err := shmactor.InitQueue(mem); err != nil {
//				panic(err)
//			}
//		}},
//	})
//	...
//	cmd.ExtraFiles = []*os.File{seg.File()} // fd 3 in the child
//
//	// in the child:
//	seg, err := shmactor.Open(os.NewFile(3, "shm"))
//	jobs, err := seg.Region("jobs")
//
// The host never reads the header back: it keeps the layout it computed, so
// a worker that scribbles on the segment cannot mislead it. More generally,
// the runtime's own bookkeeping never lives in shared memory.
//
// # Atomics and locks
//
// [Uint64At], [Int64At] and [Uint32At] give sync/atomic values over words of
// a region, shared by every process that maps it. [MutexAt] gives a [Mutex],
// a futex-based lock on a 32-bit word: uncontended Lock and Unlock are one
// atomic instruction each, and waiters sleep in the kernel.
//
// # Queues
//
// A queue ([InitQueue], [AttachSender], [AttachReceiver]) is a ring of
// variable-length messages from one process to one other, after shm_mq.
// [Sender.Send] copies a message into the ring and [Receiver.Receive] copies
// it out. The read and write counters sit on cache lines of their own and
// each side keeps a private copy of the other's, rereading it only when the
// ring looks full (or empty); a side that finds nothing to do polls briefly,
// then announces that it sleeps and sleeps on a futex, and the other side
// makes the wake-up system call only after such an announcement. A busy
// stream therefore costs no system call at all.
//
// A message is published whole, so a receiver never sees part of one, even
// from a sender killed mid-copy, and a cancelled Send or Receive changes
// nothing. Hence a message must fit in the ring: a larger one fails with
// [ErrTooLarge] rather than being chunked; size the ring with [QueueSize].
//
// Each side records its pid in the queue when it attaches. A side that
// detaches is reported to the other as [ErrDetached]; so is a side whose
// process exits, which the other notices with a pidfd (never by signalling
// a pid that may have been reused) each time it would sleep, at least every
// [WaitSlice]. A receiver first gets every message sent before the sender
// went.
//
// # Crashes and generations
//
// Shared memory is only as sound as the least careful process that maps it.
// As in PostgreSQL, the death of any shared-memory worker within a generation
// is taken to have possibly corrupted the segment, so the runtime resets the
// whole shared-memory group: it stops the group's workers, closes the
// segment, builds the next generation from scratch (every Init runs again on
// fresh zeroed memory) and restarts them. Nothing survives from one
// generation to the next; in particular a [Mutex] held by a dead process
// cannot wedge the next generation, whose lock words all start unlocked.
//
// # Lifecycle
//
// Build and Open are one-shot per Segment; [Segment.Close] is idempotent.
// Slices from [Segment.Region] must not be used after Close. A queue endpoint
// is attached once and detached once ([Sender.Detach], [Receiver.Detach],
// both idempotent); detach endpoints before closing their segment.
package shmactor
