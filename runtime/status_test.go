package runtime

import (
	"encoding/json"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// Status before Start, while running, through an all-for-one reset (seen
// from a subscriber while it is under way), after the group is given up,
// and after Shutdown; and GET /status serves the same.
func TestStatus(t *testing.T) {
	rt, err := New(Config{Workers: []actors.Spec{}, WarmPool: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st := rt.Status(); st.State != StateNew || st.Phase != 0 || st.Pool.Target != 3 || st.Segment.Generation != 0 {
		t.Errorf("Status before Start = %+v, want new, no phase, target 3, no segment", st)
	}
	if err := rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatal(err)
	}
	if st := rt.Status(); st.State != StateShutDown {
		t.Errorf("Status after Shutdown of an unstarted runtime: state %q, want %q", st.State, StateShutDown)
	}

	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0", WarmPool: 2, GroupStopTimeout: 500 * time.Millisecond,
		GroupResetIntensity: actors.Intensity{MaxRestarts: 1, Window: time.Minute}})
	var mu sync.Mutex
	var atReset, atSegment, atShutdown []Status // Status as subscribers see it
	unsub := h.rt.Subscribe(func(e Event) {
		switch e := e.(type) {
		case GroupResetEvent:
			mu.Lock()
			atReset = append(atReset, h.rt.Status())
			mu.Unlock()
		case ShutdownEvent:
			if !e.Done {
				mu.Lock()
				atShutdown = append(atShutdown, h.rt.Status())
				mu.Unlock()
			}
		case SegmentEvent:
			if e.Reset {
				mu.Lock()
				atSegment = append(atSegment, h.rt.Status())
				mu.Unlock()
			}
		}
	})
	defer unsub()

	h.eventually("the pool is full", func() bool {
		st := h.rt.Status()
		return st.Pool.Idle == 2 && st.Pool.Starting == 0 && len(h.rt.IdleChildren()) == 2
	})
	st := h.rt.Status()
	if st.State != StateRunning || st.Phase != phases.PostmasterStart || st.Pool.Target != 2 || st.Segment.Generation != 0 || st.Resets != 0 || st.Resetting || st.GroupFailed {
		t.Errorf("Status after Start = %+v", st)
	}

	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	a := h.startShm("a", "run")
	h.startShm("b", "run")
	st = h.rt.Status()
	if st.Phase != phases.ConsistentState || st.Segment.Generation != 1 || st.Segment.Bytes != h.rt.Segment().Size() || st.Segment.Bytes == 0 {
		t.Errorf("Status with a segment = %+v, want consistent_state, generation 1, %d bytes", st, h.rt.Segment().Size())
	}

	syscall.Kill(a, syscall.SIGKILL)
	h.waitEvent("reset begun", func(e Event) bool { _, ok := e.(GroupResetEvent); return ok })
	h.eventually("the group is back", func() bool {
		return h.info("a").State == Running && h.info("b").State == Running && !h.rt.Status().Resetting
	})
	st = h.rt.Status()
	if st.Resets != 1 || st.Segment.Generation != 2 || st.Resetting || st.GroupFailed {
		t.Errorf("Status after the reset = %+v, want 1 reset, generation 2, not resetting", st)
	}
	mu.Lock()
	if len(atReset) != 1 || !atReset[0].Resetting || atReset[0].Resets != 1 || atReset[0].Segment.Generation != 1 {
		t.Errorf("Status at the GroupResetEvent = %+v, want resetting, 1 reset, still generation 1", atReset)
	}
	if len(atSegment) != 1 || !atSegment[0].Resetting || atSegment[0].Segment.Generation != 2 {
		t.Errorf("Status at the reset's SegmentEvent = %+v, want resetting on generation 2", atSegment)
	}
	mu.Unlock()

	// /status is Status as JSON.
	code, body := httpDo(t, "GET", "http://"+h.rt.Addr()+"/status")
	if code != 200 {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var js map[string]any
	if err := json.Unmarshal(body, &js); err != nil {
		t.Fatalf("decode /status: %v: %s", err, body)
	}
	keys := make([]string, 0, len(js))
	for k := range js {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"group_failed", "phase", "pool", "resets", "resetting", "segment", "state"}; !slices.Equal(keys, want) {
		t.Errorf("/status keys %v, want %v", keys, want)
	}
	seg, _ := js["segment"].(map[string]any)
	pool, _ := js["pool"].(map[string]any)
	if js["state"] != "running" || js["phase"] != "consistent_state" || js["resets"] != float64(1) || seg["generation"] != float64(2) ||
		seg["bytes"] != float64(h.rt.Segment().Size()) || pool["target"] != float64(2) || pool["idle"] == nil || pool["starting"] == nil {
		t.Errorf("/status = %s", body)
	}

	// A second reset within the window exceeds GroupResetIntensity: the
	// group is given up.
	syscall.Kill(h.info("a").PID, syscall.SIGKILL)
	h.waitEvent("group failed", func(e Event) bool { g, ok := e.(GroupResetEvent); return ok && g.Failed })
	if st := h.rt.Status(); !st.GroupFailed || st.Resetting || st.Resets != 1 {
		t.Errorf("Status after the group failed = %+v, want group failed, not resetting, 1 reset", st)
	}

	if err := h.rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatal(err)
	}
	if st := h.rt.Status(); st.State != StateShutDown {
		t.Errorf("Status after Shutdown: state %q, want %q", st.State, StateShutDown)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(atShutdown) == 0 || atShutdown[0].State != StateShuttingDown {
		t.Errorf("Status at the ShutdownEvent = %+v, want %q", atShutdown, StateShuttingDown)
	}
}
