package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// Layout of the "counters" region used by the shm test workers.
const (
	offMagic = 0  // written by the region initialiser
	offRuns  = 8  // +1 by every worker run
	offDirty = 16 // set by a worker "mid-write"
	shmMagic = 0xfeedface
)

// regionInits counts initialiser runs in the host.
var regionInits atomic.Int64

func init() {
	actors.MustDefine(actors.Spec{Name: "shmw", StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: []shmactor.Region{{Name: "counters", Size: 4096, Init: func(mem []byte) {
			regionInits.Add(1)
			binary.LittleEndian.PutUint64(mem[offMagic:], shmMagic)
		}}},
		Run: func(ctx context.Context, w actors.Worker) error {
			mem, err := w.Segment().Region("counters")
			if err != nil {
				return err
			}
			if shmactor.Uint64At(mem, offMagic).Load() != shmMagic {
				panic("region not initialised")
			}
			shmactor.Uint64At(mem, offRuns).Add(1)
			switch a := string(w.Arg()); {
			case a == "dirty":
				shmactor.Uint64At(mem, offDirty).Store(1)
			case a == "exit1_bye":
				return errors.New("asked to restart")
			case a == "exit1_nobye":
				os.Exit(1)
			case len(a) > 10 && a[:10] == "fail_once:":
				// Crash once, on the second generation: a member that fails
				// while the group restarts.
				marker := a[10:]
				if w.Segment().Generation() == 2 {
					if f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL, 0o600); err == nil {
						f.Close()
						os.Exit(3)
					}
				}
			}
			<-ctx.Done()
			return nil
		}})
}

func shmSpec(name, arg string) actors.Spec {
	return actors.Spec{Name: name, Type: "shmw", Arg: []byte(arg), StartAt: phases.ConsistentState, SharedMemory: true,
		Restart: actors.Fixed(20 * time.Millisecond), StopTimeout: time.Second}
}

func (h *harness) startShm(name, arg string) int {
	h.t.Helper()
	hd, err := h.rt.StartWorker(ctx(h.t), shmSpec(name, arg))
	if err != nil {
		h.t.Fatal(err)
	}
	pid, err := hd.WaitStarted(ctx(h.t))
	if err != nil {
		h.t.Fatalf("WaitStarted(%s): %v", name, err)
	}
	return pid
}

