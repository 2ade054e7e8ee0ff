package shmactor

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	helpers["atomic"] = helperAtomic
	helpers["mutex"] = helperMutex
}

// The words of region "counters" in the atomic and mutex tests.
const (
	offBarrier = 0  // uint32: processes ready to start
	offU64     = 8  // atomic uint64
	offI64     = 16 // atomic int64
	offU32     = 24 // atomic uint32
	offMutex   = 64 // Mutex, on a line of its own
	offPlain   = 72 // uint64 incremented non-atomically under the Mutex
)

const atomicAdds = 100000

func counters(seg *Segment) []byte {
	mem, err := seg.Region("counters")
	if err != nil {
		panic(err)
	}
	return mem
}

// addAtomics is what each process of TestAtomicsAcrossProcesses does.
func addAtomics(mem []byte) {
	u64, i64, u32 := Uint64At(mem, offU64), Int64At(mem, offI64), Uint32At(mem, offU32)
	for range atomicAdds {
		u64.Add(1)
		i64.Add(-3)
		u32.Add(2)
	}
}

func helperAtomic() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, err := helperSegment()
	if err != nil {
		return err
	}
	defer seg.Close()
	mem := counters(seg)
	if err := barrier(ctx, Uint32At(mem, offBarrier), 2); err != nil {
		return err
	}
	addAtomics(mem)
	return nil
}

func TestAtomicsAcrossProcesses(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	seg, err := Build(1, []Region{{Name: "counters", Size: 128}})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	mem := counters(seg)
	c := startChild(ctx, t, "atomic", seg)
	if err := barrier(ctx, Uint32At(mem, offBarrier), 2); err != nil {
		c.kill()
		t.Fatalf("%v (helper: %v)", err, c.wait())
	}
	addAtomics(mem)
	c.mustSucceed()
	if got, want := Uint64At(mem, offU64).Load(), uint64(2*atomicAdds); got != want {
		t.Errorf("uint64 = %d, want %d", got, want)
	}
	if got, want := Int64At(mem, offI64).Load(), int64(-3*2*atomicAdds); got != want {
		t.Errorf("int64 = %d, want %d", got, want)
	}
	if got, want := Uint32At(mem, offU32).Load(), uint32(2*2*atomicAdds); got != want {
		t.Errorf("uint32 = %d, want %d", got, want)
	}
}

func TestAtomicsPanic(t *testing.T) {
	t.Parallel()
	mem := make([]byte, 64) // heap blocks of 64 bytes are 8-byte aligned
	tests := []struct {
		name string
		fn   func()
		want string
	}{
		{"Uint64At misaligned", func() { Uint64At(mem, 4) }, "not 8-byte aligned"},
		{"Int64At misaligned", func() { Int64At(mem, 1) }, "not 8-byte aligned"},
		{"Uint32At misaligned", func() { Uint32At(mem, 2) }, "not 4-byte aligned"},
		{"MutexAt misaligned", func() { MutexAt(mem, 6) }, "not 4-byte aligned"},
		{"Uint64At past end", func() { Uint64At(mem, 64) }, "out of range"},
		{"Uint64At straddles end", func() { Uint64At(mem, 60) }, "out of range"},
		{"Uint32At negative", func() { Uint32At(mem, -4) }, "out of range"},
		{"Int64At empty", func() { Int64At(nil, 0) }, "out of range"},
	}
	for _, tt := range tests {
		got := catch(tt.fn)
		if !strings.HasPrefix(got, "shmactor: ") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: panic %q, want one containing %q", tt.name, got, tt.want)
		}
	}
	Uint64At(mem, 56).Store(1)
	Uint32At(mem, 60).Store(1)
}

func catch(fn func()) (msg string) {
	defer func() {
		if v := recover(); v != nil {
			msg, _ = v.(string)
			if msg == "" {
				msg = "non-string panic"
			}
		}
	}()
	fn()
	return ""
}

// Mutex test: two helper processes and two goroutines here each increment a
// plain (non-atomic) counter under the lock.
const (
	mutexIncs    = 20000
	mutexWorkers = 4
)

func incrementUnderLock(ctx context.Context, mem []byte, n uint32) error {
	m := MutexAt(mem, offMutex)
	if err := barrier(ctx, Uint32At(mem, offBarrier), n); err != nil {
		return err
	}
	for i := range mutexIncs {
		if i%2 == 0 {
			m.Lock()
		} else if err := m.LockContext(ctx); err != nil {
			return err
		}
		// A plain read-modify-write, byte by byte: without mutual
		// exclusion, updates are lost.
		v := binary.LittleEndian.Uint64(mem[offPlain:])
		binary.LittleEndian.PutUint64(mem[offPlain:], v+1)
		m.Unlock()
	}
	return nil
}

func helperMutex() error {
	ctx, cancel := helperContext()
	defer cancel()
	seg, err := helperSegment()
	if err != nil {
		return err
	}
	defer seg.Close()
	return incrementUnderLock(ctx, counters(seg), mutexWorkers)
}

func TestMutexAcrossProcesses(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	seg, err := Build(1, []Region{{Name: "counters", Size: 128}})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	mem := counters(seg)
	c1 := startChild(ctx, t, "mutex", seg)
	c2 := startChild(ctx, t, "mutex", seg)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = incrementUnderLock(ctx, mem, mutexWorkers) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	c1.mustSucceed()
	c2.mustSucceed()
	if got, want := binary.LittleEndian.Uint64(mem[offPlain:]), uint64(mutexWorkers*mutexIncs); got != want {
		t.Errorf("counter = %d, want %d: the lock did not exclude", got, want)
	}
	if got := MutexAt(mem, offMutex).state.Load(); got != unlocked {
		t.Errorf("mutex state %d at the end, want unlocked", got)
	}
}

func TestMutex(t *testing.T) {
	t.Parallel()
	var m Mutex // a Mutex works in private memory too
	if !m.TryLock() {
		t.Fatal("TryLock of an unlocked Mutex failed")
	}
	if m.TryLock() {
		t.Fatal("TryLock of a locked Mutex succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.LockContext(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "shmactor: ") {
		t.Errorf("LockContext of a held Mutex = %v, want DeadlineExceeded", err)
	}
	m.Unlock() // the failed LockContext left the state contended
	m.Lock()
	// The holder's Unlock wakes a sleeping Lock.
	locked := make(chan struct{})
	go func() {
		m.Lock()
		close(locked)
	}()
	for m.state.Load() != contended { // the waiter has announced itself
		runtime.Gosched()
	}
	m.Unlock()
	<-locked
	m.Unlock()
	if got := catch(m.Unlock); !strings.Contains(got, "Unlock of unlocked Mutex") {
		t.Errorf("Unlock of an unlocked Mutex: panic %q", got)
	}
}
