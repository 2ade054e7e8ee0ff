package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
	"golang.org/x/sys/unix"
)

// Suite "upgrade": the pause of an in-place upgrade (Runtime.Upgrade)
// against a full restart of the host with the same workers.
//
// A host process (this binary in the role upgradeHostRole) starts N
// bench-echo workers and runs one loop that requests each worker in turn,
// for as long as the image lives. Every answer stamps CLOCK_MONOTONIC,
// which is one clock across processes and exec's, into the image's slot of
// a memfd the suite shares with every image: the first answer, the first
// answer of a full round (every worker answered once), and the latest
// answer. The suite tells the host, alternately, "upgrade" (Upgrade to the
// same binary: every worker runs on) and "restart" (a fast shutdown, then
// an exec of the same binary, which starts every worker afresh: the
// cheapest full restart there is, with no fork and no supervisor in
// between). A transition's pause is the old image's latest answer → the new
// image's first; its "all" the old image's latest answer → the new image's
// first full round.
const (
	upgradeHostRole = "upgrade-host"
	upgradeNEnv     = "BGWBENCH_UPGRADE_N"     // workers in the host
	upgradeImageEnv = "BGWBENCH_UPGRADE_IMAGE" // the image's number, 0 for the first
	upgradeStatsFD  = 3                        // the memfd of stamps, inherited by every image

	upgradeImages = 256 // slots in the memfd: images one host may run
	upgradeWait   = 60 * time.Second
)

// upgradeSlot is one image's stamps, in CLOCK_MONOTONIC nanoseconds.
type upgradeSlot struct {
	first, all, last atomic.Int64
}

func init() {
	RegisterRole(upgradeHostRole, upgradeHost)
	RegisterSuite(Suite{Name: "upgrade", Run: runUpgrade, IDs: []string{
		"upgrade.pause.w10", "upgrade.all.w10", "upgrade.pause.w100", "upgrade.all.w100",
	}})
}

// monoNow is CLOCK_MONOTONIC in nanoseconds.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// upgradeSlots maps the stamps memfd.
func upgradeSlots(fd int) ([]upgradeSlot, []byte, error) {
	size := upgradeImages * int(unsafe.Sizeof(upgradeSlot{}))
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: upgrade: mmap stamps: %w", err)
	}
	return unsafe.Slice((*upgradeSlot)(unsafe.Pointer(&mem[0])), upgradeImages), mem, nil
}

