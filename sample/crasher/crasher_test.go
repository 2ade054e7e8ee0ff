package crasher

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/runtimetest"
)

func TestCrashArg(t *testing.T) {
	d, ok, err := crashAfter(CrashArg(1500 * time.Millisecond))
	if err != nil || !ok || d != 1500*time.Millisecond {
		t.Fatalf("crashAfter(CrashArg(1.5s)) = %v, %v, %v", d, ok, err)
	}
	if _, ok, err := crashAfter(nil); ok || err != nil {
		t.Fatalf("empty Arg: ok %v, err %v", ok, err)
	}
	if _, _, err := crashAfter([]byte("crash-after=soon")); err == nil {
		t.Fatal("a bad duration was accepted")
	}
}

func TestRegistered(t *testing.T) {
	s, ok := actors.Lookup(Name)
	if !ok || s.Run == nil || s.RestartPolicy().String() != Restart.String() {
		t.Fatalf("crasher not registered as expected: %+v", s)
	}
	if _, ok := actors.Lookup(TickerType); !ok {
		t.Fatal("ticker not defined")
	}
}

// The crasher's restart schedule on the test kit, in virtual time: it
// panics 50 ms into each run and backs off 100 ms, doubling up to its 2 s
// cap (the kit draws no jitter), until its intensity (10 restarts a
// minute) fails it.
func TestRestartSchedule(t *testing.T) {
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{Workers: []actors.Spec{{Name: Name, Arg: CrashArg(50 * time.Millisecond)}}})
		t0 := time.Now()
		if err := rt.Advance(t.Context(), phases.ConsistentState); err != nil {
			t.Fatal(err)
		}
		if err := rt.WaitState(t.Context(), Name, runtime.Failed); err != nil {
			t.Fatal(err)
		}
		var got []time.Duration
		for _, at := range rt.Starts(Name) {
			got = append(got, at.Sub(t0))
		}
		// start → +50 ms crash → backoff; backoffs 100, 200, 400, 800,
		// 1600, then 2000 ms (the cap).
		want := []time.Duration{0}
		at, backoff := time.Duration(0), 100*time.Millisecond
		for range 10 {
			at += 50*time.Millisecond + backoff
			want = append(want, at)
			backoff = min(2*backoff, 2*time.Second)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("starts at %v,\nwant %v", got, want)
		}
		for i, ex := range rt.Exits(Name) {
			if ex.Reason != runtime.ReasonExit2 || !ex.Crash || !strings.Contains(ex.Stderr, "crash injected") {
				t.Fatalf("exit %d = %+v, want an exit2 crash with the panic in its stderr", i, ex)
			}
		}
	})
	t.Logf("the schedule took %v of wall time", time.Since(wall))
}
