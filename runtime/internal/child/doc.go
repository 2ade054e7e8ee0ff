// Package child is a child process's side of the bridge: what the host
// binary does when the postmaster re-executes it. It says hello on fd 3,
// is welcomed, builds its actor system, reports idle, is assigned its
// worker (with the shared segment for a shared-memory worker), runs it as
// a protoactor actor and reports ready, beats while its bridge is
// quiet, and ends by the exit contract: goodbye and exit 0 when the worker
// is done, exit 1 to be restarted, exit 2 on a panic. It kills its whole
// process group and exits when the bridge reaches EOF or the parent-death
// signal arrives: the postmaster is gone.
//
// In the child, a message from the host is handled by the goroutine that
// read it: the bridge reader runs the worker actor's mailbox at the end of
// its batch of frames (a long batch is handled beside a new reader
// instead), and goes on reading on a new goroutine as soon as the worker
// sends a request of its own or holds it for more than a second (checked
// at each heartbeat). Worker Props that set their own dispatcher or
// mailbox keep them.
//
// runtime.Main is the public entry point; this package is its body.
package child
