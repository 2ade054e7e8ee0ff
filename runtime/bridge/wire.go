package bridge

import "syscall"

// What a child process inherits besides the socket's frames: the marker
// in its environment, its descriptors, and the exit codes of the protocol.
const (
	// EnvChild marks a child process and carries the handshake cookie, in
	// hex. The marker alone does not make a child: fd ChildFD must be a
	// socket whose peer completes the handshake.
	EnvChild = "BGWORKER_CHILD"
	// ChildFD is the bridge socket's descriptor in the child.
	ChildFD = 3
	// LockFD is, when the host holds a lock file, the child's inherited
	// descriptor of it: the lock stays held while any child lives. Shared
	// memory does not come by inheritance: the segment's memfd is passed
	// with the Assign frame (SCM_RIGHTS), to shared-memory workers only.
	LockFD = 4
	// ExitRefused is the exit code of a binary started in child mode by
	// hand, without a bridge or a handshake.
	ExitRefused = 64
	// EnvCgroup carries, in a child's environment, the directory of its
	// cgroup v2 leaf, which the child kills when its host is gone.
	EnvCgroup = "BGWORKER_CGROUP"
	// ExitLost is the exit code of a child whose host went away (EOF on the
	// bridge, or the parent-death signal).
	ExitLost = 1
	// EnvProcs, set to ProcsRaise beside GOMAXPROCS=1 in a child's
	// environment, says that the launcher chose that one P: the child
	// starts and waits idle on one, and takes the Go runtime's default
	// (runtime.SetDefaultGOMAXPROCS, then kept fixed) once its worker runs.
	// Where the host's environment sets GOMAXPROCS itself, the launcher
	// leaves it alone and sets no EnvProcs.
	EnvProcs = "BGWORKER_GOMAXPROCS"
	// ProcsRaise is EnvProcs's value.
	ProcsRaise = "raise"
	// EnvBeat names, in a child's environment, the descriptor of the write
	// end of its beat pipe (Conn.SetBeat): a quiet child proves it is alive
	// by writing a byte there instead of sending a heartbeat frame, so
	// that its host's watchdog reads every child's beats in one pass and
	// no reader wakes for them. Without it, or once the host no longer
	// reads the pipe (EPIPE: a host image that did not keep it), beats are
	// heartbeat frames on the bridge.
	EnvBeat = "BGWORKER_BEAT_FD"
)

// DeathSignal is a child's parent-death signal (PR_SET_PDEATHSIG): on it,
// and on EOF of the bridge, the child kills its whole process group, so
// the worker's own children do not outlive a host that could not reap
// them. It is caught, not fatal, for that reason.
const DeathSignal = syscall.SIGUSR2
