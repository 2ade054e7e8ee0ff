// Package phases names the start phases at which a worker may be started and
// the modes in which the runtime shuts down, after PostgreSQL's
// bgw_start_time and its smart, fast and immediate shutdown modes.
//
// # Start phases
//
// A runtime moves forward through three phases, in this order:
//
//	PostmasterStart < ConsistentState < RecoveryFinished
//
// A worker names the phase it waits for in its spec; the runtime starts it
// once that phase has been entered (see runtime.Runtime.Advance). A phase,
// once entered, is never left, except by an all-for-one reset of the
// shared-memory group, which re-enters the phases from ConsistentState for
// that group only.
//
// # Shutdown modes
//
// Smart waits for workers to finish by themselves; Fast asks them to stop
// (SIGTERM) and kills them after their grace period; Immediate kills them at
// once. A runtime that owns the process signals maps SIGTERM, SIGINT and
// SIGQUIT to Smart, Fast and Immediate, as PostgreSQL's postmaster does.
package phases
