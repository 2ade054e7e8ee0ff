package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/shmactor"
	"golang.org/x/sys/unix"
)

// Suites "pool" (the warm pool against cold starts and against a naive
// exec) and "reset" (the all-for-one reset of the shared-memory group).
const (
	poolBlockCode = "bench-pool-block" // RunFunc: blocks until its context ends, exits 0
	resetShmCode  = "bench-reset-shm"  // shared-memory RunFunc: maps its region, blocks on ctx
	resetRegion   = "bench-reset"
	poolExecRole  = "pool-exec-byte" // naive child: exec → main → one byte on fd 3

	poolWaitTimeout = 15 * time.Second
)

func init() {
	actors.MustDefine(actors.Spec{Name: poolBlockCode, Run: func(ctx context.Context, _ actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
	actors.MustDefine(actors.Spec{Name: resetShmCode, StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: []shmactor.Region{{Name: resetRegion, Size: 4096}},
		Run: func(ctx context.Context, w actors.Worker) error {
			mem, err := w.Segment().Region(resetRegion)
			if err != nil {
				return err
			}
			shmactor.Uint64At(mem, 0).Add(1)
			<-ctx.Done()
			return nil
		}})
	RegisterRole(poolExecRole, func() int {
		f := os.NewFile(3, "bench")
		if _, err := f.Write([]byte{1}); err != nil {
			return 1
		}
		return 0
	})
	RegisterSuite(Suite{Name: "pool", Run: runPool, IDs: []string{
		"pool.warm.p50", "pool.warm.p99", "pool.warm.vs_pg", "pool.warm.vs_pg_first_log",
		"pool.cold.p50", "pool.restart.p50", "pool.restart.vs_cold",
	}})
	RegisterSuite(Suite{Name: "reset", Run: runReset, IDs: []string{
		"reset.warm.p50", "reset.warm.vs_pg", "reset.cold.p50",
	}})
}

func poolLogf(suite, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+suite+": "+format+"\n", args...)
}

// ---- logging: count every warning, drop the ones each kill causes ----

type poolLogCounts struct {
	mu sync.Mutex
	n  map[string]int
}

type poolLogHandler struct {
	slog.Handler
	c *poolLogCounts
}

func (h poolLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h poolLogHandler) Handle(ctx context.Context, r slog.Record) error {
	key, drop := r.Message, false
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case a.Key == "to" && r.Message == "runtime: worker state":
			key += " to=" + a.Value.String()
			drop = a.Value.String() == "crashed"
		case a.Key == "reason":
			key += " reason=" + a.Value.String()
		case a.Key == "err" && strings.Contains(a.Value.String(), "connection reset by peer"):
			key += " (ECONNRESET)"
			drop = true
		}
		return true
	})
	if r.Message == "runtime: shared-memory worker crashed; resetting the shared-memory group" {
		drop = true
	}
	h.c.mu.Lock()
	h.c.n[key]++
	h.c.mu.Unlock()
	if drop {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h poolLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return poolLogHandler{h.Handler.WithAttrs(as), h.c}
}
func (h poolLogHandler) WithGroup(g string) slog.Handler {
	return poolLogHandler{h.Handler.WithGroup(g), h.c}
}

func (c *poolLogCounts) report(suite string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range c.n {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		poolLogf(suite, "runtime warnings: %d × %q", c.n[k], k)
	}
}

// ---- event recorder ----

// poolRec records a runtime's events in publish order; the subscriber only
// appends (it runs inside the postmaster's work).
type poolRec struct {
	mu   sync.Mutex
	evs  []bgw.Event
	ping chan struct{}
}

func newPoolRec(rt *bgw.Runtime) (*poolRec, func()) {
	r := &poolRec{ping: make(chan struct{}, 1)}
	unsub := rt.Subscribe(func(e bgw.Event) {
		r.mu.Lock()
		r.evs = append(r.evs, e)
		r.mu.Unlock()
		select {
		case r.ping <- struct{}{}:
		default:
		}
	})
	return r, unsub
}

