package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// Worker code and subprocess roles of the postmaster tests. The definitions
// come first: the role dispatch at the end of this init needs them (and
// main_test.go's "fault", whose init runs earlier).
func init() {
	// pmt_crashy panics at once: a crash loop. A type of its own, so
	// its metrics are its own.
	actors.MustDefine(actors.Spec{Name: "pmt_crashy", Run: func(context.Context, actors.Worker) error {
		panic("pmt: crash loop")
	}})
	// pmt_panic_on_term is an actor that panics when it receives
	// actors.Terminate.
	actors.MustDefine(actors.Spec{Name: "pmt_panic_on_term", Props: func(actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*actors.Terminate); ok {
				panic("pmt: panic on terminate")
			}
		})
	}})
	// pmt_panic_on_stop is a loop that panics once asked to stop.
	actors.MustDefine(actors.Spec{Name: "pmt_panic_on_stop", Run: func(ctx context.Context, _ actors.Worker) error {
		<-ctx.Done()
		panic("pmt: panic on stop")
	}})
	// pmt_panic_before_reply answers Ping requests with N+1, but panics on
	// Ping{Text: "crash"} before replying.
	actors.MustDefine(actors.Spec{Name: "pmt_panic_before_reply", Props: func(actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*actors.Terminate); ok {
				ctx.Stop(ctx.Self())
			}
			if p, ok := ctx.Message().(Ping); ok && ctx.Sender() != nil {
				if p.Text == "crash" {
					panic("pmt: panic before reply")
				}
				ctx.Respond(Ping{N: p.N + 1, Text: "ok"})
			}
		})
	}})
	// pmt_acker writes records 1, 2, 3, ... to the host actor named by its
	// Arg, one request at a time; a record is done once acknowledged.
	actors.MustDefine(actors.Spec{Name: "pmt_acker", Connect: true, Run: func(ctx context.Context, w actors.Worker) error {
		inc := strconv.FormatUint(w.Incarnation(), 10)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := w.Request(rctx, string(w.Arg()), Ping{N: i, Text: inc})
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if a, ok := r.(Ping); !ok || a.N != i || a.Text != "ack" {
				return fmt.Errorf("bad ack %#v for record %d", r, i)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}})
}

// ---- helpers (prefixed pmt: other test files share this package) ----

// pmtLeakCheck checks that the test leaves no goroutine behind. Call it
// before newHarness: cleanups run last-in first-out, so this runs after the
// harness has shut the runtime down. It first lets the garbage of earlier
// tests go, so that the harness's descriptor baseline holds only what
// is really open: an os.Process that was never released or waited for (as
// os.FindProcess returns) keeps a pidfd open until a GC cleanup closes it,
// which would otherwise happen during this test and look like a change.
func pmtLeakCheck(t *testing.T) {
	t.Helper()
	pmtSettleFds()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// pmtSettleFds collects garbage and waits until the descriptor count has
// been steady for a few polls (at most half a second).
func pmtSettleFds() {
	goruntime.GC()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last, steady := -1, 0
	for end := time.Now().Add(500 * time.Millisecond); steady < 3 && time.Now().Before(end); <-tick.C {
		fds, err := pmtOpenFds()
		if err != nil {
			return
		}
		if len(fds) == last {
			steady++
		} else {
			last, steady = len(fds), 0
		}
	}
}

// pmtChildEnv is the environment for children of the tests: under -race a
// process that exits 0 sleeps 1 s first (the race runtime's
// atexit_sleep_ms), as long as the 1 s grace periods of these tests, so a
// clean stop would race the kill. Without -race the setting is ignored.
func pmtChildEnv() []string {
	v := os.Getenv("GORACE")
	if v != "" {
		v += " "
	}
	return append(os.Environ(), "GORACE="+v+"atexit_sleep_ms=0")
}

// pmtQuiet is a logger for tests whose info lines would drown the output.
func pmtQuiet(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// pmtNoEvent consumes the harness's events until the deadline and fails on
// any that matches: waiting for an absence, with a bound, without sleeping.
func pmtNoEvent(h *harness, until time.Time, what string, match func(Event) bool) {
	h.t.Helper()
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	for {
		select {
		case e := <-h.events:
			if match(e) {
				h.t.Fatalf("unexpected %s: %+v", what, e)
			}
		case <-timer.C:
			return
		}
	}
}

func pmtGauge(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// pmtRow is the part of a status row that must not change when a request
// is refused.
func pmtRows(ws []WorkerInfo) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, fmt.Sprintf("%s/%s/pid=%d/%v/inc=%d/restarts=%d", w.Name, w.Type, w.PID, w.State, w.Incarnation, w.Restarts))
	}
	return out
}

// pmtChildren counts the live processes whose parent is this process.
func pmtChildren() int {
	self := strconv.Itoa(os.Getpid())
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[1] == self {
			n++
		}
	}
	return n
}

// pmtOpenFds returns the open descriptors, not counting the one used to
// read the directory.
func pmtOpenFds() (map[int]bool, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	self := int(d.Fd())
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := map[int]bool{}
	for _, s := range names {
		if fd, err := strconv.Atoi(s); err == nil && fd != self {
			fds[fd] = true
		}
	}
	return fds, nil
}

// pmtLimitFor returns the RLIMIT_NOFILE under which exactly free more
// descriptors can be opened: new descriptors take the lowest free numbers
// below the limit, whatever is open above it (inherited ones may be).
func pmtLimitFor(open map[int]bool, free int) int {
	limit, n := 0, 0
	for ; n < free || open[limit]; limit++ {
		if !open[limit] {
			n++
		}
	}
	return limit
}

// pmtSub is a role subprocess and its output lines.
type pmtSub struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *pmtBuffer
	stdin  io.WriteCloser
	all    []string
}

type pmtBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *pmtBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *pmtBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func pmtStartRole(t *testing.T, role string, env ...string) *pmtSub {
	t.Helper()
	cmd := roleCmd(role)
	cmd.Env = append(append(pmtChildEnv(), "RTTEST_ROLE="+role), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &pmtSub{t: t, cmd: cmd, lines: make(chan string, 4096), stderr: &pmtBuffer{}, stdin: in}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(s.lines)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			for range s.lines {
			}
			cmd.Wait()
		}
	})
	return s
}

// until returns the lines up to (not including) the first equal to stop.
func (s *pmtSub) until(stop string) []string {
	s.t.Helper()
	var got []string
	deadline := time.NewTimer(60 * time.Second * timeoutMult())
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("role ended before %q; lines %q; stderr:\n%s", stop, got, s.tail())
			}
			s.all = append(s.all, l)
			if l == stop {
				return got
			}
			if strings.HasPrefix(l, "error") {
				s.t.Fatalf("role: %s; stderr:\n%s", l, s.tail())
			}
			got = append(got, l)
		case <-deadline.C:
			s.t.Fatalf("timed out waiting for %q from the role; lines %q; stderr:\n%s", stop, got, s.tail())
		}
	}
}