func region(t *testing.T, rt *Runtime) []byte {
	t.Helper()
	seg := rt.Segment()
	if seg == nil {
		t.Fatal("no segment")
	}
	mem, err := seg.Region("counters")
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// A shared-memory worker crashes mid-write: every shm worker is
// stopped and reaped before a new segment generation is built, the dirty
// data is gone, the initialiser ran again, every shm pid is new, and the
// worker without shared memory keeps its pid.
func TestAllForOne(t *testing.T) {
	inits := regionInits.Load()
	h := newHarness(t, Config{GroupStopTimeout: 500 * time.Millisecond})
	if err := h.rt.Advance(ctx(t), phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	_, plain := h.startFault("plain", "run", nil)
	a := h.startShm("a", "dirty")
	b := h.startShm("b", "run")
	mem := region(t, h.rt)
	h.eventually("both runs counted", func() bool { return shmactor.Uint64At(mem, offRuns).Load() == 2 })
	if shmactor.Uint64At(mem, offDirty).Load() != 1 {
		t.Fatal("dirty marker not written")
	}
	if got := regionInits.Load() - inits; got != 1 {
		t.Fatalf("region initialiser ran %d times for generation 1, want 1", got)
	}
	syscall.Kill(a, syscall.SIGKILL)
	seg := h.waitEvent("new segment", func(e Event) bool { se, ok := e.(SegmentEvent); return ok && se.Reset }).(SegmentEvent)
	if seg.Generation != 2 {
		t.Fatalf("generation %d, want 2", seg.Generation)
	}
	h.eventually("group running again", func() bool {
		return h.info("a").State == Running && h.info("b").State == Running && h.info("a").PID != a && h.info("b").PID != b
	})
	if got := regionInits.Load() - inits; got != 2 {
		t.Fatalf("region initialiser ran %d times over 2 generations, want 2", got)
	}
	mem2 := region(t, h.rt)
	if shmactor.Uint64At(mem2, offMagic).Load() != shmMagic {
		t.Fatal("new segment not initialised")
	}
	h.eventually("runs on the new segment", func() bool { return shmactor.Uint64At(mem2, offRuns).Load() == 2 })
	if d := shmactor.Uint64At(mem2, offDirty).Load(); d != 1 {
		// a runs "dirty" again in generation 2: its marker is back, but
		// only from the new run. Check the old generation's marker did
		// not carry over by looking at b's view instead below.
		t.Fatalf("dirty = %d in generation 2 after a's new run, want 1", d)
	}
	if h.info("plain").PID != plain {
		t.Fatal("the worker without shared memory was restarted")
	}
	if ex := h.info("b").LastExit; ex == nil || ex.Reason != ReasonGroupReset || ex.Crash {
		t.Fatalf("b's exit = %+v, want group_reset, not a crash", ex)
	}
	// No new shm worker started before the last old one was reaped.
	var lastOldExit, firstNewStart time.Time
	for _, n := range []string{"a", "b"} {
		for _, e := range h.workerEvents(n) {
			if e.Exit != nil && e.Incarnation == 1 && e.At.After(lastOldExit) {
				lastOldExit = e.At
			}
			if e.To == Starting && e.Incarnation == 2 && (firstNewStart.IsZero() || e.At.Before(firstNewStart)) {
				firstNewStart = e.At
			}
		}
	}
	if !firstNewStart.After(lastOldExit) {
		t.Fatalf("a new member started at %v, before the last old one exited at %v", firstNewStart, lastOldExit)
	}
	if n := testCounter(t, h.rt.metrics.resets); n != 1 {
		t.Fatalf("shmem_resets_total = %v, want 1", n)
	}
}

// Exit 1 with the goodbye restarts only that
// worker; exit 1 without it is a crash and resets the group.
func TestShmExitWithoutGoodbyeIsCrash(t *testing.T) {
	h := newHarness(t, Config{GroupStopTimeout: 500 * time.Millisecond})
	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	b := h.startShm("b", "run")
	if _, err := h.rt.StartWorker(ctx(t), shmSpec("bye", "exit1_bye")); err != nil {
		t.Fatal(err)
	}
	ex := h.expectExit("bye")
	if ex.Reason != ReasonExit1 || ex.Crash {
		t.Fatalf("exit = %+v, want exit1, not a crash", ex)
	}
	h.waitState("bye", Starting)
	if h.info("b").PID != b {
		t.Fatal("exit 1 with goodbye reset the group")
	}
	h.rt.Stop(ctx(t), "bye")
	if _, err := h.rt.StartWorker(ctx(t), shmSpec("nobye", "exit1_nobye")); err != nil {
		t.Fatal(err)
	}
	ex = h.expectExit("nobye")
	if ex.Reason != ReasonNoGoodbye || !ex.Crash {
		t.Fatalf("exit = %+v, want no_goodbye crash", ex)
	}
	h.waitEvent("reset", func(e Event) bool { _, ok := e.(SegmentEvent); return ok })
	// nobye crashes again on every run, so b may be running only briefly
	// between resets: wait for the event, not for a row that shows it.
	h.waitEvent("b restarted", func(e Event) bool {
		we, ok := e.(WorkerEvent)
		return ok && we.Name == "b" && we.To == Running && we.PID != b
	})
}

// A member that fails while the group restarts resets the group
// again; the group never runs on a mix of generations.
func TestMemberFailsDuringReset(t *testing.T) {
	h := newHarness(t, Config{GroupStopTimeout: 500 * time.Millisecond})
	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	a := h.startShm("a", "run")
	h.startShm("b", "fail_once:"+filepath.Join(t.TempDir(), "marker"))
	syscall.Kill(a, syscall.SIGKILL)
	h.eventually("generation 3 running", func() bool {
		seg := h.rt.Segment()
		return seg != nil && seg.Generation() == 3 && h.info("a").State == Running && h.info("b").State == Running
	})
	if n := testCounter(t, h.rt.metrics.resets); n != 2 {
		t.Fatalf("resets = %v, want 2", n)
	}
	mem := region(t, h.rt)
	h.eventually("both members counted on generation 3", func() bool { return shmactor.Uint64At(mem, offRuns).Load() == 2 })
}

// Resets beyond the group's intensity fail the group: it stays down.
func TestShmGroupResetIntensity(t *testing.T) {
	h := newHarness(t, Config{GroupStopTimeout: 200 * time.Millisecond, GroupResetIntensity: actors.Intensity{MaxRestarts: 1, Window: time.Minute}})
	h.rt.Advance(ctx(t), phases.ConsistentState)
	a := h.startShm("a", "run")
	syscall.Kill(a, syscall.SIGKILL)
	h.waitEvent("first reset", func(e Event) bool { se, ok := e.(SegmentEvent); return ok && se.Reset })
	h.eventually("a back", func() bool { return h.info("a").State == Running })
	syscall.Kill(h.info("a").PID, syscall.SIGKILL)
	h.waitEvent("group failed", func(e Event) bool { ge, ok := e.(GroupResetEvent); return ok && ge.Failed })
	h.eventually("a failed", func() bool { return h.info("a").State == Failed })
}

// A worker without SharedMemory never receives the segment.
func TestNonShmWorkerHasNoSegment(t *testing.T) {
	h := newHarness(t, Config{})
	h.rt.Advance(ctx(t), phases.ConsistentState)
	_, pid := h.startFault("plain", "run", nil)
	fds, _ := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	for _, fd := range fds {
		if l, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + fd.Name()); len(l) > 6 && l[:6] == "/memfd" {
			t.Fatalf("non-shm worker holds %s", l)
		}
	}
}

// shmHoldings counts the host's memfd descriptors and its mappings of
// segment memfds.
func shmHoldings(t *testing.T) (fds, maps int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "/memfd:bgworker-shm") {
			fds++
		}
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	maps = strings.Count(string(b), "/memfd:bgworker-shm")
	return fds, maps
}

