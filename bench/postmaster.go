package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
)

// Worker code of the postmaster suite: a RunFunc that blocks until its
// context is cancelled (the postmaster asked it to stop), then exits 0.
const pmBlockCode = "bench-pm-block"

// pmIdleWindow is how long idle CPU is measured: five heartbeat intervals
// of the default HeartbeatInterval (1 s).
const pmIdleWindow = 5 * time.Second

// pmStatusGap is the pause between two status queries of the probe, so
// that the probe samples the postmaster's responsiveness without being a
// load of its own (one query of a 1,000-row table is ~0.1-1 ms).
const pmStatusGap = 2 * time.Millisecond

// pmStormStartTimeout is the StartTimeout of the storm's workers.
const pmStormStartTimeout = 3 * time.Minute

func init() {
	actors.MustDefine(actors.Spec{Name: pmBlockCode, Run: func(ctx context.Context, _ actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
	RegisterSuite(Suite{Name: "postmaster", Run: runPostmaster, IDs: []string{
		"postmaster.cold.p50",
		"postmaster.warm.p50",
		"postmaster.idle100.host",
		"postmaster.storm",
		"postmaster.status.p99",
		"postmaster.storm.child_cpu",
		"postmaster.storm.child_rss",
		"postmaster.storm.host_rss_per_worker",
		"postmaster.idle1000.host",
		"postmaster.storm.shutdown",
		"postmaster.storm.spi8",
		"postmaster.status.p99.spi8",
		"postmaster.shutdown.p50",
		"postmaster.restart.pool.p50",
		"postmaster.restart.nopool.p50",
	}})
}

// pmSuite carries what the measurements of one invocation share.
type pmSuite struct {
	resets  atomic.Int64 // ECONNRESET-on-goodbye warnings dropped (see bridgeResetFilter)
	cold    time.Duration
	coldCPU time.Duration // CPU of a cold-start child at ready, p50
	rss     int64         // VmRSS of an idle-runtime child, bytes (for sizing the storm)
}

func pmLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: postmaster: "+format+"\n", args...)
}

func (ps *pmSuite) newRuntime(cfg bgw.Config, level slog.Level) (*bgw.Runtime, error) {
	cfg.Workers = []actors.Spec{}
	cfg.Logger = slog.New(bridgeResetFilter{
		Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}),
		n:       &ps.resets,
	})
	return bgw.New(cfg)
}

func pmShutdown(rt *bgw.Runtime) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return rt.Shutdown(ctx, phases.Fast)
}

func pmSpec(name string) actors.Spec {
	return actors.Spec{Name: name, Type: pmBlockCode, StartAt: phases.PostmasterStart,
		Restart: actors.NeverRestart, StopTimeout: 2 * time.Second}
}

func runPostmaster(ctx context.Context) (rs []Result, err error) {
	scale := ScaleOf(ctx)
	n := func(base, least int) int { return max(least, int(float64(base)*scale)) }
	ps := &pmSuite{}
	defer func() {
		if k := ps.resets.Load(); k > 0 {
			pmLog("%d clean worker exits were reported as protocol_error crashes "+
				"(bridge read got ECONNRESET after the goodbye: a runtime defect)", k)
		}
	}()
	t0 := time.Now()
	coldN := n(20, 5)
	type step struct {
		what string
		run  func() ([]Result, error)
	}
	steps := []step{
		{"cold start", func() ([]Result, error) { return ps.coldStart(ctx, coldN, true) }},
		{"warm start", func() ([]Result, error) { return ps.warmStart(ctx, coldN) }},
		{"idle workers", func() ([]Result, error) { return ps.idle(ctx, n(100, 10), pmWindow(scale)) }},
	}
	storm := 0
	for i, spi := range []int{1, 8} {
		steps = append(steps, step{fmt.Sprintf("storm (StartsPerIteration %d)", spi), func() ([]Result, error) {
			if storm == 0 {
				storm = ps.stormSize(n(1000, 10))
			} else { // a fresh baseline beside each storm: the machine is shared
				if _, err := ps.coldStart(ctx, coldN, false); err != nil {
					return nil, err
				}
			}
			return ps.storm(ctx, storm, spi, i == 0, pmWindow(scale))
		}})
	}
	steps = append(steps,
		step{"fast shutdown", func() ([]Result, error) { return ps.fastShutdown(ctx, n(10, 3)) }},
		step{"restart", func() ([]Result, error) { return ps.restartAfterKill(ctx, n(30, 5)) }},
	)
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return rs, err
		}
		r, err := st.run()
		rs = append(rs, r...)
		if err != nil {
			return rs, fmt.Errorf("bench: postmaster %s: %w", st.what, err)
		}
	}
	pmLog("suite done in %.1fs", time.Since(t0).Seconds())
	return rs, nil
}