func (r *poolRec) clear() {
	r.mu.Lock()
	r.evs = r.evs[:0]
	r.mu.Unlock()
}

// until waits until done(events so far) is true and returns a copy of the events.
func (r *poolRec) until(ctx context.Context, what string, done func([]bgw.Event) bool) ([]bgw.Event, error) {
	deadline := time.NewTimer(poolWaitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := done(r.evs)
		var cp []bgw.Event
		if ok {
			cp = slices.Clone(r.evs)
		}
		r.mu.Unlock()
		if ok {
			return cp, nil
		}
		select {
		case <-r.ping:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			return nil, fmt.Errorf("%s: not within %v; %d events since: %s", what, poolWaitTimeout, len(r.evs), poolDescribe(r.evs))
		}
	}
}

func poolDescribe(evs []bgw.Event) string {
	var b strings.Builder
	for i, e := range evs {
		if i == 40 {
			b.WriteString(" …")
			break
		}
		switch e := e.(type) {
		case bgw.WorkerEvent:
			fmt.Fprintf(&b, " [%s#%d %v→%v", e.Name, e.Incarnation, e.From, e.To)
			if e.Exit != nil {
				fmt.Fprintf(&b, " %s", e.Exit.Reason)
			}
			b.WriteString("]")
		case bgw.SegmentEvent:
			fmt.Fprintf(&b, " [segment gen %d reset=%v]", e.Generation, e.Reset)
		case bgw.GroupResetEvent:
			fmt.Fprintf(&b, " [group reset cause %s gen %d failed=%v]", e.Cause, e.Generation, e.Failed)
		default:
			fmt.Fprintf(&b, " [%T]", e)
		}
	}
	return b.String()
}

// ---- shared helpers ----

func poolNewRuntime(cfg bgw.Config, logs *poolLogCounts) (*bgw.Runtime, error) {
	cfg.Workers = []actors.Spec{}
	cfg.Logger = slog.New(poolLogHandler{Handler: slog.NewTextHandler(os.Stderr, nil), c: logs})
	return bgw.New(cfg)
}

func poolShutdown(rt *bgw.Runtime) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return rt.Shutdown(ctx, phases.Fast)
}

