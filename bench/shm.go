package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/bgworker/bgworker/shmactor"
	"golang.org/x/sys/unix"
)

// The "shm" suite measures the shared memory of package shmactor against
// what the same work costs inside one process:
//
//   - a queue carrying 4 KiB messages from this process to a child, against
//     copy() of 4 KiB blocks into a buffer the size of the queue's ring
//     (target: at least half the bandwidth, for two copies and a trip
//     between CPUs);
//   - atomic adds by this process and a child, each to its own cache line of
//     the segment, against two goroutines doing the same on a private page
//     (target: at least 0.9 of the rate: shared memory costs nothing extra).
//
// Each measurement alternates short trials of the subject and of its
// baseline and reports the median of each, so that a burst of unrelated load
// on the machine weighs on both alike.
//
// And the queue against the bridge, with the same 4 KiB messages: Tell of
// a 4 KiB []byte from the host to a worker (code bench-sink) on a runtime
// without a warm pool, in trials of shmBridgeTells, alternating with the
// queue's trials (target: the queue carries at least 10× the bytes per
// second).
func init() {
	RegisterSuite(Suite{Name: "shm", Run: shmRun, IDs: []string{
		"shm.queue", "shm.queue.msgs", "shm.queue.vs_bridge", "shm.atomic", "shm.atomic.bytes",
	}})
	RegisterRole(roleShmQueueReceiver, shmQueueReceiver)
	RegisterRole(roleShmAtomicAdder, shmAtomicAdder)
}

const (
	roleShmQueueReceiver = "shm-queue-receiver"
	roleShmAtomicAdder   = "shm-atomic-adder"

	shmMsgSize = 4 << 10 // bytes per queue message
	// shmRing is the queue's ring size. Larger than a core's L2 cache, so
	// that the receiver's copies of the lines the sender is about to
	// overwrite have usually left it: a 256 KiB ring is measurably slower.
	shmRing = 2 << 20

	shmTrials      = 5                      // trials of each subject and baseline
	shmBridgeTells = 20000                  // 4 KiB tells per bridge trial (80 MiB)
	shmQueueTrial  = 180 * time.Millisecond // per queue or copy trial
	shmAddTrial    = 80 * time.Millisecond  // per atomic trial

	// shmChildTimeout bounds how long a child role runs if the benchmark
	// process dies without telling it.
	shmChildTimeout = 30 * time.Second
)

// The "ctl" region shared with a child role (and its private twin), one word
// per cache line so that polling one does not disturb another.
const (
	shmCtlRegion = "ctl"
	shmCtlQueue  = "queue"
	shmCtlReady  = 0   // uint32: the child is set up
	shmCtlStop   = 64  // uint32: the child must finish
	shmCtlCount  = 128 // uint64: messages the child received
	shmCtlBytes  = 192 // uint64: bytes the child received
	shmCtlGateA  = 256 // Mutex: held by the benchmark to pause adder A
	shmCtlGateB  = 320 // Mutex: same for adder B
	shmCtlAddsA  = 384 // uint64: adder A's counter
	shmCtlAddsB  = 448 // uint64: adder B's counter
	shmCtlSize   = 512

	shmAdderBatch = 1024 // adds between two passes through the gate
)

