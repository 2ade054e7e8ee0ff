package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
	"github.com/bgworker/bgworker/runtime/internal/launch"
	"github.com/bgworker/bgworker/runtime/internal/proc"
	"github.com/bgworker/bgworker/shmactor"
)

// In-place upgrade (see the package documentation for what is and is
// not guaranteed). The postmaster's side is in upgrade_pm.go, the state
// that crosses the exec in upgrade_state.go.

// upgradeQuiet bounds the wait for the postmaster to be quiet (no start,
// stop or reset under way) before an upgrade.
const upgradeQuiet = 10 * time.Second

// buildVersion is the version this binary reports when Config.Version is
// empty: its main module's version, or its VCS revision.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
			v = s.Value
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}

// Version returns the running build's version (Config.Version, or the
// binary's own): what GET /version and bgworker_build_info report.
func (rt *Runtime) Version() string { return rt.cfg.Version }

// Upgraded reports whether this runtime carried on from an earlier image
// of the host (an in-place upgrade) instead of starting afresh. A host's
// main uses it to skip what it must do once only, such as starting its
// dynamic workers.
func (rt *Runtime) Upgraded() bool { return rt.adopt != nil }

// Upgrade exec's the binary at path in place of this process, same pid,
// and keeps every worker running (see the package documentation for what
// is and is not guaranteed). An empty path is the host's executable as
// resolved when the runtime was made, as it is on disk now (a binary
// replaced on disk is the one that runs next). On success Upgrade does
// not return: the new image's main runs, and its runtime adopts. It
// returns an error wrapping ErrUpgradeRefused when the new binary refuses
// the state or the exec fails, the host unchanged.
func (rt *Runtime) Upgrade(ctx context.Context, path string) error {
	if err := rt.check(); err != nil {
		return err
	}
	if rt.newLauncher != nil {
		return fmt.Errorf("%w: workers in memory cannot cross an exec", ErrUpgradeRefused)
	}
	if path == "" {
		path = rt.executable
	}
	// Check first, on a snapshot without descriptors: a binary that would
	// refuse changes nothing.
	preview, err := rt.snapshot(ctx, false)
	if err != nil {
		return err
	}
	if err := rt.checkBinary(ctx, path, preview); err != nil {
		return err
	}
	// Quiet: no start, stop, reset or launch under way; the pool's old
	// children are killed (they would run the old code).
	if err := rt.quiesce(ctx); err != nil {
		rt.tell(msgUpgradeResume{})
		return fmt.Errorf("%w: %v", ErrUpgradeRefused, err)
	}
	pl := rt.pm.launcher.(*proc.Launcher)
	lst, keep, err := pl.Detach(ctx)
	if err != nil {
		return rt.reattach(lst, keep, fmt.Errorf("%w: detach: %v", ErrUpgradeRefused, err))
	}
	st, err := rt.finalSnapshot(ctx)
	if err != nil {
		return rt.reattach(lst, keep, err)
	}
	st.Launcher = lst
	files, err := rt.handOver(st)
	keep = append(keep, files...)
	if err != nil {
		return rt.reattach(lst, keep, err)
	}
	sf, err := writeState(st, true)
	if err != nil {
		return rt.reattach(lst, keep, err)
	}
	keep = append(keep, sf)
	env := append(withoutEnv(os.Environ(), envUpgrade, envUpgradeCheck), envUpgrade+"="+strconv.Itoa(int(sf.Fd())))
	// Last: what was asked since the snapshot would be lost in the exec.
	if err := rt.heldDuringUpgrade(ctx); err != nil {
		return rt.reattach(lst, keep, err)
	}
	rt.log.Info("runtime: upgrading in place", "binary", path, "workers", len(st.Launcher.Children), "from", rt.cfg.Version)
	err = pl.Exec(path, os.Args, env)
	// Still here: the exec failed. Carry on with the children as they are.
	return rt.reattach(lst, keep, fmt.Errorf("%w: exec %s: %v", ErrUpgradeRefused, path, err))
}

