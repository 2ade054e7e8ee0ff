package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/internal/codec"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/child"
)

// runID tags every child of this test binary: children
// inherit RTTEST_RUN, and after each test no live process may carry it.
var runID string

// roles are what the tests re-execute this binary as, besides children:
// postmasters (and a lock holder) in processes of their own, so that a test
// can signal or SIGKILL them. One table: an unknown role fails at once, and
// a full run fails if a role was never used.
var roles = map[string]func() int{
	"postmaster":        postmasterRole,
	"lockholder":        lockholderRole,
	"pmt_fdlimit":       pmtFdLimitRole,
	"pmt_signals":       pmtSignalsRole,
	"pmt_pause":         pmtPauseRole,
	"postmaster-escape": postmasterEscapeRole,
	"pmt_upgrade":       pmtUpgradeRole,
}

var rolesUsed sync.Map

// roleCmd returns a command that runs this binary as role, with env added
// to the environment.
func roleCmd(role string, env ...string) *exec.Cmd {
	if _, ok := roles[role]; !ok {
		panic("roleCmd: unknown role " + role)
	}
	rolesUsed.Store(role, true)
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "RTTEST_ROLE="+role), env...)
	return cmd
}

func TestMain(m *testing.M) {
	// In a child: runs the worker and exits. A child of
	// TestActorBlockingOnHostRequestInReceive has its loan limit pushed out,
	// so that the watchdog is not what frees its relay.
	var cc child.Config
	if v := os.Getenv("RTTEST_LOAN_LIMIT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			cc.LoanLimit = d
		}
	}
	mainWith(cc)
	if role := os.Getenv("RTTEST_ROLE"); role != "" {
		fn, ok := roles[role]
		if !ok {
			fmt.Fprintf(os.Stderr, "runtime tests: unknown role %q\n", role)
			os.Exit(2)
		}
		// RTTEST_ROLE stays set: a role that upgrades in place exec's
		// itself and must come back as the same role. (Its children are
		// children first: Main runs them before any role.)
		os.Exit(fn())
	}
	if os.Getenv("RTTEST_RUN") == "" {
		b := make([]byte, 8)
		rand.Read(b)
		os.Setenv("RTTEST_RUN", hex.EncodeToString(b))
	}
	runID = os.Getenv("RTTEST_RUN")
	// A race-built child sleeps a second before exiting 0 (GORACE
	// atexit_sleep_ms): as long as the tests' stop grace periods. Children
	// inherit this.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	code := m.Run()
	if f := flag.Lookup("test.run"); code == 0 && f != nil && f.Value.String() == "" && !testing.Short() {
		for role := range roles {
			if _, ok := rolesUsed.Load(role); !ok {
				fmt.Fprintf(os.Stderr, "runtime tests: role %q is never used\n", role)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Ping is a JSON message used across the bridge in tests.
type Ping struct {
	N    int
	Text string
}

func init() {
	codec.Register(Ping{})
	// echo: answers every request with the same message; counts tells.
	actors.MustDefine(actors.Spec{Name: "echo", Props: func(w actors.Worker) *actor.Props {
		count := 0
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case []byte, Ping:
				if ctx.Sender() != nil {
					ctx.Respond(m)
				} else {
					count++
				}
			case string:
				if m == "count" {
					ctx.Respond(strconv.Itoa(count))
				}
			}
		})
	}})
	// fault: runs the action named in its Arg once ready.
	actors.MustDefine(actors.Spec{Name: "fault", Run: func(ctx context.Context, w actors.Worker) error {
		return runFault(ctx, w, string(w.Arg()))
	}})
	// caller: a connected worker that asks the host actor named in its
	// Arg and reports the answer by exiting 0 (right answer) or 1;
	// plain_caller: the same code defined without Connect.
	actors.MustDefine(actors.Spec{Name: "caller", Connect: true, Run: callHost})
	actors.MustDefine(actors.Spec{Name: "plain_caller", Run: callHost})
}