func shmRun(ctx context.Context) (rs []Result, err error) {
	br, err := newShmBridge(ctx, max(100, int(shmBridgeTells*ScaleOf(ctx))))
	if err != nil {
		return nil, fmt.Errorf("shm bridge: %w", err)
	}
	defer func() {
		if cerr := br.close(ctx); cerr != nil && err == nil {
			err = fmt.Errorf("shm bridge: %w", cerr)
		}
	}()
	q, c, bt, err := shmQueueVersusCopy(ctx, shmMsgSize, shmTrials, true, br.trial)
	if err != nil {
		return nil, fmt.Errorf("shm queue: %w", err)
	}
	shared, private, err := shmAtomicAddsSharedVersusPrivate(ctx)
	if err != nil {
		return nil, fmt.Errorf("shm atomics: %w", err)
	}
	qb := Result{
		ID:            "shm.queue",
		Name:          "queue, 4 KiB msgs, 2 procs",
		Value:         q * shmMsgSize,
		Baseline:      "copy() 4 KiB blocks, 2 MiB buffer",
		BaselineValue: c * shmMsgSize,
		Unit:          "B/s",
		Target:        []Cond{RatioAtLeast(0.5)},
	}
	qm := qb
	qm.ID, qm.Value, qm.BaselineValue, qm.Unit = "shm.queue.msgs", q, c, "msg/s"
	qv := Result{
		ID:            "shm.queue.vs_bridge",
		Name:          "queue, 4 KiB msgs, 2 procs",
		Value:         q * shmMsgSize,
		Baseline:      fmt.Sprintf("bridge Tell 4 KiB host→worker (%d a trial)", br.n),
		BaselineValue: bt * shmMsgSize,
		Unit:          "B/s",
		Target:        []Cond{RatioAtLeast(10)},
	}
	ao := Result{
		ID:            "shm.atomic",
		Name:          "atomic add, 2 procs, shared segment",
		Value:         shared,
		Baseline:      "2 goroutines, private page",
		BaselineValue: private,
		Unit:          "ops/s",
		Target:        []Cond{RatioAtLeast(0.9)},
	}
	ab := ao
	ab.ID, ab.Value, ab.BaselineValue, ab.Unit = "shm.atomic.bytes", shared*8, private*8, "B/s"
	return []Result{qb, qm, qv, ao, ab}, nil
}

// ShmQueueThroughput4K measures, in about a second, how many 4 KiB messages
// per second a shmactor queue carries from this process to a child process,
// for comparison with other transports (e.g. the bridge). The benchmark
// binary must call ChildMain first thing in main, since the child is this
// binary re-executed.
func ShmQueueThroughput4K(ctx context.Context) (msgsPerSec float64, err error) {
	q, _, _, err := shmQueueVersusCopy(ctx, shmMsgSize, shmTrials, false, nil)
	return q, err
}

func shmMedian(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// shmChild is a child role process with the segment's memfd as fd 3.
type shmChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{} // closed when the child has been reaped
	err    error
}

func startShmChild(ctx context.Context, role string, seg *shmactor.Segment) (*shmChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &shmChild{done: make(chan struct{})}
	c.cmd = exec.CommandContext(ctx, exe)
	c.cmd.Env = append(os.Environ(), RoleEnv+"="+role)
	c.cmd.ExtraFiles = []*os.File{seg.File()}
	c.cmd.Stderr = &c.stderr
	c.cmd.WaitDelay = time.Second
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		if err := c.cmd.Wait(); err != nil {
			c.err = fmt.Errorf("child %s: %w: %s", role, err, bytes.TrimSpace(c.stderr.Bytes()))
		}
		close(c.done)
	}()
	return c, nil
}

// wait reaps the child and returns its error.
func (c *shmChild) wait() error {
	<-c.done
	return c.err
}

