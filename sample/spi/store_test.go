package spi

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/internal/codec"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/runtimetest"
)

func TestStore(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	pid := sys.Root.Spawn(NewStoreProps())
	sys.Root.Send(pid, Fold{Worker: "a", Delta: 2})
	sys.Root.Send(pid, &Fold{Worker: "b", Delta: 3})
	sys.Root.Send(pid, Fold{Worker: "a", Delta: 1})
	r, err := sys.Root.RequestFuture(pid, Total{}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r, (Sum{Total: 6, Workers: 2, Folds: 3}); got != want {
		t.Fatalf("store answered %#v, want %#v", got, want)
	}
}

// The messages must survive the bridge codec in both directions.
func TestMessagesCrossTheBridge(t *testing.T) {
	for _, m := range []any{Fold{Worker: "w", Delta: 4}, Total{}, Sum{Total: 9, Workers: 1, Folds: 9}} {
		name, b, err := codec.Encode(nil, m)
		if err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
		back, err := codec.Decode(name, b)
		if err != nil {
			t.Fatalf("decode %T: %v", m, err)
		}
		if back != m {
			t.Fatalf("round trip of %#v gave %#v", m, back)
		}
	}
}

func TestNaptime(t *testing.T) {
	for arg, want := range map[string]time.Duration{"": DefaultNaptime, "10ms": 10 * time.Millisecond} {
		if got, err := naptime([]byte(arg)); err != nil || got != want {
			t.Errorf("naptime(%q) = %v, %v; want %v", arg, got, err, want)
		}
	}
	for _, arg := range []string{"x", "-1s", "0"} {
		if _, err := naptime([]byte(arg)); err == nil {
			t.Errorf("naptime(%q) accepted", arg)
		}
	}
}

// The worker against the real store, on the test kit in virtual time: ten
// naptimes fold ten rounds into the store, and once the store is gone the
// worker fails its round and is restarted after its backoff.
func TestWorkerFoldsIntoStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := runtimetest.New(t, runtime.Config{Workers: []actors.Spec{{Name: Name, Arg: []byte("1s")}}})
		store := rt.System().Root.Spawn(NewStoreProps())
		if err := rt.Expose(StoreName, store); err != nil {
			t.Fatal(err)
		}
		if err := rt.Advance(t.Context(), phases.RecoveryFinished); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		r, err := rt.System().Root.RequestFuture(store, Total{}, time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r, (Sum{Total: 10, Workers: 1, Folds: 10}); got != want {
			t.Fatalf("after 10 naptimes the store has %#v, want %#v", got, want)
		}
		rt.Unexpose(StoreName)
		if err := rt.WaitState(t.Context(), Name, runtime.Pending); err != nil {
			t.Fatal(err)
		}
		if ex := rt.Exits(Name); len(ex) != 1 || ex[0].Reason != runtime.ReasonExit1 {
			t.Fatalf("exits %+v, want one exit1 (a failed round)", ex)
		}
		rt.System().Root.Stop(store)
	})
}
