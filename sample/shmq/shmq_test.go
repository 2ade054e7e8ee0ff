package shmq

import (
	"testing"

	"github.com/bgworker/bgworker/shmactor"
)

// The regions the workers request build a segment, the queue region is a
// valid queue, and Counters reads the stats the workers keep.
func TestRegionsAndCounters(t *testing.T) {
	if _, _, ok := Counters(nil); ok {
		t.Fatal("Counters(nil) ok")
	}
	seg, err := shmactor.Build(1, regions)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	q, err := seg.Region(QueueRegion)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shmactor.AttachSender(q); err != nil {
		t.Fatalf("queue region not initialised: %v", err)
	}
	stats, err := seg.Region(StatsRegion)
	if err != nil {
		t.Fatal(err)
	}
	shmactor.Uint64At(stats, OffProduced).Store(7)
	shmactor.Uint64At(stats, OffConsumed).Store(5)
	p, c, ok := Counters(seg)
	if !ok || p != 7 || c != 5 {
		t.Fatalf("Counters = %d, %d, %v; want 7, 5, true", p, c, ok)
	}
}

func TestCrashArg(t *testing.T) {
	if got := string(CrashArg(1500 * 1e6)); got != "crash-after=1.5s" {
		t.Fatalf("CrashArg = %q", got)
	}
}