// wait reads the rest of the output and reaps the role; it returns the
// remaining lines and the exit code.
func (s *pmtSub) wait() ([]string, int) {
	s.t.Helper()
	var got []string
	deadline := time.NewTimer(60 * time.Second * timeoutMult())
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				err := s.cmd.Wait()
				code := s.cmd.ProcessState.ExitCode()
				if err != nil && code == 0 {
					s.t.Fatalf("role wait: %v", err)
				}
				return got, code
			}
			s.all = append(s.all, l)
			got = append(got, l)
		case <-deadline.C:
			s.t.Fatalf("timed out waiting for the role to exit; lines %q; stderr:\n%s", got, s.tail())
		}
	}
}

func (s *pmtSub) tail() string {
	e := s.stderr.String()
	if len(e) > 8000 {
		e = e[len(e)-8000:]
	}
	return e
}

// ---- crash loop ----

// A worker that crashes at once restarts after 50, 100 and 200 ms
// (exponential, no jitter), then fails after its 4th crash (3 restarts
// within the window); siblings are untouched; restart counts agree with the
// events and the metrics.
func TestCrashLoopBacksOffThenFails(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	_, sib := h.startFault("loop-sib", "run", nil)
	sp := actors.Spec{Name: "loop", Type: "pmt_crashy", StartAt: phases.PostmasterStart,
		Restart:   actors.Exponential{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, Jitter: 0},
		Intensity: actors.Intensity{MaxRestarts: 3, Window: 10 * time.Second}}
	hd, err := h.rt.StartWorker(ctx(t), sp)
	if err != nil {
		t.Fatal(err)
	}
	failed := h.waitState("loop", Failed)
	if failed.From != Crashed {
		t.Errorf("failed event from %v, want crashed (the 4th crash)", failed.From)
	}
	evs := h.workerEvents("loop")
	var backoffs []time.Duration
	var crashes, starts int
	for i, e := range evs {
		switch {
		case e.To == Crashed:
			crashes++
			if e.Exit == nil || e.Exit.Reason != ReasonExit2 || !e.Exit.Crash {
				t.Errorf("crash %d: exit %+v, want exit2 crash", crashes, e.Exit)
			}
		case e.To == Starting:
			starts++
		case e.To == Pending && e.From == Crashed:
			backoffs = append(backoffs, e.Backoff)
			// The restart comes no sooner than the backoff (I6 lower
			// bound) and not much later.
			if i+1 < len(evs) && evs[i+1].To == Starting {
				lag := evs[i+1].At.Sub(e.At)
				if lag < e.Backoff || lag > e.Backoff+500*time.Millisecond*timeoutMult() {
					t.Errorf("restart %d came %v after the crash; want within [%v, %v+500ms]", len(backoffs), lag, e.Backoff, e.Backoff)
				}
			} else {
				t.Errorf("pending event %d is not followed by starting: %+v", i, evs[i+1:])
			}
		}
	}
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	if !slices.Equal(backoffs, want) {
		t.Errorf("backoff sequence = %v, want %v", backoffs, want)
	}
	// 4 runs, 4 crashes: the first three are followed by pending, the
	// last by failed.
	if starts != 4 {
		t.Errorf("starts = %d, want 4 (the first run and 3 restarts)", starts)
	}
	if crashes != 4 {
		t.Errorf("crashed events = %d, want 4", crashes)
	}
	wi := h.info("loop")
	if wi.State != Failed || wi.Restarts != 3 || wi.Incarnation != 4 || wi.PID != 0 || !wi.NextStart.IsZero() {
		t.Errorf("info = state %v restarts %d incarnation %d pid %d next %v; want failed, 3, 4, 0, none",
			wi.State, wi.Restarts, wi.Incarnation, wi.PID, wi.NextStart)
	}
	if got := testCounter(t, h.rt.metrics.restarts.WithLabelValues("pmt_crashy")); got != 3 {
		t.Errorf("restarts_total{pmt_crashy} = %v, want 3", got)
	}
	if got := testCounter(t, h.rt.metrics.crashes.WithLabelValues("pmt_crashy", ReasonExit2)); got != 4 {
		t.Errorf("crashes_total{pmt_crashy,exit2} = %v, want 4", got)
	}
	if got := testCounter(t, h.rt.metrics.starts.WithLabelValues("pmt_crashy")); got != 4 {
		t.Errorf("starts_total{pmt_crashy} = %v, want 4", got)
	}
	// WaitStopped answers for a failed worker with its last exit.
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil || ex == nil || ex.Reason != ReasonExit2 {
		t.Errorf("WaitStopped = %+v, %v; want the last exit2", ex, err)
	}
	if wi := h.info("loop-sib"); wi.PID != sib || wi.State != Running || wi.Restarts != 0 {
		t.Errorf("sibling = pid %d state %v restarts %d; want pid %d running, 0 restarts", wi.PID, wi.State, wi.Restarts, sib)
	}
}

// Stop while a worker waits in pending
// for its restart cancels the restart; no resurrection follows.
func TestStopWhilePendingCancelsRestart(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	const backoff = time.Second
	sp := actors.Spec{Name: "resurrect", Type: "pmt_crashy", StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(backoff), Intensity: actors.Intensity{MaxRestarts: -1}}
	hd, err := h.rt.StartWorker(ctx(t), sp)
	if err != nil {
		t.Fatal(err)
	}
	pe := h.waitEvent("resurrect crashed → pending", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "resurrect" && we.To == Pending && we.From == Crashed
	}).(WorkerEvent)
	if pe.Backoff != backoff {
		t.Fatalf("backoff = %v, want %v", pe.Backoff, backoff)
	}
	if err := h.rt.Stop(ctx(t), "resurrect"); err != nil {
		t.Fatal(err)
	}
	if time.Since(pe.At) >= backoff {
		t.Skip("the machine is too slow: the stop came after the backoff had elapsed")
	}
	st := h.waitState("resurrect", Stopped)
	if st.From != Pending {
		t.Errorf("stopped from %v, want pending", st.From)
	}
	if wi := h.info("resurrect"); wi.State != Stopped || !wi.NextStart.IsZero() || wi.Incarnation != 1 {
		t.Errorf("after Stop: state %v next start %v incarnation %d; want stopped, none, 1", wi.State, wi.NextStart, wi.Incarnation)
	}
	// Wait past the backoff for a start that must not come.
	pmtNoEvent(h, pe.At.Add(backoff+300*time.Millisecond*timeoutMult()), "restart of a stopped worker", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "resurrect" && we.To != Stopped
	})
	// A later event we trigger: the postmaster has handled everything before.
	h.startFault("after-stop", "run", nil)
	for _, e := range h.workerEvents("resurrect") {
		if e.At.After(st.At) {
			t.Errorf("event after the stop: %+v", e)
		}
	}
	wi := h.info("resurrect")
	if wi.State != Stopped || wi.Incarnation != 1 || wi.Restarts != 0 || wi.PID != 0 {
		t.Errorf("info = state %v incarnation %d restarts %d pid %d; want stopped, 1, 0, 0", wi.State, wi.Incarnation, wi.Restarts, wi.PID)
	}
	if ex, err := hd.WaitStopped(ctx(t)); err != nil || ex == nil || ex.Reason != ReasonExit2 {
		t.Errorf("WaitStopped = %+v, %v; want the crash", ex, err)
	}
}

