package cgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Errors. Every error of this package that says cgroups or limits cannot be
// used wraps one of them; the rest of the message says why.
var (
	// ErrUnavailable: cgroup v2 cannot be used by this process (not
	// mounted, read-only, no permission, a kernel without cgroup.kill).
	ErrUnavailable = errors.New("cgroup v2 is not usable")
	// ErrLimitsUnavailable: a resource limit was asked for whose
	// controller (memory, cpu, pids) is not available to this process.
	ErrLimitsUnavailable = errors.New("resource limits are unavailable")
)

// DefaultControllers are the controllers Open enables for leaves when the
// process's cgroup has them: those behind Limits.
var DefaultControllers = []string{"memory", "cpu", "pids"}

// Options configures Open. The zero value is the default.
type Options struct {
	// Controllers to enable for the leaves where the process's cgroup
	// offers them. nil = DefaultControllers; empty = none (no limits).
	Controllers []string
}

// Manager is one runtime's subtree: a directory under the process's home
// (see the package documentation) holding one leaf per child. Its methods
// are safe for concurrent use.
type Manager struct {
	dir         string   // the subtree's directory
	controllers []string // enabled for leaves
	limitsErr   error    // why limits are not available (nil when every default controller is)
	missing     map[string]string
	home        *home

	mu     sync.Mutex
	leaves map[string]*Leaf
	closed bool
}

// home is the process's own part of the hierarchy, shared by every
// Manager of the process: which cgroup a process is in is process-wide
// state, so two runtimes in one process must not each move it. It is
// package state for that reason alone.
type home struct {
	own, ownDir string // the process's cgroup (as in /proc/self/cgroup) and its directory
	dir         string // <ownDir>/bgworker-<pid>-<starttime>
	moved       bool   // the process moved itself into <dir>/postmaster
	enabledOwn  []string
	controllers []string
	missing     map[string]string // controller → why it is not available
	swept       int
	stale       []string
	refs        int
	seq         int
}

var (
	homeMu  sync.Mutex
	theHome *home
)