// poolWaitIdle waits until the runtime's warm pool holds want idle children.
func poolWaitIdle(ctx context.Context, rt *bgw.Runtime, want int) error {
	deadline := time.Now().Add(poolWaitTimeout)
	for len(rt.IdleChildren()) < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("warm pool did not reach %d idle children within %v (has %d)", want, poolWaitTimeout, len(rt.IdleChildren()))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func poolSpec(name string) actors.Spec {
	return actors.Spec{Name: name, Type: poolBlockCode, StartAt: phases.PostmasterStart,
		Restart: actors.NeverRestart, StopTimeout: 2 * time.Second}
}

// poolStartOnce times StartWorker → WaitStarted and stops the worker untimed.
func poolStartOnce(ctx context.Context, rt *bgw.Runtime, name string) (time.Duration, time.Time, error) {
	t0 := time.Now()
	h, err := rt.StartWorker(ctx, poolSpec(name))
	if err != nil {
		return 0, t0, err
	}
	_, err = h.WaitStarted(ctx)
	d := time.Since(t0)
	if err != nil {
		return 0, t0, err
	}
	if err := stopWorker(ctx, h); err != nil {
		return 0, t0, err
	}
	return d, t0, nil
}

// poolExecOnce times exec of the naive child → its byte on fd 3, and reaps it untimed.
func poolExecOnce() (time.Duration, error) { return timeChildByte(poolExecRole) }

func poolMed(ds []time.Duration) float64 { return bridgeMS(bridgeQuantile(ds, 0.5)) }

// ---- suite pool ----

func runPool(ctx context.Context) (rs []Result, err error) {
	scale := ScaleOf(ctx)
	n := func(base, least int) int { return max(least, int(float64(base)*scale)) }
	t0 := time.Now()
	logs := &poolLogCounts{n: map[string]int{}}
	defer logs.report("pool")
	warm, err := poolNewRuntime(bgw.Config{WarmPool: 4}, logs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := poolShutdown(warm); serr != nil && err == nil {
			err = serr
		}
	}()
	cold, err := poolNewRuntime(bgw.Config{WarmPool: -1}, logs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := poolShutdown(cold); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := warm.Start(ctx); err != nil {
		return nil, err
	}
	if err := cold.Start(ctx); err != nil {
		return nil, err
	}
	wrec, unsubW := newPoolRec(warm)
	defer unsubW()
	crec, unsubC := newPoolRec(cold)
	defer unsubC()

	r, warm50, err := poolStarts(ctx, warm, cold, wrec, n(50, 5))
	rs = append(rs, r...)
	if err != nil {
		return rs, fmt.Errorf("bench: pool starts: %w", err)
	}
	r, err = poolRestarts(ctx, warm, cold, wrec, crec, n(30, 5), warm50)
	rs = append(rs, r...)
	if err != nil {
		return rs, fmt.Errorf("bench: pool restarts: %w", err)
	}
	poolLogf("pool", "suite done in %.1fs", time.Since(t0).Seconds())
	return rs, nil
}

// poolStarts measures warm starts, cold starts and the naive exec, rotating
// their order each round, after two warm-up rounds. It also returns the
// warm start's p50.
func poolStarts(ctx context.Context, warm, cold *bgw.Runtime, wrec *poolRec, n int) ([]Result, time.Duration, error) {
	const warmup = 2
	var wd, cd, xd []time.Duration
	var pend, strt, run []time.Duration // warm start: call → Pending, Starting, Running events
	coldFlag := 0
	for i := range warmup + n {
		var dw, dc, dx time.Duration
		steps := []func() error{
			func() error {
				if err := poolWaitIdle(ctx, warm, 4); err != nil {
					return err
				}
				wrec.clear()
				goruntime.GC()
				var err error
				var t0 time.Time
				if dw, t0, err = poolStartOnce(ctx, warm, "pool-warm"); err != nil {
					return fmt.Errorf("warm start: %w", err)
				}
				wrec.mu.Lock()
				for _, e := range wrec.evs {
					we, ok := e.(bgw.WorkerEvent)
					// Pending comes before the first incarnation (0), the rest with it (1).
					if !ok || we.Name != "pool-warm" || we.Incarnation > 1 {
						continue
					}
					switch we.To {
					case bgw.Pending:
						pend = append(pend, we.At.Sub(t0))
					case bgw.Starting:
						strt = append(strt, we.At.Sub(t0))
						if we.Cold {
							coldFlag++
						}
					case bgw.Running:
						run = append(run, we.At.Sub(t0))
					}
				}
				wrec.mu.Unlock()
				return nil
			},
			func() error {
				goruntime.GC()
				var err error
				if dc, _, err = poolStartOnce(ctx, cold, "pool-cold"); err != nil {
					return fmt.Errorf("cold start: %w", err)
				}
				return nil
			},
			func() error {
				goruntime.GC()
				var err error
				if dx, err = poolExecOnce(); err != nil {
					return fmt.Errorf("naive exec: %w", err)
				}
				return nil
			},
		}
		for k := range steps {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
			if err := steps[(i+k)%len(steps)](); err != nil {
				return nil, 0, err
			}
		}
		if i >= warmup {
			wd, cd, xd = append(wd, dw), append(cd, dc), append(xd, dx)
		}
	}
	if coldFlag > 0 {
		poolLogf("pool", "%d of %d warm starts were Cold despite a full pool", coldFlag, warmup+n)
	}
	w50, c50, x50 := poolMed(wd), poolMed(cd), poolMed(xd)
	w99, c99 := bridgeMS(bridgeQuantile(wd, 0.99)), bridgeMS(bridgeQuantile(cd, 0.99))
	poolLogf("pool", "start: warm p50 %.3f p90 %.3f max %.3f ms; cold p50 %.2f p90 %.2f ms; naive exec→byte p50 %.2f ms",
		w50, bridgeMS(bridgeQuantile(wd, 0.9)), bridgeMS(slices.Max(wd)), c50, bridgeMS(bridgeQuantile(cd, 0.9)), x50)
	poolLogf("pool", "warm start medians from the StartWorker call: Pending event %.3f, Starting (idle child assigned) %.3f, Running (ready) %.3f, WaitStarted returned %.3f ms",
		poolMed(pend), poolMed(strt), poolMed(run), w50)
	return []Result{{
		ID:            "pool.warm.p50",
		Name:          fmt.Sprintf("warm start (WarmPool 4) p50 (n=%d)", n),
		Value:         w50,
		Baseline:      "cold start p50 (WarmPool -1)",
		BaselineValue: c50,
		Unit:          "ms",
		Target:        []Cond{AtMost(0.15), RatioAtMost(0.05)},
	}, {
		ID:            "pool.warm.p99",
		Name:          fmt.Sprintf("warm start (WarmPool 4) p99 (n=%d)", n),
		Value:         w99,
		Baseline:      "cold start p99 (WarmPool -1)",
		BaselineValue: c99,
		Unit:          "ms",
		Target:        []Cond{AtMost(0.5)},
	}, {
		ID:            "pool.warm.vs_pg",
		Name:          fmt.Sprintf("warm start (WarmPool 4), to ready, p50 (n=%d)", n),
		Value:         w50,
		Baseline:      "PG fork-only dynamic launch p50 (" + pgRef + ")",
		BaselineValue: pgForkLaunchMS,
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(0.6)},
	}, {
		ID:            "pool.warm.vs_pg_first_log",
		Name:          fmt.Sprintf("warm start (WarmPool 4), to ready, p50 (n=%d)", n),
		Value:         w50,
		Baseline:      "PG launch→first log line, low end (" + pgRef + ")",
		BaselineValue: pgFirstLogMS,
		Unit:          "ms",
	}, {
		ID:            "pool.cold.p50",
		Name:          fmt.Sprintf("cold start (WarmPool -1) p50 (n=%d)", n),
		Value:         c50,
		Baseline:      "naive child exec→main→byte p50",
		BaselineValue: x50,
		Unit:          "ms",
		Target:        []Cond{AtMost(5)},
	}}, bridgeQuantile(wd, 0.5), nil
}

// poolKiller is one restarting worker on one runtime.
type poolKiller struct {
	rt   *bgw.Runtime
	rec  *poolRec
	name string
	pid  int
	inc  uint64
	pool int // warm pool size to wait for, 0 = none
}

type poolRestart struct {
	total, noticed, processed, starting time.Duration
	teardown                            time.Duration // SIGKILL → the process has exited (its pidfd readable)
	cold                                bool
}

func (k *poolKiller) start(ctx context.Context) error {
	k.rec.clear()
	sp := poolSpec(k.name)
	sp.Restart = actors.Fixed(0)
	sp.Intensity = actors.Intensity{MaxRestarts: -1}
	h, err := k.rt.StartWorker(ctx, sp)
	if err != nil {
		return err
	}
	if k.pid, err = h.WaitStarted(ctx); err != nil {
		return err
	}
	k.inc = 1
	return nil
}

// kill SIGKILLs the worker and waits for its next Running event. It also
// times the kernel's teardown of the killed process, SIGKILL → exited, on
// a pidfd of its own (readable once the process has exited, whoever reaps
// it), independently of the runtime's reaper.
func (k *poolKiller) kill(ctx context.Context) (poolRestart, error) {
	k.rec.clear()
	pidfd, err := unix.PidfdOpen(k.pid, 0)
	if err != nil {
		return poolRestart{}, fmt.Errorf("pidfd_open %d: %w", k.pid, err)
	}
	defer unix.Close(pidfd)
	t0 := time.Now()
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
		return poolRestart{}, fmt.Errorf("kill %d: %w", k.pid, err)
	}
	teardown, err := poolAwaitExit(pidfd, t0)
	if err != nil {
		return poolRestart{}, fmt.Errorf("teardown of %d: %w", k.pid, err)
	}
	var up bgw.WorkerEvent
	evs, err := k.rec.until(ctx, "restart of "+k.name, func(evs []bgw.Event) bool {
		for _, e := range evs {
			if we, ok := e.(bgw.WorkerEvent); ok && we.Name == k.name && we.To == bgw.Running && we.Incarnation > k.inc {
				up = we
				return true
			}
		}
		return false
	})
	if err != nil {
		return poolRestart{}, err
	}
	r := poolRestart{total: up.At.Sub(t0), teardown: teardown}
	for _, e := range evs {
		we, ok := e.(bgw.WorkerEvent)
		if !ok || we.Name != k.name {
			continue
		}
		if we.Exit != nil && r.noticed == 0 {
			r.noticed, r.processed = we.Exit.At.Sub(t0), we.At.Sub(t0)
		}
		if we.To == bgw.Starting && we.Incarnation == up.Incarnation {
			r.starting, r.cold = we.At.Sub(t0), we.Cold
		}
	}
	k.pid, k.inc = up.PID, up.Incarnation
	return r, nil
}