// stop kills the child if it is still running and reaps it.
func (c *shmChild) stop() {
	select {
	case <-c.done:
	default:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// awaitReady waits until the child sets shmCtlReady, exits, or ctx ends.
func (c *shmChild) awaitReady(ctx context.Context, ctl []byte) error {
	for shmactor.Uint32At(ctl, shmCtlReady).Load() == 0 {
		select {
		case <-c.done:
			if c.err != nil {
				return c.err
			}
			return errors.New("child exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// shmChildSegment opens the segment passed as fd 3 and its control region.
func shmChildSegment() (*shmactor.Segment, []byte, error) {
	f := os.NewFile(3, "shm")
	seg, err := shmactor.Open(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	ctl, err := seg.Region(shmCtlRegion)
	if err != nil {
		seg.Close()
		return nil, nil, err
	}
	return seg, ctl, nil
}

// shmQueueVersusCopy sends size-byte messages to a child in trials of
// shmQueueTrial and, between them if withCopy, copies size-byte blocks into
// a ring-sized buffer for as long, and runs other (when not nil), which
// returns a rate of its own. It returns the median rates in messages
// (blocks) per second: the queue's, copy's and other's. A trial's clock runs
// from its first Send to the return of its last; the ring holds well under a
// millisecond's worth of messages, so what was sent is, to a fraction of a
// percent, what was received.
func shmQueueVersusCopy(ctx context.Context, size, trials int, withCopy bool, other func() (float64, error)) (queue, cp, oth float64, err error) {
	seg, err := shmactor.Build(1, []shmactor.Region{
		{Name: shmCtlRegion, Size: shmCtlSize},
		{Name: shmCtlQueue, Size: shmactor.QueueSize(shmRing), Init: func(mem []byte) {
			if err := shmactor.InitQueue(mem); err != nil {
				panic(err)
			}
		}},
	})
	if err != nil {
		return 0, 0, 0, err
	}
	defer seg.Close()
	ctl, _ := seg.Region(shmCtlRegion)
	qmem, _ := seg.Region(shmCtlQueue)
	s, err := shmactor.AttachSender(qmem)
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.Detach()
	if size > s.MaxMessage() {
		return 0, 0, 0, fmt.Errorf("message of %d bytes does not fit a %d-byte ring", size, shmRing)
	}
	child, err := startShmChild(ctx, roleShmQueueReceiver, seg)
	if err != nil {
		return 0, 0, 0, err
	}
	defer child.stop()
	if err := child.awaitReady(ctx, ctl); err != nil {
		return 0, 0, 0, err
	}

	msg := make([]byte, size)
	var n uint64
	send := func(d time.Duration) (float64, error) {
		start, first := time.Now(), n
		for {
			for range 64 {
				binary.LittleEndian.PutUint64(msg, n)
				if err := s.Send(ctx, msg); err != nil {
					return 0, fmt.Errorf("send #%d: %w", n, err)
				}
				n++
			}
			if el := time.Since(start); el >= d {
				return float64(n-first) / el.Seconds(), nil
			}
		}
	}
	if _, err := send(shmQueueTrial / 4); err != nil { // warm up: fault the ring in
		return 0, 0, 0, err
	}
	var qs, cs, others []float64
	for range trials {
		r, err := send(shmQueueTrial)
		if err != nil {
			return 0, 0, 0, err
		}
		qs = append(qs, r)
		if withCopy {
			cs = append(cs, shmCopyThroughput(size, shmRing, shmQueueTrial))
		}
		if other != nil {
			r, err := other()
			if err != nil {
				return 0, 0, 0, err
			}
			others = append(others, r)
		}
	}
	s.Detach()
	if err := child.wait(); err != nil {
		return 0, 0, 0, err
	}
	if got := shmactor.Uint64At(ctl, shmCtlCount).Load(); got != n {
		return 0, 0, 0, fmt.Errorf("child received %d messages, sent %d", got, n)
	}
	if got := shmactor.Uint64At(ctl, shmCtlBytes).Load(); got != n*uint64(size) {
		return 0, 0, 0, fmt.Errorf("child received %d bytes, sent %d", got, n*uint64(size))
	}
	if withCopy {
		cp = shmMedian(cs)
	}
	if other != nil {
		oth = shmMedian(others)
	}
	return shmMedian(qs), cp, oth, nil
}

// shmQueueReceiver is the child of shmQueueVersusCopy: it receives until the
// sender detaches, checks that the messages arrive numbered in order, and
// reports its counts in the control region.
func shmQueueReceiver() int {
	ctx, cancel := context.WithTimeout(context.Background(), shmChildTimeout)
	defer cancel()
	seg, ctl, err := shmChildSegment()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer seg.Close()
	qmem, err := seg.Region(shmCtlQueue)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := shmactor.AttachReceiver(qmem)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Detach()
	shmactor.Uint32At(ctl, shmCtlReady).Store(1)
	buf := make([]byte, shmMsgSize)
	var n, total uint64
	for {
		msg, err := r.Receive(ctx, buf)
		if errors.Is(err, shmactor.ErrDetached) {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "receive #%d: %v\n", n, err)
			return 1
		}
		if len(msg) < 8 || binary.LittleEndian.Uint64(msg) != n {
			fmt.Fprintf(os.Stderr, "message #%d out of order\n", n)
			return 1
		}
		n++
		total += uint64(len(msg))
	}
	shmactor.Uint64At(ctl, shmCtlCount).Store(n)
	shmactor.Uint64At(ctl, shmCtlBytes).Store(total)
	return 0
}

// shmCopyThroughput copies size-byte blocks into successive slots of a
// ring-byte buffer for about d, and returns the rate in blocks per second.
func shmCopyThroughput(size, ring int, d time.Duration) float64 {
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	dst := make([]byte, ring)
	slots := ring / size
	var n int
	start := time.Now()
	for {
		for range 64 {
			off := n % slots * size
			copy(dst[off:off+size], src)
			n++
		}
		if el := time.Since(start); el >= d {
			runtime.KeepAlive(dst)
			return float64(n) / el.Seconds()
		}
	}
}

// shmAdder adds to the counter at off in batches, passing through its gate
// between batches (so that the benchmark pauses it by holding the gate),
// until shmCtlStop is set.
func shmAdder(ctl []byte, gate, off int) {
	g, c, stop := shmactor.MutexAt(ctl, gate), shmactor.Uint64At(ctl, off), shmactor.Uint32At(ctl, shmCtlStop)
	for stop.Load() == 0 {
		g.Lock()
		g.Unlock()
		for range shmAdderBatch {
			c.Add(1)
		}
	}
}

// shmAdderPair is two adders, A and B, on ctl, paused by their gates.
type shmAdderPair struct {
	ctl  []byte
	wait func() error // waits for both adders to return after shmCtlStop
}

// trial lets the adders run for d and returns their combined rate.
func (p shmAdderPair) trial(d time.Duration) float64 {
	a, b := shmactor.Uint64At(p.ctl, shmCtlAddsA), shmactor.Uint64At(p.ctl, shmCtlAddsB)
	ga, gb := shmactor.MutexAt(p.ctl, shmCtlGateA), shmactor.MutexAt(p.ctl, shmCtlGateB)
	ga.Unlock()
	gb.Unlock()
	time.Sleep(d / 10) // let both wake up and get going
	start, n0 := time.Now(), a.Load()+b.Load()
	time.Sleep(d)
	n1, el := a.Load()+b.Load(), time.Since(start)
	ga.Lock()
	gb.Lock()
	return float64(n1-n0) / el.Seconds()
}

// close stops the adders and waits for them.
func (p shmAdderPair) close() error {
	shmactor.Uint32At(p.ctl, shmCtlStop).Store(1)
	shmactor.MutexAt(p.ctl, shmCtlGateA).Unlock()
	shmactor.MutexAt(p.ctl, shmCtlGateB).Unlock()
	return p.wait()
}

// shmAtomicAddsSharedVersusPrivate alternates trials of two adders on separate
// cache lines of a shared segment, one a goroutine here and one in a child
// process, with trials of two goroutines doing the same on a private
// anonymous page. It returns the median rates in adds per second.
func shmAtomicAddsSharedVersusPrivate(ctx context.Context) (shared, private float64, err error) {
	seg, err := shmactor.Build(1, []shmactor.Region{{Name: shmCtlRegion, Size: shmCtlSize}})
	if err != nil {
		return 0, 0, err
	}
	defer seg.Close()
	sctl, _ := seg.Region(shmCtlRegion)
	page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Munmap(page)
	pctl := page[:shmCtlSize]
	for _, ctl := range [][]byte{sctl, pctl} {
		shmactor.MutexAt(ctl, shmCtlGateA).Lock()
		shmactor.MutexAt(ctl, shmCtlGateB).Lock()
	}

	child, err := startShmChild(ctx, roleShmAtomicAdder, seg)
	if err != nil {
		return 0, 0, err
	}
	defer child.stop()
	var wg sync.WaitGroup
	wg.Go(func() { shmAdder(sctl, shmCtlGateA, shmCtlAddsA) })
	wg.Go(func() { shmAdder(pctl, shmCtlGateA, shmCtlAddsA) })
	wg.Go(func() { shmAdder(pctl, shmCtlGateB, shmCtlAddsB) })
	sp := shmAdderPair{ctl: sctl, wait: child.wait}
	pp := shmAdderPair{ctl: pctl, wait: func() error { return nil }}
	defer func() {
		if err != nil {
			child.stop() // it may never have started adding
		}
		if cerr := sp.close(); cerr != nil && err == nil {
			err = cerr
		}
		pp.close()
		wg.Wait()
	}()
	if err := child.awaitReady(ctx, sctl); err != nil {
		return 0, 0, err
	}
	var ss, ps []float64
	for range shmTrials {
		ss = append(ss, sp.trial(shmAddTrial))
		ps = append(ps, pp.trial(shmAddTrial))
	}
	return shmMedian(ss), shmMedian(ps), nil
}

// shmAtomicAdder is the child of shmAtomicAddsSharedVersusPrivate: adder B.
func shmAtomicAdder() int {
	seg, ctl, err := shmChildSegment()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer seg.Close()
	shmactor.Uint32At(ctl, shmCtlReady).Store(1)
	shmAdder(ctl, shmCtlGateB, shmCtlAddsB)
	return 0
}