// A critical worker lost for good (restart intensity exceeded, or
// a crash under NeverRestart) shuts the runtime down: Done closes and Err
// wraps ErrCriticalWorker; the other workers are stopped, not crashed.
func TestCriticalWorkerShutsDownRuntime(t *testing.T) {
	for _, tc := range []struct {
		name      string
		restart   actors.Restart
		intensity actors.Intensity
		want      WorkerState
	}{
		{"intensity", actors.Fixed(20 * time.Millisecond), actors.Intensity{MaxRestarts: 1, Window: 10 * time.Second}, Failed},
		{"never", actors.NeverRestart, actors.Intensity{}, Crashed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pmtLeakCheck(t)
			h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
			h.startFault("crit-sib", "run", nil)
			sp := actors.Spec{Name: "crit", Type: "pmt_crashy", StartAt: phases.PostmasterStart, Critical: true,
				Restart: tc.restart, Intensity: tc.intensity}
			if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
				t.Fatal(err)
			}
			select {
			case <-h.rt.Done():
			case <-time.After(15 * time.Second * timeoutMult()):
				t.Fatal("the runtime did not shut down after its critical worker was lost")
			}
			if err := h.rt.Err(); !errors.Is(err, ErrCriticalWorker) || !strings.Contains(err.Error(), `"crit"`) {
				t.Fatalf("Err() = %v, want ErrCriticalWorker naming crit", err)
			}
			final := map[string]WorkerInfo{}
			for _, w := range h.rt.Workers() {
				final[w.Name] = w
			}
			if w := final["crit"]; w.State != tc.want {
				t.Errorf("crit: state %v, want %v", w.State, tc.want)
			}
			if w := final["crit-sib"]; w.State != Stopped || w.LastExit == nil || w.LastExit.Crash || w.PID != 0 {
				t.Errorf("sibling after the escalation: %+v; want stopped cleanly", w)
			}
			if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "late", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart}); !errors.Is(err, ErrShutdown) {
				t.Errorf("StartWorker after the escalation = %v, want ErrShutdown", err)
			}
		})
	}
}

// ---- fd exhaustion ----

// pmtFdLimitRole runs a postmaster whose RLIMIT_NOFILE leaves too few
// descriptors for a spawn, lifts the limit after a few failed starts, and
// prints what it saw.
func pmtFdLimitRole() int {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	fail := func(format string, a ...any) int { say("error "+format, a...); return 1 }
	// The netpoller's own descriptors exist before the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	// No warm pool: every start is a spawn, and the descriptor baseline
	// does not move with idle children.
	rt, err := New(Config{Workers: []actors.Spec{}, HeartbeatInterval: 100 * time.Millisecond, WarmPool: -1,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fail("%v", err)
	}
	events := make(chan WorkerEvent, 1024)
	unsub := rt.Subscribe(func(e Event) {
		if we, ok := e.(WorkerEvent); ok && we.Name == "fdw" {
			select {
			case events <- we:
			default:
			}
		}
	})
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutMult())
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		return fail("start: %v", err)
	}
	defer rt.Shutdown(context.Background(), phases.Immediate)
	open, err := pmtOpenFds()
	if err != nil {
		return fail("%v", err)
	}
	base := len(open)
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return fail("getrlimit: %v", err)
	}
	// Each failed start gets a different number of free descriptors, so
	// the spawn fails at a different step (bridge socketpair, output pipe,
	// /dev/null, exec's own pipe) and must close what it had opened.
	steps := []int{3, 0, 1, 4, 5}
	setFree := func(free int) error {
		// Between two attempts (the worker waits out its backoff): look at
		// the descriptors under the full limit, then lower it.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
			return err
		}
		now, err := pmtOpenFds()
		if err != nil {
			return err
		}
		low := orig
		low.Cur = uint64(pmtLimitFor(now, free))
		say("limit free=%d cur=%d open=%d", free, low.Cur, len(now))
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low)
	}
	if err := setFree(steps[0]); err != nil {
		return fail("setrlimit: %v", err)
	}
	hd, err := rt.StartWorker(ctx, actors.Spec{Name: "fdw", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart,
		Restart:   actors.Exponential{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, Jitter: 0},
		Intensity: actors.Intensity{MaxRestarts: -1}, StopTimeout: time.Second})
	if err != nil {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
		return fail("StartWorker: %v", err)
	}
	_, werr := hd.WaitStarted(ctx)
	say("waitstarted %v %v", errors.Is(werr, ErrStartFailed), werr)
	failures := 0
	for failures < len(steps) {
		select {
		case e := <-events:
			switch {
			case e.Exit != nil:
				say("exit %s crash=%v stderr=%q", e.Exit.Reason, e.Exit.Crash, e.Exit.Stderr)
				if e.Exit.Reason == ReasonSpawnFailed {
					failures++
					if failures < len(steps) {
						if err := setFree(steps[failures]); err != nil {
							syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
							return fail("setrlimit: %v", err)
						}
					}
				}
			case e.To == Pending && e.Backoff > 0:
				say("backoff %d", e.Backoff)
			case e.To == Running:
				syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
				return fail("worker started under the low limit (pid %d)", e.PID)
			}
		case <-ctx.Done():
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
			return fail("timed out after %d spawn failures", failures)
		}
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return fail("setrlimit: %v", err)
	}
	say("lifted")
	for running := false; !running; {
		select {
		case e := <-events:
			switch {
			case e.Exit != nil:
				say("exit %s crash=%v stderr=%q", e.Exit.Reason, e.Exit.Crash, e.Exit.Stderr)
			case e.To == Pending && e.Backoff > 0:
				say("backoff %d", e.Backoff)
			case e.To == Running:
				say("running %d", e.PID)
				running = true
			}
		case <-ctx.Done():
			return fail("timed out waiting for the worker to start after the limit was lifted")
		}
	}
	if err := hd.Terminate(ctx); err != nil {
		return fail("terminate: %v", err)
	}
	if _, err := hd.WaitStopped(ctx); err != nil {
		return fail("WaitStopped: %v", err)
	}
	// The reaper closes the last descriptors just after it reports; poll.
	now := -1
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(5 * time.Second * timeoutMult()); time.Now().Before(end); <-tick.C {
		fds, _ := pmtOpenFds()
		if now = len(fds); now == base {
			break
		}
	}
	say("fds %d %d", base, now)
	if err := rt.Shutdown(ctx, phases.Fast); err != nil {
		return fail("shutdown: %v", err)
	}
	say("done")
	return 0
}

