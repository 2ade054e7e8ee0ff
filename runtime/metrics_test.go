package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// metricSet is a flattened view of gathered metrics: `name{k="v",...}` →
// value. Counters and gauges give their value, histograms their
// _count and _sum. Label pairs are sorted by name.
type metricSet map[string]float64

func mkey(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	var b strings.Builder
	b.WriteString(name + "{")
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", p.k, p.v)
	}
	b.WriteByte('}')
	return b.String()
}

func flatten(mfs []*dto.MetricFamily) metricSet {
	out := metricSet{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var kv []string
			for _, lp := range m.GetLabel() {
				kv = append(kv, lp.GetName(), lp.GetValue())
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[mkey(mf.GetName(), kv...)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[mkey(mf.GetName(), kv...)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mkey(mf.GetName()+"_count", kv...)] = float64(m.GetHistogram().GetSampleCount())
				out[mkey(mf.GetName()+"_sum", kv...)] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func gather(t *testing.T, g prometheus.Gatherer) ([]*dto.MetricFamily, metricSet) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return mfs, flatten(mfs)
}

// fromEvents derives what the metrics must say from the harness's event
// log. static are the registered workers (label = name),
// dynamic the dynamic ones (label = type). A worker with no event is
// registered.
func (h *harness) fromEvents(static, dynamic []string) metricSet {
	h.mu.Lock()
	log := slices.Clone(h.log)
	h.mu.Unlock()
	want := metricSet{}
	final := map[string]WorkerState{}
	for _, n := range append(slices.Clone(static), dynamic...) {
		final[n] = Registered
	}
	for _, e := range log {
		we, ok := e.(WorkerEvent)
		if !ok {
			continue
		}
		lbl := we.Name
		if slices.Contains(dynamic, we.Name) {
			lbl = we.Type
		} else if !slices.Contains(static, we.Name) {
			h.t.Fatalf("event of unexpected worker %q", we.Name)
		}
		final[we.Name] = we.To
		if we.To == Starting {
			want[mkey("bgworker_worker_starts_total", "worker", lbl)]++
			if we.Incarnation > 1 {
				want[mkey("bgworker_worker_restarts_total", "worker", lbl)]++
			}
		}
		if we.To == Running {
			want[mkey("bgworker_worker_spawn_ready_seconds_count", "worker", lbl)]++
		}
		if we.Exit != nil {
			want[mkey("bgworker_worker_exits_total", "worker", lbl, "reason", we.Exit.Reason)]++
			if we.Exit.Crash {
				want[mkey("bgworker_worker_crashes_total", "worker", lbl, "reason", we.Exit.Reason)]++
			}
		}
	}
	for _, s := range States() {
		want[mkey("bgworker_workers", "state", s.String())] = 0
	}
	inUse := 0
	for _, st := range final {
		want[mkey("bgworker_workers", "state", st.String())]++
		if st != Stopped && st != Failed && st != Crashed { // Crashed at rest is terminal
			inUse++
		}
	}
	want["bgworker_slots_in_use"] = float64(inUse)
	return want
}

// compared are the families checked against the event log; a series the
// events expect but the registry lacks counts as zero, and the reverse.
var compared = []string{
	"bgworker_worker_starts_total", "bgworker_worker_restarts_total", "bgworker_worker_exits_total",
	"bgworker_worker_crashes_total", "bgworker_worker_spawn_ready_seconds_count", "bgworker_workers",
	"bgworker_slots_in_use",
}

func isCompared(k string) bool {
	name, _, _ := strings.Cut(k, "{")
	return slices.Contains(compared, name)
}

func diffMetrics(want, got metricSet) []string {
	var out []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		if isCompared(k) {
			keys[k] = true
		}
	}
	for k := range keys {
		if want[k] != got[k] {
			out = append(out, fmt.Sprintf("%s = %v, events say %v", k, got[k], want[k]))
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricsAgreeWithEvents: through crashes, restarts,
// an exit 1, a done worker, a failed worker and a shutdown, the counters
// and gauges match what the event log says happened; the exposition
// passes promlint; worker labels come only from registered names and
// dynamic types.
func TestMetricsAgreeWithEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	fault := func(name, action string, mod func(*actors.Spec)) actors.Spec {
		sp := actors.Spec{Name: name, Type: "fault", Arg: []byte(action), StartAt: phases.PostmasterStart,
			Restart: actors.Fixed(20 * time.Millisecond), StopTimeout: time.Second}
		if mod != nil {
			mod(&sp)
		}
		return sp
	}
	static := []string{"steady", "crashy", "quitter", "done", "later"}
	dynamic := []string{"dyn", "dyncrash", "dynlater"}
	h := newHarness(t, Config{Registry: reg, Workers: []actors.Spec{
		fault("steady", "run", nil),
		// Panics once ready: crash (exit2), restarted twice, then failed.
		fault("crashy", "panic", func(s *actors.Spec) { s.Intensity = actors.Intensity{MaxRestarts: 2, Window: time.Minute} }),
		// Exits 1: restarted (not a crash) once, then failed.
		fault("quitter", "exit1", func(s *actors.Spec) { s.Intensity = actors.Intensity{MaxRestarts: 1, Window: time.Minute} }),
		fault("done", "exit0", nil),
		fault("later", "run", func(s *actors.Spec) { s.StartAt = phases.RecoveryFinished }),
	}})
	h.startFault("dyn", "run", nil)
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "dyncrash", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(20 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: 1, Window: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	// Waits for recovery_finished: a dynamic worker in state registered.
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "dynlater", Type: "fault", Arg: []byte("run"), StartAt: phases.RecoveryFinished,
		StopTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}

	settled := func(want map[string]WorkerState) func() bool {
		return func() bool {
			for n, st := range want {
				evs := h.workerEvents(n)
				if len(evs) == 0 || evs[len(evs)-1].To != st {
					return false
				}
			}
			return true
		}
	}
	h.eventually("workers settled", settled(map[string]WorkerState{
		"steady": Running, "crashy": Failed, "quitter": Failed, "done": Stopped, "dyn": Running, "dyncrash": Failed,
	}))

	check := func(when string) metricSet {
		t.Helper()
		mfs, got := gather(t, reg)
		for _, d := range diffMetrics(h.fromEvents(static, dynamic), got) {
			t.Errorf("%s: %s", when, d)
		}
		problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
		if err != nil {
			t.Fatalf("promlint: %v", err)
		}
		for _, p := range problems {
			t.Errorf("%s: promlint: %s: %s", when, p.Metric, p.Text)
		}
		// Bounded labels: registered names and dynamic types, never a pid.
		allowed := append(slices.Clone(static), "fault")
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "worker" && !slices.Contains(allowed, lp.GetValue()) {
						t.Errorf("%s: %s has worker=%q, not a registered name or type", when, mf.GetName(), lp.GetValue())
					}
					if lp.GetName() == "pid" {
						t.Errorf("%s: %s has a pid label", when, mf.GetName())
					}
				}
			}
		}
		// workers{state} counts every row of the status table once.
		sum := 0.0
		for _, s := range States() {
			sum += got[mkey("bgworker_workers", "state", s.String())]
		}
		if rows := len(h.rt.Workers()); sum != float64(rows) {
			t.Errorf("%s: bgworker_workers sums to %v over the states; Workers() has %d rows", when, sum, rows)
		}
		return got
	}

	got := check("settled")
	// The scenario really happened: the comparison is not vacuous.
	for k, min := range map[string]float64{
		mkey("bgworker_worker_crashes_total", "worker", "crashy", "reason", ReasonExit2): 3,
		mkey("bgworker_worker_restarts_total", "worker", "crashy"):                       2,
		mkey("bgworker_worker_exits_total", "worker", "quitter", "reason", ReasonExit1):  2,
		mkey("bgworker_worker_exits_total", "worker", "done", "reason", ReasonExit0):     1,
		mkey("bgworker_worker_crashes_total", "worker", "fault", "reason", ReasonExit2):  2,
		mkey("bgworker_workers", "state", "failed"):                                      3,
		mkey("bgworker_workers", "state", "registered"):                                  2, // "later", "dynlater"
	} {
		if got[k] < min {
			t.Errorf("%s = %v, want >= %v", k, got[k], min)
		}
	}
	if _, ok := got[mkey("bgworker_worker_crashes_total", "worker", "quitter", "reason", ReasonExit1)]; ok {
		t.Error("an exit 1 was counted as a crash")
	}
	if v := got["bgworker_phase"]; v != float64(phases.PostmasterStart) {
		t.Errorf("bgworker_phase = %v, want %d", v, phases.PostmasterStart)
	}
	if v := got["bgworker_slots_max"]; v != 128 {
		t.Errorf("bgworker_slots_max = %v, want 128", v)
	}
	for k, v := range got {
		if strings.HasPrefix(k, "bgworker_worker_backoff_seconds{") && v != 0 {
			t.Errorf("%s = %v with no restart scheduled", k, v)
		}
	}
	// rt.Workers agrees too.
	for _, w := range h.rt.Workers() {
		restarts := 0
		for _, e := range h.workerEvents(w.Name) {
			if e.To == Starting && e.Incarnation > 1 {
				restarts++
			}
		}
		if w.Restarts != restarts {
			t.Errorf("Workers(): %s restarts %d, events say %d", w.Name, w.Restarts, restarts)
		}
	}

	// A later phase starts "later"; the phase gauge follows. The failed
	// dynamic worker's name is taken again by a new worker, which replaces
	// its row.
	if err := h.rt.Advance(ctx(t), phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "dyncrash", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart,
		StopTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	h.eventually("later running", settled(map[string]WorkerState{"later": Running, "dynlater": Running, "dyncrash": Running}))
	got = check("after advance")
	if v := got["bgworker_phase"]; v != float64(phases.RecoveryFinished) {
		t.Errorf("bgworker_phase = %v, want %d", v, phases.RecoveryFinished)
	}

	// Shutdown: the shutdown exits are counted as the events say.
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second*timeoutMult())
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Fatal(err)
	}
	got = check("after shutdown")
	if v := got[mkey("bgworker_workers", "state", "running")]; v != 0 {
		t.Errorf("after shutdown: bgworker_workers{state=running} = %v", v)
	}
}

