// Package sample holds worker packages that show how to build on bgworker,
// in the spirit of PostgreSQL's worker_spi module, and a demo host that
// runs them.
//
// A worker package registers its workers from init(), the way a module
// named in shared_preload_libraries calls RegisterBackgroundWorker from
// _PG_init; a host service blank-imports the package and every runtime it
// creates starts those workers:
//
//   - [github.com/bgworker/bgworker/sample/spi]: a connected worker
//     (Spec.Connect) that wakes every naptime and folds its work into a
//     host-side "store" actor, as worker_spi runs SQL in a loop; the
//     package also provides the store actor for the host.
//   - [github.com/bgworker/bgworker/sample/crasher]: a worker that panics
//     on demand, to show crash handling and exponential restart backoff,
//     and "ticker" code for dynamic workers.
//   - sample/cmd/bgwdemo: a host that embeds the runtime as a real service
//     would: a simulated recovery, the phases, the HTTP endpoint, a live
//     status table, dynamic workers and signal-driven shutdown.
//
// Run the demo with
//
//	go run ./sample/cmd/bgwdemo -duration 10s
//
// and, while it runs, curl http://127.0.0.1:9464/workers or /metrics.
package sample
