package crasher

import (
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
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