// TestMetricsPromtool runs `promtool check metrics` on the /metrics body
// of a runtime with its own registry (Go and process collectors included)
// after a crash and a restart. .ci/run installs promtool (Debian's
// prometheus package).
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install prometheus); `promtool check metrics` not run")
	}
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "p", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(20 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
		t.Fatal(err)
	}
	h.startFault("r", "run", nil)
	h.eventually("a restart after a crash", func() bool {
		for _, e := range h.workerEvents("p") {
			if e.To == Running && e.Incarnation > 1 {
				return true
			}
		}
		return false
	})
	code, body := httpDo(t, "GET", "http://"+h.rt.Addr()+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d: %s", code, body)
	}
	for _, name := range []string{"bgworker_worker_restarts_total", "bgworker_worker_crashes_total",
		"bgworker_worker_spawn_ready_seconds_bucket", "bgworker_workers", "go_goroutines", "process_open_fds"} {
		if !bytes.Contains(body, []byte("\n"+name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: ok %s", bytes.TrimSpace(out))
}

// The counters of every registered worker exist at zero right after Start,
// so that rate() and increase() work from the first scrape; a dynamic
// worker's type gets them at its first start.
func TestCountersExistFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, Config{Registry: reg, Workers: []actors.Spec{{Name: "later", Type: "fault", Arg: []byte("run")}}})
	_, got := gather(t, reg)
	for _, k := range []string{
		mkey("bgworker_worker_starts_total", "worker", "later"),
		mkey("bgworker_worker_restarts_total", "worker", "later"),
		mkey("bgworker_worker_crashes_total", "worker", "later", "reason", ReasonExit2),
		mkey("bgworker_worker_crashes_total", "worker", "later", "reason", "signal:KILL"),
	} {
		if v, ok := got[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) right after Start, want 0", k, v, ok)
		}
	}
	if _, ok := got[mkey("bgworker_worker_starts_total", "worker", "fault")]; ok {
		t.Error("a dynamic type's counters exist before any worker of it started")
	}
	h.start("dyn-1", "fault", "run", nil)
	_, got = gather(t, reg)
	if v, ok := got[mkey("bgworker_worker_crashes_total", "worker", "fault", "reason", ReasonHeartbeat)]; !ok || v != 0 {
		t.Errorf("the dynamic type's crash counter = %v (present %v) after its first start, want 0", v, ok)
	}
}