// Every all-for-one reset retires the generation it replaces once its last
// holder is reaped: across 20 resets the host's memfd descriptors and
// segment mappings stay flat (one segment, plus one descriptor per running
// member), instead of growing by a segment per reset.
func TestResetsRetireOldSegments(t *testing.T) {
	h := newHarness(t, Config{GroupStopTimeout: 500 * time.Millisecond, GroupResetIntensity: actors.Intensity{MaxRestarts: -1}})
	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	var a int
	for _, n := range []string{"a", "b"} {
		sp := shmSpec(n, "run")
		sp.Intensity = actors.Intensity{MaxRestarts: -1}
		hd, err := h.rt.StartWorker(ctx(t), sp)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := hd.WaitStarted(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if n == "a" {
			a = pid
		}
	}
	fds0, maps0 := shmHoldings(t)
	if fds0 != 3 || maps0 != 1 {
		t.Fatalf("before any reset: %d memfd descriptors and %d mappings, want 3 (segment + 2 members) and 1", fds0, maps0)
	}
	old := h.rt.Segment()
	oldMem := region(t, h.rt)
	for i := 1; i <= 20; i++ {
		syscall.Kill(a, syscall.SIGKILL)
		gen := uint64(i + 1)
		h.eventually(fmt.Sprintf("generation %d running", gen), func() bool {
			seg := h.rt.Segment()
			ia, ib := h.info("a"), h.info("b")
			return seg != nil && seg.Generation() == gen && ia.State == Running && ib.State == Running && ia.PID != a
		})
		a = h.info("a").PID
		fds, maps := shmHoldings(t)
		t.Logf("after reset %2d: generation %d, %d memfd descriptors, %d segment mappings, fd count %d", i, gen, fds, maps, fdCount(t))
		if fds != fds0 || maps != maps0 {
			t.Fatalf("after reset %d: %d memfd descriptors and %d mappings, want %d and %d", i, fds, maps, fds0, maps0)
		}
		if i == 1 {
			// Within its mapped lifetime an old generation is safe to touch.
			h.eventually("generation 1 retired", old.Retired)
			if _, err := old.Region("counters"); !errors.Is(err, shmactor.ErrRetired) {
				t.Fatalf("Region of a retired generation = %v, want ErrRetired", err)
			}
			if v := shmactor.Uint64At(oldMem, offMagic).Load(); v != 0 {
				t.Fatalf("an old slice of a retired generation reads %#x, want 0", v)
			}
		}
	}
	// The retired generations still mapped (private zeros) are the last
	// RetiredSegmentsMapped; the older ones are unmapped, so that resets
	// do not use up the process's mappings.
	gens := make(chan []uint64, 1)
	h.rt.tell(msgFunc{fn: func(pm *postmaster) {
		var g []uint64
		for _, seg := range pm.group.old {
			if seg.Retired() {
				g = append(g, seg.Generation())
			}
		}
		gens <- g
	}})
	mapped := <-gens
	if len(mapped) != RetiredSegmentsMapped || mapped[0] != 21-RetiredSegmentsMapped {
		t.Fatalf("retired generations still mapped after 20 resets: %v, want the last %d (from %d)", mapped, RetiredSegmentsMapped, 21-RetiredSegmentsMapped)
	}
}
