package shmactor

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// MutexSize is the number of bytes a Mutex occupies in shared memory.
const MutexSize = 4

// Mutex is a lock shared between processes: a 32-bit word in shared memory,
// waited on with a futex. Get one with MutexAt; the zero word is an unlocked
// Mutex, so a region fresh from Build needs no initialisation.
//
// It is the three-state mutex of Ulrich Drepper's "Futexes Are Tricky"
// (0 unlocked, 1 locked, 2 locked with possible waiters): an uncontended Lock
// and Unlock are one atomic instruction each and make no system call.
//
// # Crashes
//
// A Mutex is not robust: if a process dies while holding it, it stays locked.
// That is by design, as in PostgreSQL, where a backend that dies holding a
// spinlock or LWLock makes the postmaster reset shared memory: within a
// generation, the death of any shared-memory worker resets the whole
// shared-memory group (its workers are stopped and restarted), and the next
// generation maps a brand-new segment built from scratch, whose words are all
// unlocked. No process ever waits on a lock left by a previous generation.
// Code that must not block forever on a lock whose holder may have died uses
// LockContext.
type Mutex struct {
	state atomic.Uint32
}

const (
	unlocked  = 0
	locked    = 1
	contended = 2 // locked, and a waiter may be asleep
)

// MutexAt returns the Mutex in the 4 bytes at mem[off], which must be 4-byte
// aligned. It panics if they do not fit in mem or are misaligned.
func MutexAt(mem []byte, off int) *Mutex {
	return (*Mutex)(wordAt("MutexAt", mem, off, MutexSize))
}

// TryLock locks m if it is unlocked and reports whether it did.
func (m *Mutex) TryLock() bool {
	return m.state.CompareAndSwap(unlocked, locked)
}

// Lock locks m, waiting as long as it takes.
func (m *Mutex) Lock() {
	if m.state.CompareAndSwap(unlocked, locked) {
		return
	}
	m.lockSlow(nil)
}

// LockContext locks m, or returns an error wrapping ctx.Err() if ctx is done
// first; it notices within WaitSlice. Use it where the holder might have died
// and the caller must not wait forever.
func (m *Mutex) LockContext(ctx context.Context) error {
	if m.state.CompareAndSwap(unlocked, locked) {
		return nil
	}
	return m.lockSlow(ctx)
}

func (m *Mutex) lockSlow(ctx context.Context) error {
	if spin(func() bool { return m.state.Load() == unlocked && m.state.CompareAndSwap(unlocked, locked) }) {
		return nil
	}
	// From here on we mark the lock contended, so that whoever unlocks it
	// wakes a sleeper; we may take it in that state, which costs one
	// unnecessary wake-up at our Unlock.
	for m.state.Swap(contended) != unlocked {
		if ctx == nil {
			futexWait(&m.state, contended, -1)
			continue
		}
		d, err := waitSlice(ctx)
		if err != nil {
			return err
		}
		futexWait(&m.state, contended, d)
	}
	return nil
}

// Unlock unlocks m. Any process may unlock a Mutex, not only the one that
// locked it. Unlock of an unlocked Mutex panics.
func (m *Mutex) Unlock() {
	switch m.state.Swap(unlocked) {
	case locked:
	case contended:
		futexWake(&m.state, 1)
	case unlocked:
		panic("shmactor: Unlock of unlocked Mutex")
	default:
		panic(fmt.Sprintf("shmactor: Unlock of Mutex at %p with corrupt state", unsafe.Pointer(m)))
	}
}