// upgradeHost is the host role. It obeys lines on stdin ("upgrade",
// "restart", "quit") and says "ready IMAGE" on stdout once its loop has had
// a full round.
func upgradeHost() int {
	fail := func(err error) int {
		fmt.Printf("error %v\n", err)
		return 1
	}
	n, err := strconv.Atoi(os.Getenv(upgradeNEnv))
	if err != nil || n < 1 {
		return fail(fmt.Errorf("%s=%q: want a count of workers", upgradeNEnv, os.Getenv(upgradeNEnv)))
	}
	image, err := strconv.Atoi(os.Getenv(upgradeImageEnv))
	if err != nil || image < 0 || image >= upgradeImages {
		return fail(fmt.Errorf("%s=%q: want an image number below %d", upgradeImageEnv, os.Getenv(upgradeImageEnv), upgradeImages))
	}
	slots, _, err := upgradeSlots(upgradeStatsFD)
	if err != nil {
		return fail(err)
	}
	unix.CloseOnExec(upgradeStatsFD) // not for the workers; cleared again just before an exec
	rt, err := bgw.New(bgw.Config{Workers: []actors.Spec{}, MaxWorkers: n + 8,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		return fail(err)
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		return fail(err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "u-" + strconv.Itoa(i)
	}
	if !rt.Upgraded() {
		hs := make([]*bgw.Handle, n)
		for i, name := range names {
			if hs[i], err = rt.StartWorker(ctx, actors.Spec{Name: name, Type: bridgeEchoCode}); err != nil {
				return fail(err)
			}
		}
		for _, h := range hs {
			if _, err := h.WaitStarted(ctx); err != nil {
				return fail(err)
			}
		}
	}
	slot := &slots[image]
	full := make(chan struct{})
	var stop atomic.Bool
	go upgradeLoop(rt, names, slot, &stop, full)
	select {
	case <-full:
	case <-time.After(upgradeWait):
		return fail(fmt.Errorf("image %d: no full round of answers in %s", image, upgradeWait))
	}
	fmt.Printf("ready %d\n", image)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd := sc.Text()
		if cmd == "upgrade" || cmd == "restart" {
			// Both exec with this process's environment, and the next
			// image maps the same stamps.
			if err := os.Setenv(upgradeImageEnv, strconv.Itoa(image+1)); err != nil {
				return fail(err)
			}
			if _, err := unix.FcntlInt(upgradeStatsFD, unix.F_SETFD, 0); err != nil {
				return fail(err)
			}
		}
		switch cmd {
		case "upgrade":
			uctx, cancel := context.WithTimeout(ctx, upgradeWait)
			err := rt.Upgrade(uctx, "") // returns only if it did not happen
			cancel()
			return fail(fmt.Errorf("upgrade did not happen: %w", err))
		case "restart", "quit":
			stop.Store(true) // a host that shuts down answers no more
			sctx, cancel := context.WithTimeout(ctx, upgradeWait)
			err := rt.Shutdown(sctx, phases.Fast)
			cancel()
			if err != nil {
				return fail(err)
			}
			if cmd == "quit" {
				return 0
			}
			exe, err := os.Executable()
			if err != nil {
				return fail(err)
			}
			return fail(fmt.Errorf("restart: exec %s: %w", exe, syscall.Exec(exe, os.Args, os.Environ())))
		default:
			return fail(fmt.Errorf("unknown command %q", cmd))
		}
	}
	return 0
}

// upgradeLoop requests each worker in turn until the process ends or stop
// is set, and stamps slot; it closes full after the first full round.
func upgradeLoop(rt *bgw.Runtime, names []string, slot *upgradeSlot, stop *atomic.Bool, full chan struct{}) {
	msg := []byte("ping")
	answered := make([]bool, len(names))
	left := len(names)
	for i := 0; !stop.Load(); i = (i + 1) % len(names) {
		if _, err := rt.System().Root.RequestFuture(rt.PID(names[i]), msg, time.Second).Result(); err != nil {
			continue // shutting down, or a dead letter: no stamp
		}
		now := monoNow()
		if slot.first.Load() == 0 {
			slot.first.Store(now)
		}
		slot.last.Store(now)
		if left > 0 && !answered[i] {
			answered[i] = true
			if left--; left == 0 {
				slot.all.Store(now)
				close(full)
			}
		}
	}
}

// upgradeRun is one host process, driven by the suite.
type upgradeRun struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	slots  []upgradeSlot
	mem    []byte
	stats  *os.File
	image  int
	stderr *upgradeTail
}

// upgradeTail keeps the last 8 KiB written to it, for an error's context.
type upgradeTail struct {
	mu sync.Mutex
	b  []byte
}

func (t *upgradeTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8192 {
		t.b = t.b[len(t.b)-8192:]
	}
	return len(p), nil
}

func (t *upgradeTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// startUpgradeHost starts a host with n workers and waits for its first
// image to be ready.
func startUpgradeHost(ctx context.Context, n int) (*upgradeRun, error) {
	fd, err := unix.MemfdCreate("bgwbench-upgrade", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: upgrade: memfd: %w", err)
	}
	stats := os.NewFile(uintptr(fd), "bgwbench-upgrade")
	size := upgradeImages * int(unsafe.Sizeof(upgradeSlot{}))
	if err := stats.Truncate(int64(size)); err != nil {
		stats.Close()
		return nil, err
	}
	slots, mem, err := upgradeSlots(fd)
	if err != nil {
		stats.Close()
		return nil, err
	}
	u := &upgradeRun{slots: slots, mem: mem, stats: stats, lines: make(chan string, 16), stderr: &upgradeTail{}}
	u.cmd = exec.Command("/proc/self/exe")
	u.cmd.Env = append(os.Environ(), RoleEnv+"="+upgradeHostRole, upgradeNEnv+"="+strconv.Itoa(n), upgradeImageEnv+"=0")
	u.cmd.ExtraFiles = []*os.File{stats}
	u.cmd.Stderr = u.stderr
	if u.stdin, err = u.cmd.StdinPipe(); err != nil {
		u.close()
		return nil, err
	}
	out, err := u.cmd.StdoutPipe()
	if err != nil {
		u.close()
		return nil, err
	}
	if err := u.cmd.Start(); err != nil {
		u.close()
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			u.lines <- sc.Text()
		}
		close(u.lines)
	}()
	if err := u.ready(ctx, 0); err != nil {
		u.kill()
		return nil, err
	}
	return u, nil
}

