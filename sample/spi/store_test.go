package spi

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/internal/codec"
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
