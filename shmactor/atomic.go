package shmactor

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// wordAt returns a pointer to the size-byte word at mem[off], or panics with
// a message naming fn if the word is out of range or misaligned. Both are
// programmer errors: offsets into a region are constants of its layout.
func wordAt(fn string, mem []byte, off, size int) unsafe.Pointer {
	if off < 0 || off > len(mem)-size {
		panic(fmt.Sprintf("shmactor: %s: offset %d: %d-byte word out of range of a %d-byte region", fn, off, size, len(mem)))
	}
	p := unsafe.Pointer(&mem[off])
	if uintptr(p)%uintptr(size) != 0 {
		panic(fmt.Sprintf("shmactor: %s: offset %d: address %p is not %d-byte aligned", fn, off, p, size))
	}
	return p
}

// Uint64At returns the atomic 64-bit word at mem[off], for use across every
// process that maps mem. It panics if the word does not fit in mem or is not
// 8-byte aligned. Regions start at a multiple of RegionAlign, so an offset
// that is a multiple of 8 within a region is aligned.
func Uint64At(mem []byte, off int) *atomic.Uint64 {
	return (*atomic.Uint64)(wordAt("Uint64At", mem, off, 8))
}

// Int64At is like Uint64At for a signed word.
func Int64At(mem []byte, off int) *atomic.Int64 {
	return (*atomic.Int64)(wordAt("Int64At", mem, off, 8))
}

// Uint32At is like Uint64At for a 32-bit word, which must be 4-byte aligned.
func Uint32At(mem []byte, off int) *atomic.Uint32 {
	return (*atomic.Uint32)(wordAt("Uint32At", mem, off, 4))
}
