// Package proc is the production launcher: each child is the host binary
// re-executed, with one end of a close-on-exec socketpair as fd 3 (the
// bridge), in a process group of its own, spawned from one goroutine
// locked to its OS thread (so the parent-death signal cannot fire when the
// Go scheduler retires a thread), watched through a pidfd, reaped exactly
// once, signalled only through os.Process or its still-unreaped group.
// Its stdout and stderr are logged line by line. One watchdog judges every
// child's liveness from what it sends, and drains the beat pipe each child
// gets (bridge.EnvBeat) at its ticks.
package proc
