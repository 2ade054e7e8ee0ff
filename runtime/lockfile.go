package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by Start when Config.LockFile is held by another
// runtime or by a process it left behind.
var ErrLocked = errors.New("runtime: lock file is held")

// lockFile takes an exclusive flock on path for the runtime's life. The
// descriptor is inherited by every child (fd 4), and by whatever a child
// execs, so the lock is held as long as any process of this runtime
// lives: a second runtime that finds it held refuses to start, naming the
// processes that hold it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime: lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by pid %s; a runtime or a process it started is still alive (stop it, then start again)",
				ErrLocked, path, holders(f))
		}
		return nil, fmt.Errorf("runtime: lock file %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holders lists the pids that have the lock file open, found through
// /proc/*/fd (same device and inode).
func holders(f *os.File) string {
	var want syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &want); err != nil {
		return "unknown"
	}
	self := os.Getpid()
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join("/proc", e.Name(), "fd", fd.Name()), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
				pids = append(pids, e.Name())
				break
			}
		}
	}
	if len(pids) == 0 {
		return "unknown"
	}
	return strings.Join(pids, ", ")
}