// Open makes a subtree for one runtime. It fails with an error wrapping
// ErrUnavailable that says why when cgroup v2 cannot be used here; the
// caller then falls back to process groups. Controllers that cannot be
// enabled do not make it fail: they are reported by CheckLimits.
func Open(opts Options) (*Manager, error) {
	ctrls := opts.Controllers
	if ctrls == nil {
		ctrls = DefaultControllers
	}
	homeMu.Lock()
	defer homeMu.Unlock()
	h := theHome
	if h == nil {
		var err error
		if h, err = openHome(ctrls); err != nil {
			return nil, err
		}
	}
	h.seq++
	dir := filepath.Join(h.dir, "rt-"+strconv.Itoa(h.seq))
	if err := os.Mkdir(dir, 0o755); err != nil {
		if h.refs == 0 {
			h.close()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	m := &Manager{dir: dir, home: h, leaves: map[string]*Leaf{}, missing: map[string]string{}}
	for _, c := range ctrls {
		if why, ok := h.missing[c]; ok {
			m.missing[c] = why
			continue
		}
		if !slices.Contains(h.controllers, c) {
			m.missing[c] = "not asked for when this process's cgroups were set up"
			continue
		}
		if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil {
			m.missing[c] = fmt.Sprintf("cannot enable it in %s: %v", dir, err)
			continue
		}
		m.controllers = append(m.controllers, c)
	}
	h.refs++
	theHome = h
	return m, nil
}

// openHome finds the process's cgroup, sweeps the subtrees of dead
// processes, makes the home directory and, when controllers are to be
// enabled below a cgroup that is not the root, moves the process into a
// leaf of its own first: cgroup v2 allows no process in a cgroup whose
// subtree_control enables a controller.
func openHome(ctrls []string) (*home, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	mounts, err := ParseMountInfo(mi)
	mi.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	pc, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	own, err := ParseProcCgroup(pc)
	pc.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ownDir, mt, err := Resolve(mounts, own)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if mt.ReadOnly {
		return nil, fmt.Errorf("%w: cgroup2 at %s is mounted read-only", ErrUnavailable, mt.Point)
	}
	h := &home{own: own, ownDir: ownDir, missing: map[string]string{}}
	h.swept, h.stale = sweep(ownDir)
	start, err := selfStartTime()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	h.dir = filepath.Join(ownDir, fmt.Sprintf("%s%d-%d", homePrefix, os.Getpid(), start))
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		why := err.Error()
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
			why = fmt.Sprintf("cannot create a cgroup in %s (%v); it needs root, systemd's Delegate=yes, or a writable cgroup2 mount", ownDir, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, why)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "cgroup.kill")); err != nil {
		os.Remove(h.dir)
		return nil, fmt.Errorf("%w: %s has no cgroup.kill (it needs Linux 5.14 or later)", ErrUnavailable, h.dir)
	}
	// Which of the wanted controllers the process's cgroup offers.
	var offered []string
	if b, err := os.ReadFile(filepath.Join(ownDir, "cgroup.controllers")); err == nil {
		offered = strings.Fields(string(b))
	}
	var avail []string
	for _, c := range ctrls {
		if slices.Contains(offered, c) {
			avail = append(avail, c)
		} else {
			h.missing[c] = fmt.Sprintf("the %s controller is not in %s (offered: %q); on a hybrid cgroup v1/v2 system it is bound to v1", c, filepath.Join(ownDir, "cgroup.controllers"), strings.Join(offered, " "))
		}
	}
	if len(avail) == 0 {
		return h, nil
	}
	_, err = os.Stat(filepath.Join(ownDir, "cgroup.type"))
	isRoot := errors.Is(err, fs.ErrNotExist) // only the root cgroup lacks cgroup.type
	if !isRoot {
		leaf := filepath.Join(h.dir, "postmaster")
		if err := os.Mkdir(leaf, 0o755); err != nil {
			for _, c := range avail {
				h.missing[c] = fmt.Sprintf("cannot make a leaf for this process: %v", err)
			}
			return h, nil
		}
		if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			os.Remove(leaf)
			for _, c := range avail {
				h.missing[c] = fmt.Sprintf("cannot move this process into %s: %v", leaf, err)
			}
			return h, nil
		}
		h.moved = true
	}
	sc := filepath.Join(ownDir, "cgroup.subtree_control")
	for _, c := range avail {
		if enabled(sc, c) {
			continue
		}
		if err := writeFile(sc, "+"+c); err != nil {
			why := fmt.Sprintf("cannot enable it in %s: %v", sc, err)
			if errors.Is(err, syscall.EBUSY) {
				why += fmt.Sprintf(" (%s still holds processes: %s)", ownDir, procList(ownDir))
			}
			h.missing[c] = why
			continue
		}
		h.enabledOwn = append(h.enabledOwn, c)
	}
	for _, c := range avail {
		if _, bad := h.missing[c]; bad {
			continue
		}
		if err := writeFile(filepath.Join(h.dir, "cgroup.subtree_control"), "+"+c); err != nil {
			h.missing[c] = fmt.Sprintf("cannot enable it in %s: %v", h.dir, err)
			continue
		}
		h.controllers = append(h.controllers, c)
	}
	if len(h.controllers) == 0 && h.moved {
		h.moveBack() // nothing gained by having moved
	}
	return h, nil
}