// A postmaster out of descriptors fails spawns cleanly: each is a
// start failure (spawn_failed, the EMFILE error surfaced) with backoff, no
// panic, no half-open descriptor; once the limit is lifted the worker
// starts and the descriptor count returns to its baseline.
func TestFdExhaustion(t *testing.T) {
	s := pmtStartRole(t, "pmt_fdlimit")
	lines := s.until("done")
	rest, code := s.wait()
	t.Logf("role output:\n%s", strings.Join(s.all, "\n"))
	if code != 0 {
		t.Fatalf("role exit code %d, want 0; stderr:\n%s", code, s.tail())
	}
	if len(rest) != 0 {
		t.Errorf("lines after done: %q", rest)
	}
	if e := s.stderr.String(); strings.Contains(e, "panic:") || strings.Contains(e, "DATA RACE") {
		t.Errorf("role stderr has a panic or race:\n%s", s.tail())
	}
	var spawnFailed, otherExits int
	var backoffs []time.Duration
	var opens []string
	stages := map[string]bool{}
	var waitStarted, running, lifted, fds string
	for _, l := range lines {
		f := strings.Fields(l)
		switch f[0] {
		case "waitstarted":
			waitStarted = l
		case "exit":
			if f[1] == ReasonSpawnFailed {
				spawnFailed++
				stages[l[strings.Index(l, "stderr="):]] = true
				if f[2] != "crash=true" || !strings.Contains(l, "too many open files") {
					t.Errorf("spawn failure %q: want a crash-counted start failure naming EMFILE", l)
				}
			} else {
				otherExits++
				t.Errorf("unexpected exit %q", l)
			}
		case "backoff":
			n, _ := strconv.ParseInt(f[1], 10, 64)
			if lifted == "" {
				backoffs = append(backoffs, time.Duration(n))
			}
		case "limit":
			opens = append(opens, f[3])
		case "lifted":
			lifted = l
		case "running":
			running = l
		case "fds":
			fds = l
		}
	}
	if !strings.HasPrefix(waitStarted, "waitstarted true") {
		t.Errorf("WaitStarted under the limit: %q, want ErrStartFailed", waitStarted)
	}
	if spawnFailed < 5 {
		t.Errorf("%d spawn failures, want ≥ 5", spawnFailed)
	}
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond}
	if len(backoffs) < 4 || !slices.Equal(backoffs, want[:min(len(backoffs), len(want))]) {
		t.Errorf("backoffs before the lift = %v, want %v (exponential, capped)", backoffs, want)
	}
	// Between attempts the descriptor count is the baseline: a failed
	// spawn leaves nothing open, wherever it failed.
	if len(opens) < 5 || len(slices.Compact(slices.Clone(opens))) != 1 {
		t.Errorf("open descriptors before each attempt: %v, want ≥ 5 equal counts", opens)
	}
	if len(stages) < 3 {
		t.Errorf("spawns failed at %d distinct points (%v), want ≥ 3", len(stages), stages)
	}
	if running == "" {
		t.Error("the worker never started after the limit was lifted")
	}
	if f := strings.Fields(fds); len(f) != 3 || f[1] != f[2] {
		t.Errorf("descriptors: %q, want the baseline back after the worker stopped", fds)
	}
	checkNoZombieNoOrphan(t)
}

// ---- MaxWorkers ----

// Past MaxWorkers, StartWorker fails with ErrTooManyWorkers and
// leaves no trace; the slot is reused once a worker ends. New refuses more
// static workers than slots.
func TestMaxWorkers(t *testing.T) {
	pmtLeakCheck(t)
	three := []actors.Spec{{Name: "s1", Type: "fault"}, {Name: "s2", Type: "fault"}, {Name: "s3", Type: "fault"}}
	if rt, err := New(Config{MaxWorkers: 2, Workers: three}); !errors.Is(err, ErrTooManyWorkers) || rt != nil {
		t.Fatalf("New with 3 workers and MaxWorkers 2 = %v, %v; want ErrTooManyWorkers", rt, err)
	}
	h := newHarness(t, Config{ChildEnv: pmtChildEnv(), MaxWorkers: 2, WarmPool: -1}) // no idle children: the process count is exact
	ha, _ := h.startFault("mw-a", "run", nil)
	_, pb := h.startFault("mw-b", "run", nil)
	before := pmtRows(h.rt.Workers())
	slots := pmtGauge(t, h.rt.metrics.slotsInUse)
	starts := testCounter(t, h.rt.metrics.starts.WithLabelValues("fault"))
	children := pmtChildren()
	spec := func(name string) actors.Spec {
		return actors.Spec{Name: name, Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart, StopTimeout: time.Second}
	}
	hc, err := h.rt.StartWorker(ctx(t), spec("mw-c"))
	if !errors.Is(err, ErrTooManyWorkers) || hc != nil {
		t.Fatalf("3rd StartWorker = %v, %v; want ErrTooManyWorkers", hc, err)
	}
	// A worker waiting for a later phase holds a slot too.
	late := spec("mw-late")
	late.StartAt = phases.RecoveryFinished
	if _, err := h.rt.StartWorker(ctx(t), late); !errors.Is(err, ErrTooManyWorkers) {
		t.Fatalf("StartWorker at a later phase = %v; want ErrTooManyWorkers", err)
	}
	if after := pmtRows(h.rt.Workers()); !slices.Equal(after, before) {
		t.Errorf("Workers() changed by refused starts:\n got %q\nwant %q", after, before)
	}
	if got := pmtGauge(t, h.rt.metrics.slotsInUse); got != slots || got != 2 {
		t.Errorf("slots_in_use = %v, want %v (= 2)", got, slots)
	}
	if got := testCounter(t, h.rt.metrics.starts.WithLabelValues("fault")); got != starts {
		t.Errorf("starts_total = %v, want %v", got, starts)
	}
	if got := pmtChildren(); got != children {
		t.Errorf("child processes = %d, want %d", got, children)
	}
	if evs := append(h.workerEvents("mw-c"), h.workerEvents("mw-late")...); len(evs) != 0 {
		t.Errorf("events for refused workers: %+v", evs)
	}
	// One worker ends; its slot is free again.
	if err := ha.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := ha.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
	_, pc := h.start("mw-c", "fault", "run", nil)
	if pc <= 0 {
		t.Fatalf("mw-c pid %d", pc)
	}
	if got := h.info("mw-b").PID; got != pb {
		t.Errorf("mw-b pid %d, want %d", got, pb)
	}
	if _, err := h.rt.StartWorker(ctx(t), spec("mw-d")); !errors.Is(err, ErrTooManyWorkers) {
		t.Errorf("StartWorker with both slots in use again = %v; want ErrTooManyWorkers", err)
	}
}

// ---- duplicate names ----