// checkBinary runs path in check mode on st; it must accept it. Accepting
// is exiting 0 having printed the acceptance line with the nonce this
// check gave it: a program that is not a bgworker host (/bin/true, a
// wrapper that drops the environment, a build from before check mode)
// cannot say that by accident, and exec'ing it would end every worker.
func (rt *Runtime) checkBinary(ctx context.Context, path string, st *upgradeState) error {
	f, err := writeState(st, false)
	if err != nil {
		return err
	}
	defer f.Close()
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return err
	}
	nonce := hex.EncodeToString(n[:])
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, path)
	cmd.Env = append(withoutEnv(os.Environ(), envUpgrade, bridge.EnvChild), envUpgradeCheck+"="+nonce)
	cmd.ExtraFiles = []*os.File{f}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s refused the running state (%v): %s", ErrUpgradeRefused, path, err,
			bytes.TrimSpace(append(stderr.Bytes(), stdout.Bytes()...)))
	}
	if !slices.Contains(strings.Split(stdout.String(), "\n"), acceptLine(nonce)) {
		why := "not a bgworker host, or one without in-place upgrade"
		if strings.Contains(stdout.String(), "bgworker: upgrade state ok") {
			why = "a bgworker build whose check mode does not answer with the check's nonce (an older build)"
		}
		return fmt.Errorf("%w: %s exited 0 without accepting the running state: %s", ErrUpgradeRefused, path, why)
	}
	return nil
}

// quiesce asks the postmaster to stop starting and wait until nothing is
// under way.
func (rt *Runtime) quiesce(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, upgradeQuiet)
	defer cancel()
	reply := make(chan error, 1)
	rt.tell(msgUpgradeQuiesce{reply: reply})
	return rt.await(qctx, reply)
}

// snapshot takes the postmaster's state (with descriptors when final).
func (rt *Runtime) snapshot(ctx context.Context, final bool) (*upgradeState, error) {
	reply := make(chan *upgradeState, 1)
	rt.tell(msgFunc{fn: func(pm *postmaster) { reply <- pm.snapshot(final) }})
	return await(ctx, rt, reply)
}

// finalSnapshot takes the state for the next image, or the reason the
// upgrade must not go on.
func (rt *Runtime) finalSnapshot(ctx context.Context) (*upgradeState, error) {
	type result struct {
		st  *upgradeState
		err error
	}
	reply := make(chan result, 1)
	rt.tell(msgFunc{fn: func(pm *postmaster) {
		st, err := pm.finalSnapshot()
		reply <- result{st, err}
	}})
	r, err := await(ctx, rt, reply)
	if err != nil {
		return nil, err
	}
	return r.st, r.err
}

// heldDuringUpgrade reports whether a stop, reload or shutdown was asked
// since the final snapshot: the exec would swallow it.
func (rt *Runtime) heldDuringUpgrade(ctx context.Context) error {
	reply := make(chan error, 1)
	rt.tell(msgFunc{fn: func(pm *postmaster) {
		if len(pm.up.held) > 0 || pm.shutdown != 0 {
			reply <- fmt.Errorf("%w: a stop, reload or shutdown was asked during the upgrade", ErrUpgradeRefused)
			return
		}
		reply <- nil
	}})
	err, aerr := await(ctx, rt, reply)
	if aerr != nil {
		return aerr
	}
	return err
}

// handOver makes the runtime's own descriptors inheritable and names them
// in st: the lock file, the HTTP listener (whose server stops), the
// current segment. The files returned must stay open until the exec.
func (rt *Runtime) handOver(st *upgradeState) ([]*os.File, error) {
	var keep []*os.File
	inherit := func(f *os.File) (int, error) {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return -1, fmt.Errorf("runtime: upgrade: clear close-on-exec: %w", err)
		}
		keep = append(keep, f)
		return int(f.Fd()), nil
	}
	var err error
	if rt.lock != nil {
		if st.LockFD, err = inherit(rt.lock); err != nil {
			return keep, err
		}
	}
	if rt.http != nil {
		lf, lerr := rt.http.ln.(*net.TCPListener).File()
		if lerr != nil {
			return keep, fmt.Errorf("runtime: upgrade: listener: %w", lerr)
		}
		if st.HTTPFD, err = inherit(lf); err != nil {
			return keep, err
		}
		rt.http.close()
		rt.http = nil
		rt.httpHanded = lf
	}
	if seg := rt.pm.group.seg; seg != nil {
		fd, derr := unix.FcntlInt(seg.File().Fd(), unix.F_DUPFD, 0)
		if derr != nil {
			return keep, fmt.Errorf("runtime: upgrade: dup segment: %w", derr)
		}
		if st.Group.SegFD, err = inherit(os.NewFile(uintptr(fd), "segment")); err != nil {
			return keep, err
		}
	}
	if rt.cg != nil && rt.cg.mgr != nil {
		cs := rt.cg.mgr.State()
		st.Cgroups = &cs
	}
	st.Counters = rt.metrics.counters()
	return keep, nil
}