// poolAwaitExit waits until the process of pidfd has exited and returns
// the time since t0.
func poolAwaitExit(pidfd int, t0 time.Time) (time.Duration, error) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		k, err := unix.Poll(fds, int(poolWaitTimeout/time.Millisecond))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case k == 0:
			return 0, fmt.Errorf("not exited within %v", poolWaitTimeout)
		}
		return time.Since(t0), nil
	}
}

// poolRestarts kills a Fixed(0) worker on the warm runtime and on the cold
// one, alternating, and times SIGKILL → the next Running event. The warm
// restart's baseline is what it cannot avoid: the kernel's teardown of the
// same child, measured on each kill, plus warm50, the warm start's p50 of
// this run.
func poolRestarts(ctx context.Context, warm, cold *bgw.Runtime, wrec, crec *poolRec, n int, warm50 time.Duration) ([]Result, error) {
	ks := []*poolKiller{
		{rt: warm, rec: wrec, name: "pool-kill", pool: 4},
		{rt: cold, rec: crec, name: "pool-kill"},
	}
	for _, k := range ks {
		if err := k.start(ctx); err != nil {
			return nil, err
		}
	}
	const warmup = 2
	res := [2][]poolRestart{}
	for i := range warmup + n {
		for j := range ks {
			k := ks[(i+j)%2]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			// Quiet machine before each kill: the warm pool refilled, whichever runtime is killed.
			if err := poolWaitIdle(ctx, warm, 4); err != nil {
				return nil, err
			}
			time.Sleep(5 * time.Millisecond)
			goruntime.GC()
			r, err := k.kill(ctx)
			if err != nil {
				return nil, err
			}
			if i >= warmup {
				idx := 0
				if k.pool == 0 {
					idx = 1
				}
				res[idx] = append(res[idx], r)
			}
		}
	}
	get := func(rs []poolRestart, f func(poolRestart) time.Duration) []time.Duration {
		out := make([]time.Duration, len(rs))
		for i, r := range rs {
			out[i] = f(r)
		}
		return out
	}
	p50, down50 := [2]float64{}, [2]float64{}
	for i, what := range []string{"warm (pool 4)", "cold (no pool)"} {
		rs := res[i]
		colds := 0
		for _, r := range rs {
			if r.cold {
				colds++
			}
		}
		tot := get(rs, func(r poolRestart) time.Duration { return r.total })
		p50[i] = poolMed(tot)
		down50[i] = poolMed(get(rs, func(r poolRestart) time.Duration { return r.teardown }))
		poolLogf("pool", "restart %s: p50 %.2f p90 %.2f max %.2f ms; medians from the kill: exited (pidfd) %.2f, reaped %.2f, crash handled %.2f, Starting %.2f, Running %.2f ms; %d of %d starts cold",
			what, p50[i], bridgeMS(bridgeQuantile(tot, 0.9)), bridgeMS(slices.Max(tot)), down50[i],
			poolMed(get(rs, func(r poolRestart) time.Duration { return r.noticed })),
			poolMed(get(rs, func(r poolRestart) time.Duration { return r.processed })),
			poolMed(get(rs, func(r poolRestart) time.Duration { return r.starting })),
			p50[i], colds, len(rs))
	}
	return []Result{{
		ID:            "pool.restart.p50",
		Name:          fmt.Sprintf("SIGKILL→Running, Fixed(0), warm pool 4 p50 (n=%d)", n),
		Value:         p50[0],
		Baseline:      fmt.Sprintf("SIGKILL→exited, same child, p50 %.2f + warm start p50 %.3f", down50[0], bridgeMS(warm50)),
		BaselineValue: down50[0] + bridgeMS(warm50),
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(1.1)},
	}, {
		ID:            "pool.restart.vs_cold",
		Name:          fmt.Sprintf("SIGKILL→Running, Fixed(0), warm pool 4 p50 (n=%d)", n),
		Value:         p50[0],
		Baseline:      "same, cold (WarmPool -1) p50",
		BaselineValue: p50[1],
		Unit:          "ms",
		Target:        []Cond{AtMost(1.5)},
	}}, nil
}