// A second worker under a live name is refused with
// ErrDuplicateWorker and the original is untouched; once it has ended the
// name is reused, and the old handle gets ErrStaleHandle. Static workers
// listed twice fail New with ErrAlreadyRegistered.
func TestDuplicateName(t *testing.T) {
	pmtLeakCheck(t)
	twice := []actors.Spec{{Name: "twice", Type: "fault"}, {Name: "twice", Type: "fault"}}
	if rt, err := New(Config{Workers: twice}); !errors.Is(err, actors.ErrAlreadyRegistered) || rt != nil {
		t.Fatalf("New with a name listed twice = %v, %v; want ErrAlreadyRegistered", rt, err)
	}
	h := newHarness(t, Config{ChildEnv: pmtChildEnv(), Workers: []actors.Spec{{Name: "dup-static", Type: "fault", Arg: []byte("run"),
		StartAt: phases.PostmasterStart, StopTimeout: time.Second}}})
	staticPID, err := h.rt.WaitStarted(ctx(t), "dup-static")
	if err != nil {
		t.Fatal(err)
	}
	old, pid := h.startFault("dup", "run", nil)
	wi0 := h.info("dup")
	nEvents := len(h.workerEvents("dup"))
	for _, sp := range []actors.Spec{
		{Name: "dup", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart},
		{Name: "dup", Type: "echo", StartAt: phases.PostmasterStart},
		{Name: "dup", Type: "fault", StartAt: phases.RecoveryFinished},
		{Name: "dup-static", Type: "fault", Arg: []byte("run"), StartAt: phases.PostmasterStart},
	} {
		hd, err := h.rt.StartWorker(ctx(t), sp)
		if !errors.Is(err, ErrDuplicateWorker) || hd != nil {
			t.Errorf("StartWorker(%s, type %s) = %v, %v; want ErrDuplicateWorker", sp.Name, sp.Type, hd, err)
		}
	}
	if wi := h.info("dup"); wi.PID != pid || wi.Restarts != wi0.Restarts || wi.Incarnation != wi0.Incarnation || wi.State != Running || wi.Type != "fault" {
		t.Errorf("original after duplicates: pid %d restarts %d inc %d state %v type %s; want pid %d restarts %d inc %d running fault",
			wi.PID, wi.Restarts, wi.Incarnation, wi.State, wi.Type, pid, wi0.Restarts, wi0.Incarnation)
	}
	if got := len(h.workerEvents("dup")); got != nEvents {
		t.Errorf("%d events for dup after refused duplicates, want %d", got, nEvents)
	}
	if wi := h.info("dup-static"); wi.PID != staticPID || wi.State != Running || wi.Dynamic {
		t.Errorf("static worker after duplicate: %+v; want pid %d running, static", wi, staticPID)
	}
	// After the original has ended, the name can be used again.
	if err := old.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := old.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
	nw, npid := h.startFault("dup", "run", nil)
	if npid == pid {
		t.Fatalf("new worker has the old pid %d", pid)
	}
	// The old handle refers to the earlier worker: stale, and harmless.
	if err := old.Terminate(ctx(t)); !errors.Is(err, ErrStaleHandle) {
		t.Errorf("old.Terminate = %v, want ErrStaleHandle", err)
	}
	if _, err := old.WaitStarted(ctx(t)); !errors.Is(err, ErrStaleHandle) {
		t.Errorf("old.WaitStarted = %v, want ErrStaleHandle", err)
	}
	if _, err := old.WaitStopped(ctx(t)); !errors.Is(err, ErrStaleHandle) {
		t.Errorf("old.WaitStopped = %v, want ErrStaleHandle", err)
	}
	if err := old.Watch(ctx(t), h.rt.System().NewLocalPID("nobody")); !errors.Is(err, ErrStaleHandle) {
		t.Errorf("old.Watch = %v, want ErrStaleHandle", err)
	}
	if wi := h.info("dup"); wi.PID != npid || wi.State != Running {
		t.Errorf("new worker after stale calls: pid %d state %v; want %d running", wi.PID, wi.State, npid)
	}
	if p, err := nw.WaitStarted(ctx(t)); err != nil || p != npid {
		t.Errorf("new handle WaitStarted = %d, %v; want %d", p, err, npid)
	}
	// A worker that crashed with no restart coming is terminal: its name
	// is free too.
	gone, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "dup-crashed", Type: "pmt_crashy", StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gone.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if st := h.info("dup-crashed").State; st != Crashed {
		t.Fatalf("dup-crashed state %v, want crashed", st)
	}
	h.start("dup-crashed", "fault", "run", nil)
}

// A message sent through an old handle's PID after its name was reused
// never reaches the new worker: a request is answered with an error
// wrapping ErrStaleHandle (Handle.Request returns it as its error), a tell
// is counted as undeliverable. Status through the old handle is refused
// the same way.
func TestStaleHandleDoesNotReachNewWorker(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	old, _ := h.start("reused", "echo", "", nil)
	root := h.rt.System().Root
	if r, err := old.Request(ctx(t), Ping{N: 1}); err != nil || r.(Ping).N != 1 {
		t.Fatalf("request through the live handle = %#v, %v", r, err)
	}
	if err := old.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := old.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Request(ctx(t), Ping{N: 3}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("request to the stopped worker = %v, want ErrNotRunning", err)
	}
	h.start("reused", "echo", "", nil)
	if err := old.Terminate(ctx(t)); !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("old.Terminate = %v, want ErrStaleHandle", err)
	}
	if _, _, err := old.Status(); !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("old.Status = %v, want ErrStaleHandle", err)
	}
	r, err := old.Request(ctx(t), Ping{N: 2, Text: "via the stale handle"})
	if !errors.Is(err, ErrStaleHandle) {
		t.Fatalf("request through the stale handle = %#v, %v; want an error wrapping ErrStaleHandle", r, err)
	}
	// The same through protoactor's own future: the result is the error.
	r, err = root.RequestFuture(old.PID(), Ping{N: 2}, 5*time.Second*timeoutMult()).Result()
	if e, ok := r.(error); err != nil || !ok || !errors.Is(e, ErrStaleHandle) {
		t.Fatalf("future through the stale handle = %#v, %v; want an error value wrapping ErrStaleHandle", r, err)
	}
	before := testCounter(t, h.rt.metrics.undeliverable)
	root.Send(old.PID(), Ping{N: 4})
	if got := testCounter(t, h.rt.metrics.undeliverable); got != before+1 {
		t.Fatalf("undeliverable = %v after a tell through the stale handle, want %v", got, before+1)
	}
}

// ---- invalid specs ----