// moveBack undoes the move into the postmaster leaf: the controllers this
// process enabled in its own cgroup are disabled again (no process may be
// in a cgroup that enables one), then the process returns there.
func (h *home) moveBack() error {
	if !h.moved {
		return nil
	}
	sc := filepath.Join(h.ownDir, "cgroup.subtree_control")
	_ = writeFile(filepath.Join(h.dir, "cgroup.subtree_control"), disable(h.controllers))
	if len(h.enabledOwn) > 0 {
		if err := writeFile(sc, disable(h.enabledOwn)); err != nil {
			return fmt.Errorf("cgroup: cannot disable %v in %s again, so this process stays in %s: %w", h.enabledOwn, sc, filepath.Join(h.dir, "postmaster"), err)
		}
		h.enabledOwn = nil
	}
	if err := writeFile(filepath.Join(h.ownDir, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("cgroup: cannot move this process back to %s: %w", h.ownDir, err)
	}
	h.moved = false
	h.controllers = nil
	return os.Remove(filepath.Join(h.dir, "postmaster"))
}

// close removes the home once no Manager uses it.
func (h *home) close() error {
	err := h.moveBack()
	if err == nil {
		if rerr := os.Remove(h.dir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("cgroup: %w", rerr)
		}
	}
	return err
}

func disable(cs []string) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = "-" + c
	}
	return strings.Join(s, " ")
}

func enabled(subtreeControl, c string) bool {
	b, err := os.ReadFile(subtreeControl)
	return err == nil && slices.Contains(strings.Fields(string(b)), c)
}

func procList(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	s := strings.Join(strings.Fields(string(b)), ", ")
	if s == "" {
		return "none listed"
	}
	return s
}

// homePrefix names the home of a process: bgworker-<pid>-<starttime>.
const homePrefix = "bgworker-"

// sweep removes, under dir, the empty homes of processes that are gone (a
// runtime that was SIGKILLed cannot remove its own), and returns how many
// it removed and the cgroups of such homes that still hold processes:
// those are left alone, for the operator to look at.
func sweep(dir string) (removed int, stale []string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), homePrefix) {
			continue
		}
		pid, start, ok := parseHomeName(e.Name())
		if !ok || ownerAlive(pid, start) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st := removeEmpty(p); len(st) > 0 {
			stale = append(stale, st...)
		} else {
			removed++
		}
	}
	return removed, stale
}

func parseHomeName(name string) (pid int, start uint64, ok bool) {
	a, b, found := strings.Cut(strings.TrimPrefix(name, homePrefix), "-")
	if !found {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(a)
	start, err2 := strconv.ParseUint(b, 10, 64)
	return pid, start, err1 == nil && err2 == nil
}

// ownerAlive reports whether process pid, started at start (clock ticks
// since boot), still exists: a recycled pid has another start time.
func ownerAlive(pid int, start uint64) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	st, err := parseStartTime(string(b))
	return err != nil || st == start // unreadable: assume alive
}

func selfStartTime() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	return parseStartTime(string(b))
}

// removeEmpty removes dir and its descendants bottom-up, skipping those
// that still hold processes, which it returns.
func removeEmpty(dir string) (populated []string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			populated = append(populated, removeEmpty(filepath.Join(dir, e.Name()))...)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if pop, _ := isPopulated(dir); pop && len(populated) == 0 {
			populated = append(populated, dir)
		}
	}
	return populated
}

// Path returns the directory of the subtree.
func (m *Manager) Path() string { return m.dir }

// Moved reports whether the process had to move itself into a leaf of its
// own (<home>/postmaster) to enable controllers below its cgroup.
func (m *Manager) Moved() bool {
	homeMu.Lock()
	defer homeMu.Unlock()
	return m.home.moved
}

// Swept returns what Open found of processes that are gone: how many of
// their empty subtrees it removed, and the cgroups of theirs that still
// hold processes (left in place).
func (m *Manager) Swept() (removed int, populated []string) {
	return m.home.swept, slices.Clone(m.home.stale)
}

// Controllers returns the controllers enabled for the leaves.
func (m *Manager) Controllers() []string { return slices.Clone(m.controllers) }

// Missing returns, for each wanted controller that is not available, why.
func (m *Manager) Missing() map[string]string {
	out := make(map[string]string, len(m.missing))
	for k, v := range m.missing {
		out[k] = v
	}
	return out
}