// ---- cold start (the baseline of the storm and of the restart) ----

// coldStart times StartWorker → WaitStarted of the blocking worker on an
// idle runtime without a warm pool (every start execs a child), one at a
// time, with an untimed Terminate and WaitStopped between them, after two
// warm-ups; its p50 becomes ps.cold. With row it also returns the
// measurement as a row of its own.
func (ps *pmSuite) coldStart(ctx context.Context, n int, row bool) ([]Result, error) {
	t0 := time.Now()
	rt, err := ps.newRuntime(bgw.Config{WarmPool: -1}, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	defer pmShutdown(rt)
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	const warm = 2
	var ds, cpus []time.Duration
	for i := range warm + n {
		d, rss, cpu, err := pmColdOnce(ctx, rt, i == warm)
		if err != nil {
			return nil, err
		}
		if i == warm {
			ps.rss = rss
		}
		if i >= warm {
			ds, cpus = append(ds, d), append(cpus, cpu)
		}
	}
	ps.cold, ps.coldCPU = bridgeQuantile(ds, 0.5), bridgeQuantile(cpus, 0.5)
	pmLog("cold start p50 %.2f ms (n=%d), child CPU at ready p50 %.2f ms, child VmRSS %.1f MiB (%.1fs)",
		bridgeMS(ps.cold), n, bridgeMS(ps.coldCPU), float64(ps.rss)/(1<<20), time.Since(t0).Seconds())
	if !row {
		return nil, nil
	}
	return []Result{{
		ID:    "postmaster.cold.p50",
		Name:  fmt.Sprintf("cold start (WarmPool off) p50 (n=%d)", n),
		Value: bridgeMS(ps.cold),
		Unit:  "ms",
	}}, nil
}

// warmStart times StartWorker → WaitStarted on an idle runtime with the
// default warm pool, waiting between starts until the pool is full again.
// For the record: the storm exhausts the pool at once.
func (ps *pmSuite) warmStart(ctx context.Context, n int) ([]Result, error) {
	rt, err := ps.newRuntime(bgw.Config{}, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	defer pmShutdown(rt)
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	var ds []time.Duration
	for i := range 2 + n {
		if err := pmPoolFull(ctx, rt); err != nil {
			return nil, err
		}
		d, _, _, err := pmColdOnce(ctx, rt, false)
		if err != nil {
			return nil, err
		}
		if i >= 2 {
			ds = append(ds, d)
		}
	}
	p50 := bridgeQuantile(ds, 0.5)
	pmLog("warm start (default pool) p50 %.2f ms", bridgeMS(p50))
	return []Result{{
		ID:            "postmaster.warm.p50",
		Name:          fmt.Sprintf("warm start (default WarmPool) p50 (n=%d)", n),
		Value:         bridgeMS(p50),
		Baseline:      "cold start p50 (WarmPool off)",
		BaselineValue: bridgeMS(ps.cold),
		Unit:          "ms",
	}}, nil
}

// pmPoolFull waits until the runtime has its default two idle children and
// they have had time to finish their handshake.
func pmPoolFull(ctx context.Context, rt *bgw.Runtime) error {
	deadline := time.Now().Add(10 * time.Second)
	for len(rt.IdleChildren()) < 2 {
		if time.Now().After(deadline) {
			return errors.New("warm pool did not refill within 10 s")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // spawned is not yet idle: let the handshake finish
	return nil
}

// pmColdOnce times one StartWorker → WaitStarted of worker "pm-cold" and
// stops it untimed. It also returns the child's VmRSS when rss is set (else
// 0) and the CPU the child had used when it was ready.
func pmColdOnce(ctx context.Context, rt *bgw.Runtime, rss bool) (time.Duration, int64, time.Duration, error) {
	goruntime.GC()
	t0 := time.Now()
	h, err := rt.StartWorker(ctx, pmSpec("pm-cold"))
	if err != nil {
		return 0, 0, 0, err
	}
	pid, err := h.WaitStarted(ctx)
	d := time.Since(t0)
	if err != nil {
		return 0, 0, 0, err
	}
	var v int64
	if rss {
		v = pmVmRSS(pid)
	}
	return d, v, pmCPU(pid), stopWorker(ctx, h)
}

// ---- idle cost ----

// pmWindow is the idle measurement's window at scale: pmIdleWindow, shorter
// (down to a second) for scales below 1.
func pmWindow(scale float64) time.Duration {
	return max(time.Second, time.Duration(float64(pmIdleWindow)*min(1, scale)))
}

// idle measures the CPU of the host and of its children with n running
// idle workers (a RunFunc blocked on its context) on a runtime with the
// default configuration, over window, once a second after the last one is
// running. The same runtime with no workers, measured first over the same
// window, is printed beside it.
func (ps *pmSuite) idle(ctx context.Context, n int, window time.Duration) ([]Result, error) {
	rt, err := ps.newRuntime(bgw.Config{MaxWorkers: n + 100}, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	defer pmShutdown(rt)
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	if err := pmPoolFull(ctx, rt); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	host0, kids0 := pmIdleCPU(rt.IdleChildren(), window)
	hs := make([]*bgw.Handle, n)
	for i := range hs {
		if hs[i], err = rt.StartWorker(ctx, pmSpec(fmt.Sprintf("pm-idle-%03d", i))); err != nil {
			return nil, err
		}
	}
	pids := make([]int, 0, n)
	for _, h := range hs {
		pid, err := h.WaitStarted(ctx)
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	if err := pmPoolFull(ctx, rt); err != nil {
		return nil, err
	}
	goruntime.GC()
	time.Sleep(time.Second)
	host, kids := pmIdleCPU(append(pids, rt.IdleChildren()...), window)
	pmLog("idle: no workers (%d idle children): host %.3f %% of a core, children %.3f %%; %d running workers: host %.3f %%, children %.3f %% together, over %v",
		len(rt.IdleChildren()), host0, kids0, n, host, kids, window)
	return []Result{pmIdleRow("postmaster.idle100.host", n, window, host, kids)}, nil
}

// pmIdleRow is the result of an idle measurement of n workers: host CPU
// per 100 workers beside the children's, target at most 0.1 % of a core.
func pmIdleRow(id string, n int, window time.Duration, host, kids float64) Result {
	per := 100 / float64(n)
	return Result{
		ID:            id,
		Name:          fmt.Sprintf("host CPU per 100 idle workers, %% of a core (n=%d, %v)", n, window),
		Value:         host * per,
		Baseline:      "children's CPU per 100 idle workers, same window",
		BaselineValue: kids * per,
		Unit:          "%",
		Target:        []Cond{AtMost(0.1)},
	}
}

// pmIdleCPU sleeps for window and returns the CPU this process used
// meanwhile (the runtime: postmaster, bridge readers, heartbeats, garbage
// collection) and the CPU the processes pids used together, each in
// percent of one core. The children are read before and after the host's
// window, so that reading /proc is not charged to the host.
func pmIdleCPU(pids []int, window time.Duration) (host, children float64) {
	c0, tc0 := pmCPUs(pids), time.Now()
	h0, th0 := pmSelfCPU(), time.Now()
	time.Sleep(window)
	h1, th1 := pmSelfCPU(), time.Now()
	c1, tc1 := pmCPUs(pids), time.Now()
	var sum time.Duration
	for i := range pids {
		if c0[i] > 0 && c1[i] >= c0[i] { // 0: gone, or unreadable
			sum += c1[i] - c0[i]
		}
	}
	return 100 * float64(h1-h0) / float64(th1.Sub(th0)), 100 * float64(sum) / float64(tc1.Sub(tc0))
}

// pmCPUs returns pmCPU of each pid.
func pmCPUs(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i] = pmCPU(pid)
	}
	return out
}

// ---- start storm and status latency ----

// stormSize caps the storm by free memory: all of it below 16 GiB of
// MemAvailable, or whenever the children would not fit in MemAvailable
// less 4 GiB at the VmRSS observed for one idle child (at least 12 MiB).
func (ps *pmSuite) stormSize(want int) int {
	avail := pmMemAvailable()
	per := max(ps.rss, 12<<20)
	n := want
	if budget := avail - 4<<30; avail < 16<<30 || int64(want)*per > budget {
		n = max(10, min(want, int(budget/per)))
	}
	pmLog("MemAvailable %.1f GiB, ~%.0f MiB per child: storm of %d workers (asked %d)",
		float64(avail)/(1<<30), float64(per)/(1<<20), n, want)
	return n
}

// stormWatch counts the storm's events; it runs on the postmaster's
// goroutine, so it only counts.
type stormWatch struct {
	mu      sync.Mutex
	want    int
	running int
	lastAt  time.Time
	pids    []int
	lost    map[string]int // exits and failures during the storm, by reason
	lostAll int
	done    chan struct{}
	closed  bool
}

func (w *stormWatch) event(e bgw.Event) {
	ev, ok := e.(bgw.WorkerEvent)
	if !ok || !strings.HasPrefix(ev.Name, "storm-") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	switch {
	case ev.To == bgw.Running:
		w.running++
		w.lastAt = ev.At
		w.pids = append(w.pids, ev.PID)
	case ev.Exit != nil:
		w.lost[ev.Exit.Reason]++
		w.lostAll++
	default:
		return
	}
	if w.running+w.lostAll >= w.want {
		w.closed = true
		close(w.done)
	}
}

// storm starts n workers at once (StartWorker back to back from one
// goroutine) and times the first StartWorker → the n-th Running event.
// Meanwhile a probe queries the status table every pmStatusGap; after the
// storm the same probe on the now idle runtime with n running workers is
// the status baseline. The storm's runtime is then shut down, timed. With
// first it also reports memory, the children's CPU per start, the idle CPU
// of host and children with n running workers (over window), and that
// shutdown.
func (ps *pmSuite) storm(ctx context.Context, n, spi int, first bool, window time.Duration) (rs []Result, err error) {
	goruntime.GC()
	rt, err := ps.newRuntime(bgw.Config{MaxWorkers: n + 100, StartsPerIteration: spi}, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	shut := false
	defer func() {
		if !shut {
			if serr := pmShutdown(rt); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	w := &stormWatch{want: n, lost: map[string]int{}, done: make(chan struct{})}
	label := fmt.Sprintf("SPI=%d", spi)
	unsub := rt.Subscribe(w.event)
	defer unsub()
	availBefore := pmMemAvailable()
	debug.FreeOSMemory()
	hostRSSBefore := pmVmRSS(os.Getpid())

	// The status probe, until the storm is over.
	var during, duringLate []time.Duration
	probeDone := make(chan struct{})
	probeStop := make(chan struct{})
	go func() {
		defer close(probeDone)
		during, duringLate = pmProbe(ctx, rt, probeStop, 1<<30)
	}()
	stopProbe := func() {
		select {
		case <-probeStop:
		default:
			close(probeStop)
		}
		<-probeDone
	}
	defer stopProbe()

	pmLog("storm: starting %d workers, %s", n, label)
	hostCPU0 := pmSelfCPU()
	t0 := time.Now()
	for i := range n {
		sp := pmSpec(fmt.Sprintf("storm-%04d", i))
		// The start timeout runs from the moment the postmaster hands the
		// start to its spawner, and it hands over the whole storm at once:
		// with the default 10 s the tail of a 1,000-worker storm is killed
		// as start_timeout before its spawn (see the report).
		sp.StartTimeout = pmStormStartTimeout
		if _, err := rt.StartWorker(ctx, sp); err != nil {
			return nil, fmt.Errorf("StartWorker %d: %w", i, err)
		}
	}
	issued := time.Since(t0)
	timeout := time.NewTimer(pmStormStartTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-w.done:
			break wait
		case <-tick.C:
			w.mu.Lock()
			pmLog("storm: %d of %d running after %.1fs", w.running, n, time.Since(t0).Seconds())
			w.mu.Unlock()
		case <-timeout.C:
			err = errors.New("timed out")
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			w.mu.Lock()
			defer w.mu.Unlock()
			return nil, fmt.Errorf("storm: %d of %d running, %d lost %v: %w", w.running, n, w.lostAll, w.lost, err)
		}
	}
	stopProbe()
	hostCPU := pmSelfCPU() - hostCPU0
	w.mu.Lock()
	stormD := w.lastAt.Sub(t0)
	running, lost, lostAll := w.running, maps.Clone(w.lost), w.lostAll
	pids := slices.Clone(w.pids)
	w.mu.Unlock()
	pmLog("storm: %d running in %.2fs (StartWorker calls took %.2fs), %d lost %v; %d status samples",
		running, stormD.Seconds(), issued.Seconds(), lostAll, lost, len(during))
	if lostAll > 0 {
		return nil, fmt.Errorf("storm: %d workers did not start: %v", lostAll, lost)
	}

	// Memory and CPU of the children: VmRSS of a sample, the drop of
	// MemAvailable, and the CPU each has used (nearly all of it to start).
	time.Sleep(500 * time.Millisecond)
	var rss []int64
	for i := 0; i < len(pids) && len(rss) < 20; i += max(1, len(pids)/20) {
		if v := pmVmRSS(pids[i]); v > 0 {
			rss = append(rss, v)
		}
	}
	slices.Sort(rss)
	availAfter := pmMemAvailable()
	var cpus []time.Duration
	for i := 0; i < len(pids); i += max(1, len(pids)/50) {
		cpus = append(cpus, pmCPU(pids[i]))
	}
	var sum time.Duration
	for _, c := range cpus {
		sum += c
	}
	childCPU := time.Duration(int64(sum) / int64(max(1, len(cpus))) * int64(n))
	pmLog("storm: child CPU used p50 %.1f ms (sample of %d) vs %.1f ms for an idle cold start; "+
		"CPU of the storm: children ~%.1fs + host %.1fs of %.1fs (wall × %d cores)",
		bridgeMS(bridgeQuantile(cpus, 0.5)), len(cpus), bridgeMS(ps.coldCPU),
		childCPU.Seconds(), hostCPU.Seconds(), stormD.Seconds()*float64(goruntime.NumCPU()), goruntime.NumCPU())
	// The host's RSS: once as it is (the storm's garbage still mapped), and
	// once after returning freed memory to the kernel, what the workers
	// hold: the row.
	hostRSSRaw := pmVmRSS(os.Getpid())
	debug.FreeOSMemory()
	hostRSSAfter := pmVmRSS(os.Getpid())
	pmLog("storm: host VmRSS %.1f MiB before, %.1f MiB with %d running (%.1f MiB before FreeOSMemory): %.1f KiB per worker (%.1f KiB)",
		float64(hostRSSBefore)/(1<<20), float64(hostRSSAfter)/(1<<20), n, float64(hostRSSRaw)/(1<<20),
		float64(hostRSSAfter-hostRSSBefore)/float64(n)/1024, float64(hostRSSRaw-hostRSSBefore)/float64(n)/1024)
	var idleRow Result
	if first {
		host, kids := pmIdleCPU(append(slices.Clone(pids), rt.IdleChildren()...), window)
		pmLog("idle: %d running workers (+ %d idle children): host %.3f %% of a core, children %.3f %% together, over %v",
			n, len(rt.IdleChildren()), host, kids, window)
		idleRow = pmIdleRow("postmaster.idle1000.host", n, window, host, kids)
	}

	// Status baseline: the same probe, idle, same table.
	goruntime.GC()
	time.Sleep(200 * time.Millisecond)
	idle, idleLate := pmProbe(ctx, rt, nil, min(max(len(during), 500), 3000))
	p99, b99 := bridgeQuantile(during, 0.99), bridgeQuantile(idle, 0.99)
	pmLog("status p50 during %.3f ms, idle %.3f ms; p99 during %.3f ms, idle %.3f ms; "+
		"probe's own 2 ms sleep woke late by p99 %.3f ms during, %.3f ms idle",
		bridgeMS(bridgeQuantile(during, 0.5)), bridgeMS(bridgeQuantile(idle, 0.5)), bridgeMS(p99), bridgeMS(b99),
		bridgeMS(bridgeQuantile(duringLate, 0.99)), bridgeMS(bridgeQuantile(idleLate, 0.99)))

	cores := goruntime.NumCPU()
	base := time.Duration(int64(ps.cold) * int64(n) / int64(cores))
	suffix := ""
	if spi != 1 {
		suffix = fmt.Sprintf(".spi%d", spi)
	}
	rs = append(rs, Result{
		ID:            "postmaster.storm" + suffix,
		Name:          fmt.Sprintf("start storm →all Running, %s (n=%d)", label, n),
		Value:         stormD.Seconds(),
		Baseline:      fmt.Sprintf("n × cold p50 ÷ %d cores", cores),
		BaselineValue: base.Seconds(),
		Unit:          "s",
		Target:        []Cond{RatioAtMost(1.2)},
	}, Result{
		ID:            "postmaster.status.p99" + suffix,
		Name:          fmt.Sprintf("WorkersContext p99 during storm, %s", label),
		Value:         bridgeMS(p99),
		Baseline:      fmt.Sprintf("p99 idle, %d running", n),
		BaselineValue: bridgeMS(b99),
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(2)},
	})
	if first {
		rs = append(rs, Result{
			ID:            "postmaster.storm.child_cpu",
			Name:          fmt.Sprintf("child CPU per start in the storm, p50 (sample of %d)", len(cpus)),
			Value:         bridgeMS(bridgeQuantile(cpus, 0.5)),
			Baseline:      "child CPU at ready, idle cold start p50",
			BaselineValue: bridgeMS(ps.coldCPU),
			Unit:          "ms",
		}, Result{
			ID:     "postmaster.storm.host_rss_per_worker",
			Name:   fmt.Sprintf("host VmRSS growth per running worker, after FreeOSMemory (n=%d)", n),
			Value:  float64(hostRSSAfter-hostRSSBefore) / float64(n) / 1024,
			Unit:   "KiB",
			Target: []Cond{AtMost(64)},
		}, idleRow)
	}
	if first && len(rss) > 0 {
		rs = append(rs, Result{
			ID:            "postmaster.storm.child_rss",
			Name:          fmt.Sprintf("child VmRSS median (sample of %d)", len(rss)),
			Value:         float64(rss[len(rss)/2]) / (1 << 20),
			Baseline:      "MemAvailable drop ÷ n",
			BaselineValue: float64(availBefore-availAfter) / float64(n) / (1 << 20),
			Unit:          "MiB",
		})
	}

	// Fast shutdown of the whole storm, for the record.
	shut = true
	t1 := time.Now()
	err = pmShutdown(rt)
	sd := time.Since(t1)
	exits := map[string]int{}
	for _, wi := range rt.Workers() {
		switch ex := wi.LastExit; {
		case ex == nil:
			exits["none"]++
		case ex.Signal != "":
			exits[ex.Reason+"/signal:"+ex.Signal]++
		default: // a "killed" with exit code 0 had exited before the kill
			exits[fmt.Sprintf("%s/code:%d", ex.Reason, ex.Code)]++
		}
	}
	pmLog("storm: fast shutdown of %d workers %.2fs; exits %v", n, sd.Seconds(), exits)
	if err != nil {
		return rs, err
	}
	if first {
		rs = append(rs, Result{
			ID:    "postmaster.storm.shutdown",
			Name:  fmt.Sprintf("fast shutdown, storm runtime (n=%d)", n),
			Value: bridgeMS(sd),
			Unit:  "ms",
		})
	}
	return rs, nil
}

// pmProbe times rt.WorkersContext every pmStatusGap until stop is closed
// or it has limit samples. It also returns how late each of its own sleeps
// woke up: the scheduling delay any goroutine of the host sees, which
// tells CPU contention apart from a busy postmaster.
func pmProbe(ctx context.Context, rt *bgw.Runtime, stop <-chan struct{}, limit int) (lat, late []time.Duration) {
	for len(lat) < limit {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		t0 := time.Now()
		if _, err := rt.WorkersContext(ctx); err != nil {
			return
		}
		t1 := time.Now()
		lat = append(lat, t1.Sub(t0))
		time.Sleep(pmStatusGap)
		late = append(late, time.Since(t1)-pmStatusGap)
	}
	return
}

// ---- fast shutdown of 16 workers ----

func (ps *pmSuite) fastShutdown(ctx context.Context, reps int) ([]Result, error) {
	const workers = 16
	var ds, reaped, first []time.Duration
	unclean := map[string]int{}
	for r := range reps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		goruntime.GC()
		rt, err := ps.newRuntime(bgw.Config{}, slog.LevelWarn)
		if err != nil {
			return nil, err
		}
		if err := rt.Start(ctx); err != nil {
			pmShutdown(rt)
			return nil, err
		}
		hs := make([]*bgw.Handle, workers)
		for i := range hs {
			if hs[i], err = rt.StartWorker(ctx, pmSpec(fmt.Sprintf("pm-fast-%02d", i))); err != nil {
				pmShutdown(rt)
				return nil, err
			}
		}
		for _, h := range hs {
			if _, err := h.WaitStarted(ctx); err != nil {
				pmShutdown(rt)
				return nil, err
			}
		}
		var reapedAt, firstAt atomic.Int64
		unsub := rt.Subscribe(func(e bgw.Event) {
			switch ev := e.(type) {
			case bgw.ShutdownEvent:
				if ev.Done {
					reapedAt.Store(ev.At.UnixNano())
				}
			case bgw.WorkerEvent:
				if ev.To == bgw.Stopped {
					firstAt.CompareAndSwap(0, ev.At.UnixNano())
				}
			}
		})
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		err = pmShutdown(rt)
		d := time.Since(t0)
		unsub()
		if err != nil {
			return nil, err
		}
		if at := reapedAt.Load(); at != 0 {
			reaped = append(reaped, time.Unix(0, at).Sub(t0))
		}
		if at := firstAt.Load(); at != 0 {
			first = append(first, time.Unix(0, at).Sub(t0))
		}
		for _, wi := range rt.Workers() {
			if wi.LastExit == nil || wi.LastExit.Reason != bgw.ReasonExit0 {
				reason := "none"
				if wi.LastExit != nil {
					reason = wi.LastExit.Reason
				}
				unclean[reason]++
			}
		}
		ds = append(ds, d)
		_ = r
	}
	p50 := bridgeQuantile(ds, 0.5)
	pmLog("fast shutdown of %d: p50 %.2f ms, min %.2f, max %.2f; first worker stopped p50 %.2f ms, all reaped (ShutdownEvent Done) p50 %.2f ms; exits other than exit0: %v",
		workers, bridgeMS(p50), bridgeMS(slices.Min(ds)), bridgeMS(slices.Max(ds)),
		bridgeMS(bridgeQuantile(first, 0.5)), bridgeMS(bridgeQuantile(reaped, 0.5)), unclean)
	return []Result{{
		ID:            "postmaster.shutdown.p50",
		Name:          fmt.Sprintf("fast shutdown, %d running workers p50 (n=%d)", workers, reps),
		Value:         bridgeMS(p50),
		Baseline:      "PG fast shutdown, 16 workers (" + pgRef + ")",
		BaselineValue: pgFastShutdownMS,
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(0.15)},
	}}, nil
}

// ---- restart after SIGKILL ----

// restartAfterKill kills a worker with Restart Fixed(0) and no restart
// limit and times SIGKILL → its next Running event, on a runtime with the
// default warm pool and on one without; each kill alternates with a cold
// start on a third, idle runtime without a pool: the baseline.
func (ps *pmSuite) restartAfterKill(ctx context.Context, n int) (rs []Result, err error) {
	cold, err := ps.newRuntime(bgw.Config{WarmPool: -1}, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := pmShutdown(cold); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := cold.Start(ctx); err != nil {
		return nil, err
	}
	for _, pool := range []bool{true, false} {
		var colds []time.Duration
		ds, reasons, err := ps.killLoop(ctx, cold, pool, n, &colds)
		if err != nil {
			return rs, err
		}
		p50, c50 := bridgeQuantile(ds, 0.5), bridgeQuantile(colds, 0.5)
		what, id := "pool", "postmaster.restart.pool.p50"
		if !pool {
			what, id = "no pool", "postmaster.restart.nopool.p50"
		}
		pmLog("restart after SIGKILL, %s: p50 %.2f ms, p90 %.2f ms, max %.2f ms; cold start beside it p50 %.2f ms; exit reasons %v",
			what, bridgeMS(p50), bridgeMS(bridgeQuantile(ds, 0.9)), bridgeMS(slices.Max(ds)), bridgeMS(c50), reasons)
		rs = append(rs, Result{
			ID:            id,
			Name:          fmt.Sprintf("SIGKILL→Running, Fixed(0), %s p50 (n=%d)", what, n),
			Value:         bridgeMS(p50),
			Baseline:      "cold start p50, same run (a restart is a kernel teardown plus a start)",
			BaselineValue: bridgeMS(c50),
			Unit:          "ms",
			Target:        []Cond{RatioAtMost(1.2)},
		})
	}
	return rs, nil
}

// killLoop runs warm-up + n kills on a new runtime (with or without the
// default warm pool), each after a cold start on cold appended to colds.
func (ps *pmSuite) killLoop(ctx context.Context, cold *bgw.Runtime, pool bool, n int, colds *[]time.Duration) (ds []time.Duration, reasons map[string]int, err error) {
	goruntime.GC()
	cfg := bgw.Config{}
	if !pool {
		cfg.WarmPool = -1
	}
	// Error level: each kill logs a crash warning by design.
	rt, err := ps.newRuntime(cfg, slog.LevelError)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if serr := pmShutdown(rt); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := rt.Start(ctx); err != nil {
		return nil, nil, err
	}
	type up struct {
		pid int
		at  time.Time
	}
	ups := make(chan up, 64)
	var mu sync.Mutex
	reasons = map[string]int{}
	unsub := rt.Subscribe(func(e bgw.Event) {
		ev, ok := e.(bgw.WorkerEvent)
		if !ok || ev.Name != "pm-kill" {
			return
		}
		if ev.To == bgw.Running {
			select {
			case ups <- up{ev.PID, ev.At}:
			default:
			}
		}
		if ev.Exit != nil {
			mu.Lock()
			reasons[ev.Exit.Reason]++
			mu.Unlock()
		}
	})
	defer unsub()
	spec := pmSpec("pm-kill")
	spec.Restart = actors.Fixed(0)
	spec.Intensity = actors.Intensity{MaxRestarts: -1}
	if _, err := rt.StartWorker(ctx, spec); err != nil {
		return nil, nil, err
	}
	var cur up
	select {
	case cur = <-ups:
	case <-time.After(10 * time.Second):
		return nil, nil, errors.New("worker did not start")
	}
	const warm = 2
	for i := range warm + n {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		d, _, _, err := pmColdOnce(ctx, cold, false)
		if err != nil {
			return nil, nil, err
		}
		if i >= warm {
			*colds = append(*colds, d)
		}
		if pool {
			if err := pmPoolFull(ctx, rt); err != nil {
				return nil, nil, err
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
		goruntime.GC()
		t0 := time.Now()
		if err := syscall.Kill(cur.pid, syscall.SIGKILL); err != nil {
			return nil, nil, fmt.Errorf("kill %d: %w", cur.pid, err)
		}
		select {
		case cur = <-ups:
		case <-time.After(10 * time.Second):
			mu.Lock()
			defer mu.Unlock()
			return nil, nil, fmt.Errorf("no Running event 10 s after kill %d (exits so far %v)", i, reasons)
		}
		if i >= warm {
			ds = append(ds, cur.at.Sub(t0))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return ds, maps.Clone(reasons), nil
}

// ---- /proc ----

// pmSelfCPU returns the CPU time (user + system) of this process so far.
func pmSelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pmMemAvailable returns MemAvailable from /proc/meminfo in bytes.
func pmMemAvailable() int64 { return pmProcField("/proc/meminfo", "MemAvailable:") }

// pmVmRSS returns the VmRSS of a process in bytes, 0 if unknown.
func pmVmRSS(pid int) int64 { return pmProcField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") }

// pmCPU returns the CPU time a process has used so far, summed over its
// threads (/proc/<pid>/task/*/schedstat), 0 if unknown.
func pmCPU(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			v, _ := strconv.ParseInt(fs[0], 10, 64)
			sum += time.Duration(v)
		}
	}
	return sum
}

func pmProcField(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				return 0
			}
			v, _ := strconv.ParseInt(fs[0], 10, 64)
			return v << 10 // kB
		}
	}
	return 0
}