// Invalid specs are refused at registration with the exact error
// kind, and nothing is spawned: no event, no status row, no process.
func TestInvalidSpecs(t *testing.T) {
	pmtLeakCheck(t)
	// Static workers are validated by New.
	for _, sp := range []actors.Spec{
		{Name: "", Type: "fault"},
		{Name: "shm-early", Type: "fault", SharedMemory: true, StartAt: phases.PostmasterStart},
		{Name: "neg-stop", Type: "fault", StopTimeout: -time.Second},
	} {
		if rt, err := New(Config{Workers: []actors.Spec{sp}}); !errors.Is(err, actors.ErrInvalidSpec) || rt != nil {
			t.Errorf("New with static %q = %v; want ErrInvalidSpec", sp.Name, err)
		}
	}
	h := newHarness(t, Config{ChildEnv: pmtChildEnv(), WarmPool: -1}) // no idle children: the process count is exact
	before := pmtRows(h.rt.Workers())
	starts := testCounter(t, h.rt.metrics.starts.WithLabelValues("fault"))
	children := pmtChildren()
	run := func(context.Context, actors.Worker) error { return nil }
	cases := []struct {
		name string
		spec actors.Spec
		want error
	}{
		{"empty name", actors.Spec{Name: "", Type: "fault"}, actors.ErrInvalidSpec},
		{"bad name", actors.Spec{Name: "a b", Type: "fault"}, actors.ErrInvalidSpec},
		{"long name", actors.Spec{Name: strings.Repeat("n", actors.MaxNameLen+1), Type: "fault"}, actors.ErrInvalidSpec},
		{"shm at postmaster start", actors.Spec{Name: "inv-shm", Type: "fault", SharedMemory: true, StartAt: phases.PostmasterStart}, actors.ErrInvalidSpec},
		{"unknown phase", actors.Spec{Name: "inv-phase", Type: "fault", StartAt: phases.Phase(9)}, actors.ErrInvalidSpec},
		{"negative StopTimeout", actors.Spec{Name: "inv-stop", Type: "fault", StopTimeout: -time.Second}, actors.ErrInvalidSpec},
		{"negative StartTimeout", actors.Spec{Name: "inv-start", Type: "fault", StartTimeout: -time.Second}, actors.ErrInvalidSpec},
		{"negative fixed backoff", actors.Spec{Name: "inv-fixed", Type: "fault", Restart: actors.Fixed(-time.Millisecond)}, actors.ErrInvalidSpec},
		{"negative exponential backoff", actors.Spec{Name: "inv-exp", Type: "fault", Restart: actors.Exponential{Initial: -time.Millisecond}}, actors.ErrInvalidSpec},
		{"negative intensity window", actors.Spec{Name: "inv-window", Type: "fault", Intensity: actors.Intensity{MaxRestarts: 1, Window: -time.Second}}, actors.ErrInvalidSpec},
		{"regions without shm", actors.Spec{Name: "inv-regions", Type: "fault", Regions: []shmactor.Region{{Name: "r", Size: 64}}}, actors.ErrInvalidSpec},
		{"Arg too long", actors.Spec{Name: "inv-arg", Type: "fault", Arg: make([]byte, actors.MaxArgLen+1)}, actors.ErrInvalidSpec},
		{"unknown type", actors.Spec{Name: "inv-type", Type: "pmt_no_such_code"}, ErrUnknownWorker},
		{"no type, unknown name", actors.Spec{Name: "pmt_no_such_worker"}, ErrUnknownWorker},
		{"Run set", actors.Spec{Name: "inv-run", Type: "fault", Run: run}, ErrNotDynamic},
		{"Props set", actors.Spec{Name: "inv-props", Type: "fault", Props: func(actors.Worker) *actor.Props { return nil }}, ErrNotDynamic},
	}
	kinds := []error{actors.ErrInvalidSpec, ErrUnknownWorker, ErrNotDynamic}
	names := map[string]bool{}
	for _, tc := range cases {
		names[tc.spec.Name] = true
		hd, err := h.rt.StartWorker(ctx(t), tc.spec)
		if hd != nil {
			t.Errorf("%s: got a handle", tc.name)
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		for _, k := range kinds {
			if k != tc.want && errors.Is(err, k) {
				t.Errorf("%s: err = %v is also %v", tc.name, err, k)
			}
		}
		var se *actors.SpecError
		if tc.want == actors.ErrInvalidSpec && (!errors.As(err, &se) || se.Name != tc.spec.Name) {
			t.Errorf("%s: err = %#v, want a *actors.SpecError naming %q", tc.name, err, tc.spec.Name)
		}
	}
	if after := pmtRows(h.rt.Workers()); !slices.Equal(after, before) {
		t.Errorf("Workers() changed by invalid specs:\n got %q\nwant %q", after, before)
	}
	h.mu.Lock()
	for _, e := range h.log {
		if we, ok := e.(WorkerEvent); ok && names[we.Name] {
			t.Errorf("event for an invalid spec: %+v", we)
		}
	}
	h.mu.Unlock()
	if got := testCounter(t, h.rt.metrics.starts.WithLabelValues("fault")); got != starts {
		t.Errorf("starts_total{fault} = %v, want %v", got, starts)
	}
	if got := pmtChildren(); got != children {
		t.Errorf("child processes = %d, want %d", got, children)
	}
	// The runtime still works.
	h.startFault("valid", "run", nil)
}

// ---- crash during shutdown ----

// Workers that crash during a fast shutdown (one panics on the
// terminate notice, one panics once its context ends, one is SIGKILLed
// before its phase's turn to stop) are not restarted: restart counts are
// frozen and no worker starts after the shutdown event; the shutdown still
// ends within its bound.
func TestCrashDuringShutdown(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	if err := h.rt.Advance(ctx(t), phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	const grace = time.Second
	mod := func(ph phases.Phase) func(*actors.Spec) {
		return func(s *actors.Spec) {
			s.StartAt = ph
			s.StopTimeout = grace
			s.Restart = actors.Fixed(10 * time.Millisecond)
			s.Intensity = actors.Intensity{MaxRestarts: -1}
		}
	}
	_, early := h.start("early", "fault", "run", mod(phases.PostmasterStart))
	h.start("late", "fault", "ignore_term", mod(phases.RecoveryFinished)) // holds the last phase for its grace
	h.start("pt-props", "pmt_panic_on_term", "", mod(phases.RecoveryFinished))
	h.start("pt-run", "pmt_panic_on_stop", "", mod(phases.RecoveryFinished))
	// "pend" crashed before the shutdown and waits out a long backoff: the
	// shutdown cancels its restart.
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "pend", Type: "pmt_crashy", StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(time.Hour), Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("pend waiting for its restart", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "pend" && we.To == Pending && we.From == Crashed
	})
	names := []string{"early", "late", "pt-props", "pt-run", "pend"}
	restarts := map[string]float64{}
	for _, typ := range []string{"fault", "pmt_panic_on_term", "pmt_panic_on_stop", "pmt_crashy"} {
		restarts[typ] = testCounter(t, h.rt.metrics.restarts.WithLabelValues(typ))
	}
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	begin := time.Now()
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second*timeoutMult())
		defer cancel()
		err := h.rt.Shutdown(sctx, phases.Fast)
		done <- result{err, time.Since(begin)}
	}()
	h.waitEvent("shutdown event", func(e Event) bool { _, ok := e.(ShutdownEvent); return ok })
	// "early" starts at the first phase: it is not asked to stop until the
	// later phases are down. It crashes now, during the shutdown.
	if err := syscall.Kill(early, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Shutdown: %v", r.err)
	}
	// "late" ignores SIGTERM: the shutdown lasts at least its grace, and
	// not much more.
	if r.took < grace || r.took > grace+time.Second*timeoutMult() {
		t.Errorf("shutdown took %v, want within [%v, %v]", r.took, grace, grace+time.Second*timeoutMult())
	}
	h.mu.Lock()
	log := slices.Clone(h.log)
	h.mu.Unlock()
	sd := slices.IndexFunc(log, func(e Event) bool { _, ok := e.(ShutdownEvent); return ok })
	if sd < 0 {
		t.Fatal("no shutdown event")
	}
	exits := map[string]*Exit{}
	for _, e := range log[sd:] {
		we, ok := e.(WorkerEvent)
		if !ok {
			continue
		}
		if we.To == Starting || we.To == Pending || we.To == Crashed {
			t.Errorf("after the shutdown began: %s %v → %v", we.Name, we.From, we.To)
		}
		if we.Name == "pend" && (we.From != Pending || we.To != Stopped) {
			t.Errorf("pend after the shutdown began: %v → %v, want pending → stopped", we.From, we.To)
		}
		if we.Exit != nil {
			if exits[we.Name] != nil {
				t.Errorf("%s exited twice after the shutdown began", we.Name)
			}
			exits[we.Name] = we.Exit
			if we.To != Stopped {
				t.Errorf("%s exit led to %v, want stopped", we.Name, we.To)
			}
		}
	}
	for name, want := range map[string]string{"early": "signal:KILL", "late": ReasonKilled, "pt-props": ReasonExit2, "pt-run": ReasonExit2} {
		if ex := exits[name]; ex == nil || ex.Reason != want {
			t.Errorf("%s exit = %+v, want reason %s", name, ex, want)
		}
	}
	for _, w := range h.rt.Workers() {
		if slices.Contains(names, w.Name) && (w.Restarts != 0 || w.Incarnation != 1 || w.State != Stopped) {
			t.Errorf("%s after shutdown: restarts %d incarnation %d state %v; want 0, 1, stopped", w.Name, w.Restarts, w.Incarnation, w.State)
		}
	}
	for typ, n := range restarts {
		if got := testCounter(t, h.rt.metrics.restarts.WithLabelValues(typ)); got != n {
			t.Errorf("restarts_total{%s} = %v, want %v (frozen)", typ, got, n)
		}
	}
}