// Every bgworker_ family the runtime registers has a row in docs/metrics.md,
// and every bgworker_ row there (outside the cluster table) names a family
// the runtime registers. A worker is crashed and restarted first so that
// every per-worker family has a series to gather.
func TestMetricsDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, Config{Registry: reg})
	_, pid := h.startFault("documented", "run", nil)
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitState("documented", Crashed)
	h.waitState("documented", Running)
	mfs, _ := gather(t, reg)
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if i := strings.Index(doc, "\n## Cluster"); i >= 0 {
		doc = doc[:i]
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(bgworker_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		rows[m[1]] = true
	}
	served := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		if !strings.HasPrefix(n, "bgworker_") {
			continue
		}
		served[n] = true
		if !rows[n] {
			t.Errorf("%s is registered but has no row in docs/metrics.md", n)
		}
	}
	for n := range rows {
		if !served[n] {
			t.Errorf("docs/metrics.md lists %s, which the runtime does not register", n)
		}
	}
}

// A caller's registry may be scraped at any moment, also while the runtime
// starts and shuts down: the bridge's traffic counters read the launcher
// that Start makes, which must be published safely (the race detector
// checks this test).
func TestScrapeDuringStartAndShutdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	rt, err := New(Config{Registry: reg, Workers: []actors.Spec{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	scraped := make(chan int)
	first := make(chan struct{})
	go func() {
		n := 0
		for {
			if n == 1 {
				close(first)
			}
			select {
			case <-stop:
				scraped <- n
				return
			default:
			}
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	<-first // scraping before Start begins, and on through Shutdown
	if err := rt.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Error(err)
	}
	close(stop)
	<-scraped
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bgworker_bridge_frames_received_total" {
			return
		}
	}
	t.Error("bgworker_bridge_frames_received_total is not registered")
}