// reattach undoes a detach after an upgrade that did not happen: this
// image adopts its own children back and carries on.
func (rt *Runtime) reattach(lst proc.State, keep []*os.File, cause error) error {
	rt.log.Error("runtime: upgrade did not happen; carrying on", "err", cause)
	env := rt.launchEnv()
	var extra []*os.File
	if rt.lock != nil {
		unix.CloseOnExec(int(rt.lock.Fd()))
		extra = append(extra, rt.lock)
	}
	var mgr *cgroup.Manager
	if rt.cg != nil {
		mgr = rt.cg.mgr
	}
	l, kids, err := proc.Adopt(env, proc.Config{Exe: rt.exe, Env: rt.childEnv(), ExtraFiles: extra, Queue: rt.cfg.MaxWorkers + 64, Cgroups: mgr}, lst)
	// The HTTP endpoint serves again on the socket it had: clients that
	// connected meanwhile wait in its backlog.
	var ln net.Listener
	if f := rt.httpHanded; f != nil {
		var lerr error
		if ln, lerr = net.FileListener(f); lerr != nil {
			rt.log.Error("runtime: the HTTP listener could not be taken back; listening anew", "err", lerr)
			ln = nil
		}
		rt.httpHanded = nil
	}
	for _, f := range keep {
		if f != rt.lock {
			f.Close()
		}
	}
	old := rt.pm.launcher
	done := make(chan struct{})
	rt.tell(msgFunc{fn: func(pm *postmaster) {
		pm.launcher = l
		traffic := l.Traffic
		rt.traffic.Store(&traffic) // the metrics read the launcher that serves now
		pm.readopt(kids)
		close(done)
	}})
	<-done
	old.Close()
	if rt.http == nil && (ln != nil || rt.cfg.HTTPAddr != "") {
		if h, herr := rt.startHTTP(ln); herr == nil {
			rt.http = h
		} else {
			rt.log.Error("runtime: HTTP endpoint not back after the upgrade failed", "err", herr)
		}
	}
	rt.tell(msgUpgradeResume{})
	if err != nil {
		return fmt.Errorf("%v; and adopting the children back: %w", cause, err)
	}
	return cause
}

// withoutEnv returns env without the named variables.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		for _, n := range names {
			if len(kv) > len(n) && kv[:len(n)] == n && kv[len(n)] == '=' {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// loadUpgrade reads the state an earlier image left in the environment, if
// any.
func loadUpgrade() (*upgradeState, error) {
	v, ok := os.LookupEnv(envUpgrade)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(envUpgrade)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("runtime: %s=%q is not a descriptor", envUpgrade, v)
	}
	f := os.NewFile(uintptr(fd), "upgrade-state")
	defer f.Close()
	st, err := readState(f)
	if err != nil {
		return nil, err
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	return st, nil
}

// executablePath is the host's executable as the OS names it now.
func executablePath() string {
	p, err := os.Executable()
	if err != nil {
		return "/proc/self/exe"
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// adoptSegment maps the segment the earlier image handed over.
func adoptSegment(g groupState) (*shmactor.Segment, error) {
	if g.SegFD < 0 {
		return nil, nil
	}
	unix.CloseOnExec(g.SegFD)
	return shmactor.Adopt(os.NewFile(uintptr(g.SegFD), "segment"), g.Gen, g.Size, g.Layout)
}

var _ launch.Child = (launch.Child)(nil)