// ---- suite reset ----

const resetMembers = 8

// resetGroup is one runtime with resetMembers shared-memory workers.
type resetGroup struct {
	what  string
	rt    *bgw.Runtime
	rec   *poolRec
	unsub func()
	pool  int
	pids  map[string]int
	incs  map[string]uint64
	gen   uint64
}

type resetTiming struct {
	total, noticed, stopped, rebuilt, starting time.Duration
	firstUp, lastUp                            time.Duration // after the segment event
	firstStop                                  time.Duration // first other member's exit, after the reset began
	victimLast                                 bool          // the killed member was the last one up
	colds                                      int
	segments                                   int
}

func newResetGroup(ctx context.Context, what string, pool int, logs *poolLogCounts) (*resetGroup, error) {
	wp := pool
	if wp == 0 {
		wp = -1
	}
	rt, err := poolNewRuntime(bgw.Config{WarmPool: wp, GroupStopTimeout: time.Second,
		GroupResetIntensity: actors.Intensity{MaxRestarts: -1}}, logs)
	if err != nil {
		return nil, err
	}
	g := &resetGroup{what: what, rt: rt, pool: pool, pids: map[string]int{}, incs: map[string]uint64{}}
	g.rec, g.unsub = newPoolRec(rt)
	if err := rt.Start(ctx); err != nil {
		return g, err
	}
	if err := rt.Advance(ctx, phases.ConsistentState); err != nil {
		return g, err
	}
	if seg := rt.Segment(); seg != nil {
		g.gen = seg.Generation()
	}
	for i := range resetMembers {
		name := fmt.Sprintf("reset-%d", i)
		h, err := rt.StartWorker(ctx, actors.Spec{Name: name, Type: resetShmCode, StartAt: phases.ConsistentState,
			SharedMemory: true, Restart: actors.Fixed(0), Intensity: actors.Intensity{MaxRestarts: -1},
			StopTimeout: time.Second})
		if err != nil {
			return g, err
		}
		if g.pids[name], err = h.WaitStarted(ctx); err != nil {
			return g, err
		}
		g.incs[name] = 1
	}
	return g, nil
}