// Limits caps what one leaf may use. Zero fields are not limited.
type Limits struct {
	MemoryMax int64         // memory.max, bytes; the leaf is OOM-killed as a whole past it (memory.oom.group)
	CPUQuota  time.Duration // cpu.max quota per CPUPeriod
	CPUPeriod time.Duration // cpu.max period; zero = 100 ms
	PidsMax   int64         // pids.max: tasks, threads included
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l.MemoryMax == 0 && l.CPUQuota == 0 && l.PidsMax == 0 }

// needs lists the controllers l needs.
func (l Limits) needs() []string {
	var n []string
	if l.MemoryMax != 0 {
		n = append(n, "memory")
	}
	if l.CPUQuota != 0 {
		n = append(n, "cpu")
	}
	if l.PidsMax != 0 {
		n = append(n, "pids")
	}
	return n
}

// CheckLimits returns nil when every limit in l can be enforced, and
// otherwise an error wrapping ErrLimitsUnavailable that names each missing
// controller and why it is missing.
func (m *Manager) CheckLimits(l Limits) error {
	var why []string
	for _, c := range l.needs() {
		if !slices.Contains(m.controllers, c) {
			r := m.missing[c]
			if r == "" {
				r = "not enabled"
			}
			why = append(why, c+": "+r)
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrLimitsUnavailable, strings.Join(why, "; "))
}

// Leaf is the cgroup of one child and everything it starts.
type Leaf struct {
	m    *Manager
	name string
	path string
}

// NewLeaf makes the leaf name in the subtree.
func (m *Manager) NewLeaf(name string) (*Leaf, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("cgroup: leaf name %q is not a plain file name", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("cgroup: %s is closed", m.dir)
	}
	if _, dup := m.leaves[name]; dup {
		return nil, fmt.Errorf("cgroup: leaf %q exists", name)
	}
	l := &Leaf{m: m, name: name, path: filepath.Join(m.dir, name)}
	if err := os.Mkdir(l.path, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	m.leaves[name] = l
	return l, nil
}

// Path returns the leaf's directory.
func (l *Leaf) Path() string { return l.path }

// Name returns the leaf's name in its subtree.
func (l *Leaf) Name() string { return l.name }

// OpenDir opens the leaf's directory for syscall.SysProcAttr.CgroupFD (with
// UseCgroupFD: clone3 with CLONE_INTO_CGROUP starts the child inside the
// leaf, so nothing it does runs outside it). Close it after the start.
func (l *Leaf) OpenDir() (*os.File, error) {
	fd, err := unix.Open(l.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open %s: %w", l.path, err)
	}
	return os.NewFile(uintptr(fd), l.path), nil
}

// SetLimits writes l into the leaf. It fails, writing nothing, with an
// error wrapping ErrLimitsUnavailable when a controller l needs is not
// enabled.
func (l *Leaf) SetLimits(lim Limits) error {
	if err := l.m.CheckLimits(lim); err != nil {
		return err
	}
	if lim.MemoryMax != 0 {
		if err := writeFile(filepath.Join(l.path, "memory.max"), strconv.FormatInt(lim.MemoryMax, 10)); err != nil {
			return fmt.Errorf("cgroup: memory.max: %w", err)
		}
		// One OOM kill takes the whole leaf: a worker and its children
		// are one unit, as their restart is.
		if err := writeFile(filepath.Join(l.path, "memory.oom.group"), "1"); err != nil {
			return fmt.Errorf("cgroup: memory.oom.group: %w", err)
		}
	}
	if lim.CPUQuota != 0 {
		period := lim.CPUPeriod
		if period == 0 {
			period = 100 * time.Millisecond
		}
		v := fmt.Sprintf("%d %d", lim.CPUQuota.Microseconds(), period.Microseconds())
		if err := writeFile(filepath.Join(l.path, "cpu.max"), v); err != nil {
			return fmt.Errorf("cgroup: cpu.max %q: %w", v, err)
		}
	}
	if lim.PidsMax != 0 {
		if err := writeFile(filepath.Join(l.path, "pids.max"), strconv.FormatInt(lim.PidsMax, 10)); err != nil {
			return fmt.Errorf("cgroup: pids.max: %w", err)
		}
	}
	return nil
}

// Populated reports whether any process is in the leaf (cgroup.events).
func (l *Leaf) Populated() (bool, error) { return isPopulated(l.path) }

func isPopulated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("cgroup: %w", err)
	}
	v, ok, err := parseKeyed(b, "populated")
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("cgroup: %s/cgroup.events has no populated field", dir)
	}
	return v != 0, nil
}

