// Package cgroup gives each child process of a runtime a cgroup v2 leaf of
// its own: it is started inside it (clone3 with CLONE_INTO_CGROUP, through
// syscall.SysProcAttr.UseCgroupFD), it is killed with everything it started
// by one write to cgroup.kill, which reaches processes that left the
// process group or the session (setsid, double forks), and its memory, CPU
// and task limits are written to memory.max, cpu.max and pids.max where
// those controllers are available. It is a small layer over the cgroup2
// file system and golang.org/x/sys/unix; it does not use systemd or D-Bus.
//
// # Where it works
//
// Open finds the process's cgroup from /proc/self/cgroup (the "0::" line)
// and the cgroup2 mount from /proc/self/mountinfo. That covers a pure v2
// system (/sys/fs/cgroup), the hybrid layout (v1 controllers under
// /sys/fs/cgroup/<controller>, cgroup2 at /sys/fs/cgroup/unified, usually
// with no controllers), a systemd service with Delegate=yes, and a
// container with a writable cgroup2 mount. It needs the right to create
// directories below the process's cgroup and Linux 5.14 (cgroup.kill).
// When it cannot be used, Open returns an error wrapping ErrUnavailable that
// says why, once; the caller falls back to process groups.
//
// # Layout
//
//	<own cgroup>/bgworker-<pid>-<starttime>/          the process's home
//	<own cgroup>/bgworker-<pid>-<starttime>/postmaster this process, when it had to move
//	<own cgroup>/bgworker-<pid>-<starttime>/rt-<n>/    one Manager (one runtime)
//	<own cgroup>/bgworker-<pid>-<starttime>/rt-<n>/<leaf>  one child
//
// cgroup v2 allows no process in a cgroup that enables a controller for
// its children (the root excepted). So when limits are possible (the own
// cgroup offers memory, cpu or pids) and the own cgroup is not the root,
// the process first moves itself into the postmaster leaf of its home,
// then enables the controllers below its own cgroup; the last Manager's
// Close undoes both. Several Managers in one process share the home.
//
// A runtime that is SIGKILLed cannot remove its home. The next Open in the
// same cgroup removes the empty homes of processes that are gone (the pid
// and its start time name the owner, so a recycled pid is not mistaken for
// it) and reports, without touching them, those that still hold processes
// (Manager.Swept).
//
// # Limits
//
// Limits that need a controller the process cannot enable are refused by
// CheckLimits and SetLimits with an error wrapping ErrLimitsUnavailable
// that names the controller and why (for example, on a hybrid system,
// "memory: the memory controller is not in .../cgroup.controllers").
// memory.oom.group is set with memory.max, so an OOM kill takes the whole
// leaf; Leaf.OOMKills reads memory.events so the caller can tell an OOM kill
// from any other SIGKILL.
package cgroup
