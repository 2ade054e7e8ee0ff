package bench

// PostgreSQL's reference numbers. There is no PostgreSQL server where the
// bench runs, so these are quoted, not measured in the same run: PostgreSQL
// 15 with the worker_spi module, measured on 2026-12-01 on the machine the
// bench's own numbers of that day come from (2 vCPU AMD EPYC KVM guest,
// Linux 6.18). Rows that use one say so in their
// baseline's name.
const (
	// pgRef names the source in the rows' baseline names.
	pgRef = "PG 15 worker_spi, 2026-12-01, quoted"

	// pgForkLaunchMS is a dynamic background worker's launch, returning
	// once the worker is forked: median 260 µs (242–338).
	pgForkLaunchMS = 0.260
	// pgFirstLogMS is launch → the worker's first log line: 1.0–1.3 ms
	// (the lower end is used, the harder one to beat).
	pgFirstLogMS = 1.0
	// pgCrashRestartMS is kill -9 of a worker → every worker back (the
	// postmaster restarts every process after a crash): 73.3 ms.
	pgCrashRestartMS = 73.3
	// pgFastShutdownMS is a fast shutdown with 16 workers: 26.8 ms.
	pgFastShutdownMS = 26.8
)
