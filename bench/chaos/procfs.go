package chaos

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// proc is one process of the run, read from /proc.
type proc struct {
	pid, ppid int
	state     string // R, S, D, T, Z, ...
	comm      string
}

// scanTagged returns every process whose environment carries the run's
// tag: the host, its children and whatever they started, and anything of
// theirs that outlived them. Every process of the run inherits the tag, so
// a process that left the process group, the session or the cgroup still
// carries it.
func scanTagged(tag string) map[int]proc {
	want := []byte(envTag + "=" + tag + "\x00")
	out := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}

// readProc reads pid's state, parent and command from /proc/<pid>/stat.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return proc{}, false
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 2 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return proc{pid: pid, ppid: ppid, state: f[0], comm: s[i+1 : j]}, true
}

// tagged reports whether pid is a live process of the run.
func tagged(pid int, tag string) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && bytes.Contains(env, []byte(envTag+"="+tag+"\x00"))
}

// signalTagged sends sig to pid through a pidfd, and only if pid is still a
// process of the run (a pid read a moment ago may have been recycled).
func signalTagged(pid int, sig unix.Signal, tag string) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if !tagged(pid, tag) { // checked once the pidfd pins the process
		return false
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0) == nil
}

// rootOf follows p's parents while they are processes of the run and
// returns the first one whose parent is not.
func rootOf(ps map[int]proc, pid int) int {
	for range 64 {
		p, ok := ps[pid]
		if !ok {
			return pid
		}
		if _, up := ps[p.ppid]; !up {
			return pid
		}
		pid = p.ppid
	}
	return pid
}

// resources are the host's own counts.
type resources struct {
	fds, memfds int
	rss         int64 // bytes
	goroutines  int
}

// hostResources reads the host's fds, memfds and RSS from /proc.
func hostResources(pid int) (resources, bool) {
	var r resources
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return r, false
	}
	r.fds = len(ents)
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "/memfd:") {
			r.memfds++
		}
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return r, false
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			r.rss = kb << 10
		}
	}
	return r, true
}