// ready waits for the host to say that image is ready.
func (u *upgradeRun) ready(ctx context.Context, image int) error {
	ctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	select {
	case l, ok := <-u.lines:
		if !ok {
			return fmt.Errorf("bench: upgrade host ended before image %d was ready; stderr:\n%s", image, u.stderr)
		}
		if l != "ready "+strconv.Itoa(image) {
			return fmt.Errorf("bench: upgrade host said %q, want ready %d; stderr:\n%s", l, image, u.stderr)
		}
		u.image = image
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bench: upgrade host: image %d not ready: %w", image, ctx.Err())
	}
}

// transition tells the host cmd ("upgrade" or "restart") and returns the
// pause and the time to a full round of the next image.
func (u *upgradeRun) transition(ctx context.Context, cmd string) (pause, all time.Duration, err error) {
	if _, err := fmt.Fprintln(u.stdin, cmd); err != nil {
		return 0, 0, err
	}
	old := u.image
	if err := u.ready(ctx, old+1); err != nil {
		return 0, 0, err
	}
	last := u.slots[old].last.Load()
	next := &u.slots[old+1]
	return time.Duration(next.first.Load() - last), time.Duration(next.all.Load() - last), nil
}

// quit shuts the host down and reaps it.
func (u *upgradeRun) quit() error {
	fmt.Fprintln(u.stdin, "quit")
	done := make(chan error, 1)
	go func() { done <- u.cmd.Wait() }()
	select {
	case err := <-done:
		u.close()
		if err != nil {
			return fmt.Errorf("bench: upgrade host: %w; stderr:\n%s", err, u.stderr)
		}
		return nil
	case <-time.After(upgradeWait):
		u.kill()
		return errors.New("bench: upgrade host did not quit")
	}
}

// kill ends the host at once; its workers see it die and exit.
func (u *upgradeRun) kill() {
	u.cmd.Process.Kill()
	u.cmd.Wait()
	u.close()
}

func (u *upgradeRun) close() {
	if u.mem != nil {
		unix.Munmap(u.mem)
		u.mem = nil
	}
	u.stats.Close()
}

func runUpgrade(ctx context.Context) (rs []Result, err error) {
	reps := max(3, int(8*ScaleOf(ctx)))
	t0 := time.Now()
	for _, n := range []int{10, 100} {
		r, err := upgradeWorkers(ctx, n, reps)
		rs = append(rs, r...)
		if err != nil {
			return rs, err
		}
	}
	poolLogf("upgrade", "suite done in %.1fs", time.Since(t0).Seconds())
	return rs, nil
}

// upgradeWorkers measures reps upgrades and reps restarts, alternating,
// with n workers, after one of each to warm up.
func upgradeWorkers(ctx context.Context, n, reps int) ([]Result, error) {
	u, err := startUpgradeHost(ctx, n)
	if err != nil {
		return nil, err
	}
	var up, upAll, re, reAll []time.Duration
	for i := -1; i < reps; i++ {
		for _, cmd := range []string{"upgrade", "restart"} {
			if u.image+1 >= upgradeImages {
				break
			}
			pause, all, err := u.transition(ctx, cmd)
			if err != nil {
				u.kill()
				return nil, fmt.Errorf("bench: upgrade with %d workers: %s: %w", n, cmd, err)
			}
			poolLogf("upgrade", "%d workers: %s: pause %.2f ms, all answered after %.2f ms", n, cmd, bridgeMS(pause), bridgeMS(all))
			if i < 0 {
				continue
			}
			if cmd == "upgrade" {
				up, upAll = append(up, pause), append(upAll, all)
			} else {
				re, reAll = append(re, pause), append(reAll, all)
			}
		}
	}
	if err := u.quit(); err != nil {
		return nil, err
	}
	w := "w" + strconv.Itoa(n)
	row := func(id, what string, got, base []time.Duration) Result {
		return Result{ID: id, Unit: "ms",
			Name:     fmt.Sprintf("upgrade %s, %d workers, p50 (n=%d)", what, n, len(got)),
			Value:    bridgeMS(bridgeQuantile(got, 0.5)),
			Baseline: "full restart, same workers, p50", BaselineValue: bridgeMS(bridgeQuantile(base, 0.5))}
	}
	return []Result{
		row("upgrade.pause."+w, "pause", up, re),
		row("upgrade.all."+w, "until all answer", upAll, reAll),
	}, nil
}