// Procs returns the pids in the leaf (cgroup.procs).
func (l *Leaf) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(l.path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// OOMKills returns the leaf's oom_kill count from memory.events: how many
// of its processes the kernel killed for exceeding memory.max. Zero where
// the memory controller is not enabled.
func (l *Leaf) OOMKills() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(l.path, "memory.events"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	v, _, err := parseKeyed(b, "oom_kill")
	return v, err
}

// Kill SIGKILLs every process in the leaf (cgroup.kill: it reaches
// processes that left the process group or the session, and those forked
// while it runs) and waits until cgroup.events says the leaf is empty, or
// ctx ends. A process that has exited but is not reaped yet does not count:
// the caller may reap after Kill.
func (l *Leaf) Kill(ctx context.Context) error {
	// Watch before killing, so the change to "populated 0" is not missed.
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("cgroup: inotify: %w", err)
	}
	f := os.NewFile(uintptr(in), "inotify") // non-blocking: reads honour deadlines
	defer f.Close()
	if _, err := unix.InotifyAddWatch(in, filepath.Join(l.path, "cgroup.events"), unix.IN_MODIFY); err != nil {
		return fmt.Errorf("cgroup: watch %s/cgroup.events: %w", l.path, err)
	}
	if err := writeFile(filepath.Join(l.path, "cgroup.kill"), "1"); err != nil {
		return fmt.Errorf("cgroup: kill %s: %w", l.path, err)
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var buf [4096]byte
	for {
		pop, err := l.Populated()
		if err != nil {
			return err
		}
		if !pop {
			return nil
		}
		if _, err := f.Read(buf[:]); err != nil {
			if ctx.Err() != nil {
				pids, _ := l.Procs()
				return fmt.Errorf("cgroup: %s still holds %v after cgroup.kill: %w", l.path, pids, ctx.Err())
			}
			return fmt.Errorf("cgroup: inotify: %w", err)
		}
	}
}

// Remove removes the leaf. It fails while a process is in it (EBUSY).
func (l *Leaf) Remove() error {
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cgroup: %w", err)
	}
	l.m.mu.Lock()
	delete(l.m.leaves, l.name)
	l.m.mu.Unlock()
	return nil
}

// Close kills and removes every leaf left, then the subtree; the last
// Manager of the process also removes the home, moving the process back to
// its own cgroup if it had moved. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	left := make([]*Leaf, 0, len(m.leaves))
	for _, l := range m.leaves {
		left = append(left, l)
	}
	m.mu.Unlock()
	var errs []error
	for _, l := range left {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.Kill(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
		if err := l.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(m.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cgroup: %w", err))
	}
	homeMu.Lock()
	m.home.refs--
	if m.home.refs == 0 {
		if err := m.home.close(); err != nil {
			errs = append(errs, err)
		}
		if theHome == m.home {
			theHome = nil
		}
	}
	homeMu.Unlock()
	return errors.Join(errs...)
}

// writeFile writes s to a cgroup control file in one write(2), as the
// kernel wants; the error is the kernel's (EBUSY, EINVAL, ...).
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(s))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// Self returns the directory of this process's cgroup v2, for tests and
// diagnostics.
func Self() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	mounts, err := ParseMountInfo(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	c, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	own, err := ParseProcCgroup(bytes.NewReader(c))
	if err != nil {
		return "", err
	}
	dir, _, err := Resolve(mounts, own)
	return dir, err
}
