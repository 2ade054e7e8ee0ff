// Package crasher registers workers that show how the runtime treats
// crashes and dynamic workers.
//
// Blank-importing it registers "crasher" ([Name]), started at
// phases.ConsistentState with an exponential restart policy ([Restart]:
// 100ms doubling up to 2s, 20% jitter). With an Arg of the form
// "crash-after=DURATION" (see [CrashArg]) every run panics after that
// delay, a Go panic exits the child with code 2 (reason "exit2") and the
// postmaster restarts it after a growing backoff; after more than the
// default restart intensity (10 restarts within 60 s) it is failed. With
// any other Arg it runs until it is asked to stop.
//
// It also defines "ticker" ([TickerType]), code that is not started by
// itself: a host starts it as dynamic workers with Runtime.StartWorker and
// a spec whose Type is "ticker". A ticker logs a line every second until
// it is asked to stop.
package crasher