func (g *resetGroup) close() error {
	if g.unsub != nil {
		g.unsub()
	}
	return poolShutdown(g.rt)
}

// reset SIGKILLs member victim and waits until every member is Running
// again, with a higher incarnation, after the SegmentEvent of the reset.
func (g *resetGroup) reset(ctx context.Context, victim int) (resetTiming, error) {
	g.rec.clear()
	vname := fmt.Sprintf("reset-%d", victim)
	t0 := time.Now()
	if err := syscall.Kill(g.pids[vname], syscall.SIGKILL); err != nil {
		return resetTiming{}, fmt.Errorf("kill %s (%d): %w", vname, g.pids[vname], err)
	}
	segAt := -1
	var lastUp time.Time
	evs, err := g.rec.until(ctx, g.what+" reset", func(evs []bgw.Event) bool {
		segAt = -1
		for i, e := range evs {
			if se, ok := e.(bgw.SegmentEvent); ok && se.Reset && se.Generation > g.gen {
				segAt = i
				break
			}
		}
		if segAt < 0 {
			return false
		}
		up := map[string]bool{}
		for _, e := range evs[segAt+1:] {
			if we, ok := e.(bgw.WorkerEvent); ok && we.To == bgw.Running && we.Incarnation > g.incs[we.Name] {
				up[we.Name] = true
				lastUp = we.At
			}
		}
		return len(up) == resetMembers
	})
	if err != nil {
		return resetTiming{}, err
	}
	var r resetTiming
	r.total = lastUp.Sub(t0)
	var resetAt, firstExit, lastExit, segTime, lastStart time.Time
	for i, e := range evs {
		switch e := e.(type) {
		case bgw.GroupResetEvent:
			if resetAt.IsZero() {
				resetAt = e.At
			}
			if e.Failed {
				return r, fmt.Errorf("%s: group failed: %s", g.what, poolDescribe(evs))
			}
		case bgw.SegmentEvent:
			r.segments++
			if i == segAt {
				segTime = e.At
				g.gen = e.Generation
			}
		case bgw.WorkerEvent:
			if i < segAt && e.Exit != nil && e.Name != vname {
				if e.At.After(lastExit) {
					lastExit = e.At
				}
				if firstExit.IsZero() || e.At.Before(firstExit) {
					firstExit = e.At
				}
			}
			if i > segAt && e.To == bgw.Starting {
				lastStart = e.At
				if e.Cold {
					r.colds++
				}
			}
			if i > segAt && e.To == bgw.Running && e.Incarnation > g.incs[e.Name] {
				g.incs[e.Name], g.pids[e.Name] = e.Incarnation, e.PID
				if r.firstUp == 0 {
					r.firstUp = e.At.Sub(segTime)
				}
				r.lastUp = e.At.Sub(segTime)
				r.victimLast = e.Name == vname
			}
		}
	}
	r.noticed = resetAt.Sub(t0)
	r.stopped = lastExit.Sub(resetAt)
	r.firstStop = firstExit.Sub(resetAt)
	r.rebuilt = segTime.Sub(lastExit)
	r.starting = lastStart.Sub(segTime)
	return r, nil
}