func callHost(ctx context.Context, w actors.Worker) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	target := string(w.Arg())
	r, err := w.Request(rctx, target, Ping{N: 41, Text: "q"})
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if p, ok := r.(Ping); !ok || p.N != 42 {
		return fmt.Errorf("bad answer %#v", r)
	}
	if err := w.Send(target, Ping{N: 1}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// rawWrite writes bytes straight to the bridge socket, under the frames.
func rawWrite(w actors.Worker, b []byte) {
	afterReady(w)
	rc, err := child.Conn(w).SyscallConn()
	if err != nil {
		panic(err)
	}
	rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := unix.Write(int(fd), b)
			if err == unix.EAGAIN {
				return false
			}
			if err != nil {
				return true
			}
			b = b[n:]
		}
		return true
	})
}

// afterReady waits (in the child) until the Ready frame is on the wire, so
// a fault injected under the frames comes after it.
func afterReady(w actors.Worker) {
	<-child.ReadySent(w) // counting frames would count heartbeats too
	child.Conn(w).Flush()
}

func runFault(ctx context.Context, w actors.Worker, action string) error {
	switch action {
	case "run":
		<-ctx.Done()
		return nil
	case "panic":
		panic("fault: panic")
	case "panic_after_20ms":
		time.Sleep(20 * time.Millisecond) // the worker's own run: it crashes 20 ms in
		panic("fault: panic after 20ms")
	case "exit0":
		os.Exit(0)
	case "exit1":
		os.Exit(1)
	case "exit7":
		os.Exit(7)
	case "return_error":
		return errors.New("fault: asked to restart")
	case "return_nil":
		return nil
	case "segv":
		syscall.Kill(os.Getpid(), syscall.SIGSEGV)
		select {}
	case "ignore_term":
		signal.Ignore(syscall.SIGTERM)
		busy := time.NewTicker(time.Millisecond)
		for range busy.C { // busy, ignoring the stop request
			select {
			case <-w.Terminating():
			default:
			}
		}
	case "garbage_frame":
		rawWrite(w, []byte{0x10, 0, 0, 0, 0xEE, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
		select {}
	case "bad_magic":
		rawWrite(w, bridge.AppendEmpty(nil, bridge.KindIdle)) // Idle after Ready: out of order
		select {}
	case "huge_len":
		rawWrite(w, []byte{0xFF, 0xFF, 0xFF, 0xFF, byte(bridge.KindTell)})
		select {}
	case "half_frame_exit":
		rawWrite(w, []byte{0x40, 0, 0, 0, byte(bridge.KindTell), 0, 0})
		os.Exit(3)
	case "half_frame_sleep":
		rawWrite(w, []byte{0x40, 0, 0, 0, byte(bridge.KindTell), 0, 0})
		c := child.Conn(w)
		c.Send(func(b []byte) []byte { select {} }) // and no more heartbeats
	case "close_sock":
		// Shut the socket for writing but keep running and reading.
		afterReady(w)
		rc, _ := child.Conn(w).SyscallConn()
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
		<-ctx.Done()
		return nil
	case "deadlock":
		// Hold the write queue: heartbeats stop, the process lives on.
		afterReady(w)
		c := child.Conn(w)
		c.Send(func(b []byte) []byte { select {} })
	case "spam_stdout":
		line := bytes.Repeat([]byte("x"), 1<<20)
		for range 10 {
			os.Stdout.Write(line)
		}
		os.Stdout.Write([]byte("\nspam done\n"))
		<-ctx.Done()
		return nil
	case "escape_exit1":
		// A grandchild that leaves the process group (setsid) and keeps
		// the worker's output pipe open; then the worker exits 1.
		esc := execEscaped()
		fmt.Printf("escaped %d\n", esc.Process.Pid)
		return errors.New("fault: exit 1 with an escaped grandchild")
	case "log_once":
		w.Logger().Info("fault: hello", "n", 1)
		<-ctx.Done()
		return nil
	case "grandchild":
		// A worker's own child process dies with it (process group).
		cmd := execSleep()
		fmt.Printf("grandchild %d\n", cmd.Process.Pid)
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("unknown fault action %q", action)
}

// ---- the always-assert harness ----

type harness struct {
	t      *testing.T
	logs   syncBuffer // the runtime's log, when the test did not bring a logger
	ignore goleak.Option
	rt     *Runtime
	fds    int
	events chan Event
	unsub  func()
	mu     sync.Mutex
	log    []Event
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// newHarness starts a runtime for a test and registers the checks that run
// after it: shutdown, no goroutine leak, fds back to baseline, no zombie,
// no orphan.
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, events: make(chan Event, 4096), ignore: goleak.IgnoreCurrent()}
	goruntime.GC() // run finalizers of earlier tests' files before the baseline
	goruntime.GC()
	h.fds = fdCount(t)
	if cfg.Workers == nil {
		cfg.Workers = []actors.Spec{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &h.logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.HeartbeatTimeout = 2 * time.Second * timeoutMult()
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.rt = rt
	h.unsub = rt.Subscribe(func(e Event) {
		h.mu.Lock()
		h.log = append(h.log, e)
		h.mu.Unlock()
		select {
		case h.events <- e:
		default:
		}
	})
	t.Cleanup(h.finish)
	if err := rt.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) finish() {
	t := h.t
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	h.unsub()
	goleak.VerifyNone(t, h.ignore) // goroutines that existed before the runtime
	// An unreferenced *os.File of an earlier test (an os.Process's pidfd,
	// say) is closed by its finalizer whenever the GC gets to it; give the
	// finalizers a chance before comparing.
	n := fdCount(t)
	tick := time.NewTicker(10 * time.Millisecond)
	for end := time.Now().Add(2 * time.Second); n != h.fds && time.Now().Before(end); n = fdCount(t) {
		goruntime.GC()
		<-tick.C
	}
	tick.Stop()
	if n != h.fds {
		t.Errorf("fd count after shutdown = %d, want baseline %d", n, h.fds)
	}
	checkNoZombieNoOrphan(t)
}

// checkNoZombieNoOrphan scans /proc: no zombie child of ours and no
// live process tagged with this run's id other than ourselves.
func checkNoZombieNoOrphan(t *testing.T) {
	t.Helper()
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		rest := s[strings.LastIndexByte(s, ')')+2:]
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(self) && fields[0] == "Z" {
			t.Errorf("zombie child %d", pid)
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if bytes.Contains(env, []byte("RTTEST_RUN="+runID+"\x00")) && fields[0] != "Z" {
			t.Errorf("orphan process %d (%s) still alive", pid, strings.TrimSpace(s[:min(len(s), 60)]))
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// timeoutMult scales time bounds (RTTEST_TIMEOUT_MULT, as PostgreSQL's
// timeout_default).
func timeoutMult() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("RTTEST_TIMEOUT_MULT")); err == nil && v > 0 {
		return time.Duration(v)
	}
	return 1
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second*timeoutMult())
	t.Cleanup(cancel)
	return c
}

// waitEvent waits for the first event that matches.
func (h *harness) waitEvent(what string, match func(Event) bool) Event {
	h.t.Helper()
	deadline := time.After(15 * time.Second * timeoutMult())
	for {
		select {
		case e := <-h.events:
			if match(e) {
				return e
			}
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *harness) waitState(name string, to WorkerState) WorkerEvent {
	h.t.Helper()
	return h.waitEvent(name+" → "+to.String(), func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == name && we.To == to
	}).(WorkerEvent)
}

// events returns the worker events recorded so far for name.
func (h *harness) workerEvents(name string) []WorkerEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []WorkerEvent
	for _, e := range h.log {
		if we, ok := e.(WorkerEvent); ok && we.Name == name {
			out = append(out, we)
		}
	}
	return out
}

func (h *harness) start(name, code, arg string, mod func(*actors.Spec)) (*Handle, int) {
	h.t.Helper()
	sp := actors.Spec{Name: name, Type: code, Arg: []byte(arg), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(50 * time.Millisecond), StopTimeout: time.Second}
	if mod != nil {
		mod(&sp)
	}
	hd, err := h.rt.StartWorker(ctx(h.t), sp)
	if err != nil {
		h.t.Fatal(err)
	}
	pid, err := hd.WaitStarted(ctx(h.t))
	if err != nil {
		h.t.Fatalf("WaitStarted(%s): %v", name, err)
	}
	return hd, pid
}

func (h *harness) info(name string) WorkerInfo {
	for _, w := range h.rt.Workers() {
		if w.Name == name {
			return w
		}
	}
	h.t.Fatalf("no worker %q", name)
	return WorkerInfo{}
}

func itoa(n int) string { return strconv.Itoa(n) }

func testCounter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// logged reports whether the runtime's log has a line containing text.
func (h *harness) logged(text string) bool { return strings.Contains(h.logs.String(), text) }

// eventually polls cond until it holds or the deadline passes (the
// require.Eventually).
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second * timeoutMult())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
