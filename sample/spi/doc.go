// Package spi is the bgworker counterpart of PostgreSQL's worker_spi
// sample module.
//
// Blank-importing it registers one worker, "spi_counter" ([Name]): a
// connected worker (Spec.Connect) started at phases.RecoveryFinished. Every
// naptime it sends a [Fold] to the host actor exposed as "store"
// ([StoreName]), as worker_spi's main loop runs an UPDATE every naptime,
// and every few rounds it asks the store for the [Total] and logs the
// [Sum]. It returns nil (exit 0, done) when asked to stop, and an error
// (exit 1, restart after one second, PostgreSQL's bgw_restart_time) when
// the store cannot be reached.
//
// The host provides the store before it starts the runtime:
//
//	pid := rt.System().Root.Spawn(spi.NewStoreProps())
//	if err := rt.Expose(spi.StoreName, pid); err != nil { ... }
//
// The worker's Arg is its naptime as a Go duration ("250ms"); empty means
// [DefaultNaptime].
package spi