func runReset(ctx context.Context) (rs []Result, err error) {
	scale := ScaleOf(ctx)
	n := max(3, int(15*scale))
	t0 := time.Now()
	logs := &poolLogCounts{n: map[string]int{}}
	defer logs.report("reset")
	var groups []*resetGroup
	defer func() {
		for _, g := range groups {
			if cerr := g.close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	for _, c := range []struct {
		what string
		pool int
	}{{"warm (pool 8)", resetMembers}, {"cold (no pool)", 0}} {
		g, err := newResetGroup(ctx, c.what, c.pool, logs)
		if g != nil {
			groups = append(groups, g)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: reset setup %s: %w", c.what, err)
		}
	}
	warm := groups[0]
	const warmup = 2
	res := make([][]resetTiming, len(groups))
	for i := range warmup + n {
		for j := range groups {
			g := groups[(i+j)%len(groups)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := poolWaitIdle(ctx, warm.rt, warm.pool); err != nil {
				return nil, err
			}
			time.Sleep(10 * time.Millisecond)
			goruntime.GC()
			r, err := g.reset(ctx, i%resetMembers)
			if err != nil {
				return nil, fmt.Errorf("bench: reset %d: %w", i, err)
			}
			if i >= warmup {
				gi := 0
				if g != warm {
					gi = 1
				}
				res[gi] = append(res[gi], r)
			}
		}
	}
	p50 := make([]float64, len(groups))
	for gi, g := range groups {
		get := func(f func(resetTiming) time.Duration) []time.Duration {
			out := make([]time.Duration, len(res[gi]))
			for i, r := range res[gi] {
				out[i] = f(r)
			}
			return out
		}
		tot := get(func(r resetTiming) time.Duration { return r.total })
		p50[gi] = poolMed(tot)
		colds, extra := 0, 0
		for _, r := range res[gi] {
			colds += r.colds
			extra += r.segments - 1
		}
		poolLogf("reset", "%s: p50 %.2f p90 %.2f max %.2f ms; medians: kill→reset begun %.2f, stop of the other %d (first exit %.2f) %.2f, →segment built %.2f, →last Starting %.2f ms, →all Running (rest); cold starts %d of %d; extra segments %d",
			g.what, p50[gi], bridgeMS(bridgeQuantile(tot, 0.9)), bridgeMS(slices.Max(tot)),
			poolMed(get(func(r resetTiming) time.Duration { return r.noticed })), resetMembers-1,
			poolMed(get(func(r resetTiming) time.Duration { return r.firstStop })),
			poolMed(get(func(r resetTiming) time.Duration { return r.stopped })),
			poolMed(get(func(r resetTiming) time.Duration { return r.rebuilt })),
			poolMed(get(func(r resetTiming) time.Duration { return r.starting })),
			colds, len(res[gi])*resetMembers, extra)
		// ready = total − the rest, per reset, median
		ready := get(func(r resetTiming) time.Duration { return r.total - r.noticed - r.stopped - r.rebuilt - r.starting })
		vl := 0
		for _, r := range res[gi] {
			if r.victimLast {
				vl++
			}
		}
		poolLogf("reset", "%s: last Starting → all Running median %.2f ms; from the segment: first member Running %.2f, last %.2f ms (medians); killed member last up in %d of %d",
			g.what, poolMed(ready), poolMed(get(func(r resetTiming) time.Duration { return r.firstUp })),
			poolMed(get(func(r resetTiming) time.Duration { return r.lastUp })), vl, len(res[gi]))
	}
	poolLogf("reset", "suite done in %.1fs", time.Since(t0).Seconds())
	return []Result{{
		ID:            "reset.warm.p50",
		Name:          fmt.Sprintf("reset 8 shm, kill→all Running, pool 8 p50 (n=%d)", n),
		Value:         p50[0],
		Baseline:      "same, cold (WarmPool -1) p50",
		BaselineValue: p50[1],
		Unit:          "ms",
		Target:        []Cond{AtMost(20), RatioAtMost(0.15)},
	}, {
		ID:            "reset.warm.vs_pg",
		Name:          fmt.Sprintf("reset 8 shm, kill→all Running, pool 8 p50 (n=%d)", n),
		Value:         p50[0],
		Baseline:      "PG kill -9 → every worker back (" + pgRef + ")",
		BaselineValue: pgCrashRestartMS,
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(0.05)},
	}, {
		ID:            "reset.cold.p50",
		Name:          fmt.Sprintf("reset 8 shm, kill→all Running, no pool p50 (n=%d)", n),
		Value:         p50[1],
		Baseline:      "PG kill -9 → every worker back (" + pgRef + ")",
		BaselineValue: pgCrashRestartMS,
		Unit:          "ms",
		Target:        []Cond{AtMost(20)},
	}}, nil
}
