package runtime

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// With the warm pool on, a worker's uptime counts from when it was given
// its worker, not from when its pool child was spawned: a worker that
// crashes 20 ms after every start backs off 100, 200, 400, 800 ms even
// though the idle children it runs in are older than ResetAfter.
func TestUptimeCountsFromAssignment(t *testing.T) {
	h := newHarness(t, Config{WarmPool: 2})
	h.eventually("pool full", func() bool { return len(h.rt.IdleChildren()) == 2 })
	<-time.After(400 * time.Millisecond) // the idle children grow older than ResetAfter
	const reset = 250 * time.Millisecond
	sp := actors.Spec{Name: "crashy", Type: "fault", Arg: []byte("panic_after_20ms"), StartAt: phases.PostmasterStart,
		Restart:   actors.Exponential{Initial: 100 * time.Millisecond, Multiplier: 2, Max: 10 * time.Second, ResetAfter: reset},
		Intensity: actors.Intensity{MaxRestarts: -1}}
	if _, err := h.rt.StartWorker(ctx(t), sp); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100, 200, 400, 800}
	for i := range want {
		want[i] *= time.Millisecond
		pe := h.waitEvent("crashy pending after an exit", func(e Event) bool {
			we, ok := e.(WorkerEvent)
			return ok && we.Name == "crashy" && we.To == Pending && we.Backoff > 0
		}).(WorkerEvent)
		st := h.waitState("crashy", Starting)
		ex := h.info("crashy").Exits[i]
		if ex.Uptime >= reset {
			t.Errorf("run %d: uptime %v, want the 20 ms it ran (well below ResetAfter %v)", i+1, ex.Uptime, reset)
		}
		if pe.Backoff != want[i] {
			t.Errorf("backoff %d = %v, want %v", i+1, pe.Backoff, want[i])
		}
		if d := st.At.Sub(pe.At); d < want[i] {
			t.Errorf("restart %d came %v after the exit, before its backoff %v", i+1, d, want[i])
		}
		if st.Cold {
			t.Errorf("restart %d was cold; the test wants warm starts", i+1)
		}
	}
}

// A wait whose context ends is forgotten by the postmaster: polling with
// short deadlines does not grow it.
func TestTimedOutWaitsAreForgotten(t *testing.T) {
	h := newHarness(t, Config{})
	hd, _ := h.startFault("busy", "run", nil)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for range 2000 {
		if _, err := hd.WaitStopped(gone); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitStopped with a done context = %v, want context.Canceled", err)
		}
	}
	n := make(chan int, 1)
	h.rt.tell(msgFunc{fn: func(pm *postmaster) { n <- len(pm.byName["busy"].waiters) }})
	if got := <-n; got != 0 {
		t.Fatalf("%d waiters kept after 2000 abandoned waits, want 0", got)
	}
}

// Once a runtime exists, registration is closed, whatever its config: a
// worker registered later would never run.
func TestRegistrationClosedOnceARuntimeExists(t *testing.T) {
	rt, err := New(Config{Workers: []actors.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background(), phases.Fast)
	err = actors.Register(actors.Spec{Name: "too-late", Run: func(context.Context, actors.Worker) error { return nil }})
	if !errors.Is(err, actors.ErrRegistrationClosed) {
		t.Fatalf("Register after New = %v, want ErrRegistrationClosed", err)
	}
}

// A dynamic spec inherits what its definition sets and it leaves zero
// (Connect here), and a field that contradicts the definition is refused by
// StartWorker, not discovered in the child.
func TestDynamicSpecInheritsDefinition(t *testing.T) {
	h := newHarness(t, Config{})
	got := make(chan Ping, 4)
	store := h.rt.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(Ping); ok {
			if ctx.Sender() != nil {
				ctx.Respond(Ping{N: p.N + 1})
			} else {
				got <- p
			}
		}
	}))
	defer h.rt.System().Root.Stop(store)
	if err := h.rt.Expose("store", store); err != nil {
		t.Fatal(err)
	}
	// "caller" is defined with Connect; the spec does not say it.
	h.start("inherits", "caller", "store", nil)
	select {
	case p := <-got:
		if p.N != 1 {
			t.Fatalf("tell = %+v", p)
		}
	case <-time.After(10 * time.Second * timeoutMult()):
		t.Fatal("no tell from a worker whose definition has Connect")
	}
	for _, tc := range []struct {
		name string
		spec actors.Spec
	}{
		{"shared memory on code defined without", actors.Spec{Name: "x1", Type: "fault", SharedMemory: true, StartAt: phases.ConsistentState}},
		{"other regions", actors.Spec{Name: "x2", Type: "shmw", SharedMemory: true, StartAt: phases.ConsistentState,
			Regions: []shmactor.Region{{Name: "counters", Size: 8192}}}},
	} {
		_, err := h.rt.StartWorker(ctx(t), tc.spec)
		if !errors.Is(err, actors.ErrInvalidSpec) || !strings.Contains(err.Error(), "contradicts the definition") {
			t.Errorf("%s: StartWorker = %v, want ErrInvalidSpec naming the contradiction", tc.name, err)
		}
	}
	// A request to a host actor nobody exposed names it.
	hd, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "lost", Type: "caller", Arg: []byte("nosuch"), StartAt: phases.PostmasterStart, Restart: actors.NeverRestart})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := hd.WaitStopped(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ex.Stderr, `request to "nosuch" failed on the far side`) || strings.Contains(ex.Stderr, `request to ""`) {
		t.Fatalf("the failed request's error does not name its target: %q", ex.Stderr)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A record logged by a worker is re-logged by the host with the worker's
// name and pid once, not once from the child and again from the host.
func TestChildRecordsNameTheWorkerOnce(t *testing.T) {
	var buf syncBuffer
	h := newHarness(t, Config{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	h.startFault("talker", "log_once", nil)
	var line string
	h.eventually("the worker's record in the host's log", func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "fault: hello") {
				line = l
				return true
			}
		}
		return false
	})
	if n := strings.Count(line, `"worker":`); n != 1 {
		t.Fatalf("the record names the worker %d times, want once: %s", n, line)
	}
	if n := strings.Count(line, `"pid":`); n != 1 {
		t.Fatalf("the record carries the pid %d times, want once: %s", n, line)
	}
}