// ---- orderly stop by signal ----

// pmtSignalsRole runs a postmaster that owns its signals, with two workers
// per start phase, and prints the stop order once a signal has shut it
// down.
func pmtSignalsRole() int {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	fail := func(format string, a ...any) int { say("error "+format, a...); return 1 }
	var specs []actors.Spec
	for _, ph := range phases.All() {
		for i := 1; i <= 2; i++ {
			specs = append(specs, actors.Spec{Name: fmt.Sprintf("%s-%d", ph, i), Type: "fault", Arg: []byte("run"),
				StartAt: ph, StopTimeout: 5 * time.Second})
		}
	}
	rt, err := New(Config{Workers: specs, HandleSignals: true, HeartbeatInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fail("%v", err)
	}
	var mu sync.Mutex
	var log []string
	unsub := rt.Subscribe(func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e := e.(type) {
		case WorkerEvent:
			if e.To == Stopping || e.To == Stopped || e.To == Crashed || e.To == Starting && len(log) > 0 {
				reason := "-"
				if e.Exit != nil {
					reason = e.Exit.Reason
				}
				log = append(log, fmt.Sprintf("ev %s %v %s", e.Name, e.To, reason))
			}
		case ShutdownEvent:
			log = append(log, fmt.Sprintf("shutdown %v %v", e.Mode, e.Done))
		}
	})
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutMult())
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		return fail("start: %v", err)
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		return fail("advance: %v", err)
	}
	for _, sp := range specs {
		pid, err := rt.WaitStarted(ctx, sp.Name)
		if err != nil {
			return fail("WaitStarted(%s): %v", sp.Name, err)
		}
		say("pid %s %d", sp.Name, pid)
	}
	say("ready")
	select {
	case <-rt.Done():
	case <-ctx.Done():
		rt.Shutdown(context.Background(), phases.Immediate)
		return fail("no shutdown after the signal")
	}
	say("cause %v", rt.Err())
	if err := rt.Shutdown(ctx, phases.Fast); err != nil {
		return fail("shutdown: %v", err)
	}
	mu.Lock()
	for _, l := range log {
		say("%s", l)
	}
	mu.Unlock()
	for _, w := range rt.Workers() {
		say("final %s %v %d", w.Name, w.State, w.PID)
	}
	say("done")
	return 0
}

// Once the shutdown is done
// (ShutdownEvent with Done), no later ShutdownEvent says one has begun. A
// runtime that shut itself down (a critical worker here; a SIGTERM under
// HandleSignals alike) can still get a harder request before its owner
// releases it: a later SIGQUIT, which the signal handler turns into
// rt.begin(Immediate), or Shutdown(Immediate) from the owner.
func TestNoShutdownEventAfterDone(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	h.startFault("bystander", "run", nil)
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "crit", Type: "pmt_crashy", StartAt: phases.PostmasterStart,
		Critical: true, Restart: actors.NeverRestart}); err != nil {
		t.Fatal(err)
	}
	done := h.waitEvent("shutdown done", func(e Event) bool { se, ok := e.(ShutdownEvent); return ok && se.Done }).(ShutdownEvent)
	<-h.rt.Done()
	// What the signal handler does with a SIGQUIT that arrives now.
	h.rt.begin(phases.Immediate, nil)
	pmtNoEvent(h, time.Now().Add(500*time.Millisecond*timeoutMult()), "shutdown event after Done", func(e Event) bool {
		_, ok := e.(ShutdownEvent)
		return ok
	})
	if err := h.rt.Shutdown(ctx(t), phases.Immediate); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.log {
		if se, ok := e.(ShutdownEvent); ok && se.At.After(done.At) {
			t.Errorf("shutdown event after Done: %+v", se)
		}
	}
}

// SIGINT (fast) or SIGTERM (smart) to a postmaster that owns its
// signals stops the workers in reverse phase order, and it exits 0 with no
// worker left behind.
func TestOrderlyStopBySignal(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		mode phases.ShutdownMode
	}{
		{syscall.SIGINT, phases.Fast},
		{syscall.SIGTERM, phases.Smart},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			s := pmtStartRole(t, "pmt_signals")
			pids := map[string]int{}
			for _, l := range s.until("ready") {
				if f := strings.Fields(l); len(f) == 3 && f[0] == "pid" {
					pids[f[1]], _ = strconv.Atoi(f[2])
				}
			}
			if len(pids) != 6 {
				t.Fatalf("worker pids %v, want 6", pids)
			}
			if err := s.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			lines, code := s.wait()
			t.Logf("role output:\n%s", strings.Join(s.all, "\n"))
			if code != 0 {
				t.Fatalf("postmaster exit code %d, want 0; stderr:\n%s", code, s.tail())
			}
			if len(lines) == 0 || lines[len(lines)-1] != "done" {
				t.Fatalf("role did not finish: %q", lines)
			}
			if !slices.Contains(lines, "cause <nil>") {
				t.Errorf("cause line missing or not nil: %q", lines)
			}
			if want := fmt.Sprintf("shutdown %v false", tc.mode); !slices.Contains(lines, want) {
				t.Errorf("no %q in %q", want, lines)
			}
			if want := fmt.Sprintf("shutdown %v true", tc.mode); !slices.Contains(lines, want) {
				t.Errorf("no %q in %q", want, lines)
			}
			// Per phase: the index of its first stopping and its last stopped.
			firstStopping := map[string]int{}
			lastStopped := map[string]int{}
			stopped := 0
			for i, l := range lines {
				f := strings.Fields(l)
				if len(f) != 4 || f[0] != "ev" {
					continue
				}
				ph := f[1][:strings.LastIndexByte(f[1], '-')]
				switch f[2] {
				case Stopping.String():
					if _, ok := firstStopping[ph]; !ok {
						firstStopping[ph] = i
					}
				case Stopped.String():
					stopped++
					lastStopped[ph] = i
					if f[3] != ReasonExit0 {
						t.Errorf("%s stopped with %s, want exit0 (it stops on terminate)", f[1], f[3])
					}
				default:
					t.Errorf("unexpected event during the stop: %s", l)
				}
			}
			if stopped != 6 {
				t.Errorf("%d stopped events, want 6", stopped)
			}
			rf, cs, ps := phases.RecoveryFinished.String(), phases.ConsistentState.String(), phases.PostmasterStart.String()
			for _, ph := range []string{rf, cs, ps} {
				if _, ok := firstStopping[ph]; !ok {
					t.Errorf("phase %s: no stopping event", ph)
				}
			}
			if !(lastStopped[rf] < firstStopping[cs] && lastStopped[cs] < firstStopping[ps]) {
				t.Errorf("stop order not reverse phase order: last stopped %v, first stopping %v", lastStopped, firstStopping)
			}
			for name, pid := range pids {
				if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
					if env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); err == nil && bytes.Contains(env, []byte(runID)) {
						t.Errorf("worker %s (pid %d) outlived its postmaster", name, pid)
					}
				}
			}
			checkNoZombieNoOrphan(t)
		})
	}
}

// ---- requests in flight when a worker crashes ----

// A request in flight when the worker crashes fails fast with a
// dead letter, not a timeout; after the restart, requests reach the new
// process.
func TestRequestInFlightWhenWorkerCrashes(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	hd, pid := h.start("pbr", "pmt_panic_before_reply", "", func(s *actors.Spec) {
		s.Restart = actors.Fixed(50 * time.Millisecond)
		s.Intensity = actors.Intensity{MaxRestarts: -1}
	})
	root := h.rt.System().Root
	r, err := root.RequestFuture(hd.PID(), Ping{N: 1}, 5*time.Second*timeoutMult()).Result()
	if p, ok := r.(Ping); err != nil || !ok || p.N != 2 {
		t.Fatalf("request before the crash = %#v, %v; want Ping{N: 2}", r, err)
	}
	reqTimeout := 10 * time.Second * timeoutMult()
	begin := time.Now()
	r, err = root.RequestFuture(hd.PID(), Ping{N: 2, Text: "crash"}, reqTimeout).Result()
	took := time.Since(begin)
	if !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("request in flight at the crash = %#v, %v; want actor.ErrDeadLetter", r, err)
	}
	if took > reqTimeout/5 {
		t.Errorf("the in-flight request failed after %v; want well before its %v timeout", took, reqTimeout)
	}
	t.Logf("in-flight request failed after %v", took)
	ex := h.expectExit("pbr")
	if ex.Reason != ReasonExit2 || !ex.Crash || !strings.Contains(ex.Stderr, "panic before reply") {
		t.Errorf("exit = %+v, want the exit2 crash", ex)
	}
	re := h.waitState("pbr", Running)
	if re.PID == pid || re.PID == 0 {
		t.Fatalf("restarted pid %d, old %d", re.PID, pid)
	}
	r, err = root.RequestFuture(hd.PID(), Ping{N: 5}, 5*time.Second*timeoutMult()).Result()
	if p, ok := r.(Ping); err != nil || !ok || p.N != 6 {
		t.Fatalf("request after the restart = %#v, %v; want Ping{N: 6}", r, err)
	}
}

// Data acknowledged by a host-side store before the worker is
// SIGKILLed is still there after the restart; each run's records arrive
// once, in order, and the new run goes on writing.
func TestAckedDataSurvivesSigkill(t *testing.T) {
	pmtLeakCheck(t)
	h := newHarness(t, Config{ChildEnv: pmtChildEnv()})
	var mu sync.Mutex
	var acked []Ping
	snapshot := func() []Ping {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	count := func(inc string) int {
		n := 0
		for _, p := range snapshot() {
			if p.Text == inc {
				n++
			}
		}
		return n
	}
	store := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(Ping); ok && ctx.Sender() != nil {
			mu.Lock()
			acked = append(acked, p)
			mu.Unlock()
			ctx.Respond(Ping{N: p.N, Text: "ack"})
		}
	}))
	defer h.rt.System().Root.Stop(store)
	if err := h.rt.Expose("pmt-store", store); err != nil {
		t.Fatal(err)
	}
	_, pid := h.start("acker", "pmt_acker", "pmt-store", func(s *actors.Spec) {
		s.Connect = true
		s.Restart = actors.Fixed(50 * time.Millisecond)
		s.Intensity = actors.Intensity{MaxRestarts: -1}
	})
	h.eventually("5 acknowledged records", func() bool { return count("1") >= 5 })
	before := snapshot() // acknowledged before the kill
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ce := h.waitState("acker", Crashed)
	if ce.Exit == nil || ce.Exit.Reason != "signal:KILL" {
		t.Fatalf("crash exit = %+v, want signal:KILL", ce.Exit)
	}
	re := h.waitState("acker", Running)
	if re.PID == pid {
		t.Fatalf("restarted with the old pid %d", pid)
	}
	h.eventually("records from the restarted worker", func() bool { return count("2") >= 3 })
	after := snapshot()
	if len(after) < len(before) || !slices.Equal(after[:len(before)], before) {
		t.Fatalf("acknowledged records lost or changed:\nbefore %v\nafter  %v", before, after[:min(len(after), len(before))])
	}
	next := map[string]int{"1": 1, "2": 1}
	for _, p := range after {
		if p.N != next[p.Text] {
			t.Fatalf("record %+v out of order or duplicated; want N %d for run %s", p, next[p.Text], p.Text)
		}
		next[p.Text]++
	}
}
