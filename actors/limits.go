package actors

import (
	"fmt"
	"math"
)

// Limits caps the resources of one worker's process tree: the child and
// everything it starts. They are enforced by cgroup v2 (memory.max, cpu.max,
// pids.max) where the runtime can delegate those controllers to its
// workers; elsewhere a spec that sets any of them is refused (the runtime's
// ErrLimitsUnavailable), never run without them. The zero value limits
// nothing.
type Limits struct {
	// MemoryMax is the most memory the tree may use, in bytes
	// (memory.max). Past it the kernel OOM-kills the whole tree, and the
	// exit is recorded with the reason oom_killed. Zero = no limit; else at
	// least MinMemoryMax.
	MemoryMax int64
	// CPUMax is the CPU time the tree may use, in CPUs: 0.5 is half of one
	// CPU, 2 is two CPUs' worth (cpu.max, over a 100 ms period). Zero = no
	// limit; else between MinCPUMax and MaxCPUMax.
	CPUMax float64
	// PidsMax is the most tasks the tree may have at once (pids.max).
	// Threads count: a Go child runs about ten. Zero = no limit.
	PidsMax int
}

// Bounds of Limits.
const (
	MinMemoryMax = 1 << 20 // a Go child cannot start in less
	MinCPUMax    = 0.01    // cpu.max's smallest quota, 1 ms per 100 ms
	MaxCPUMax    = 1 << 16
)

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

func (l Limits) validate() error {
	switch {
	case l.MemoryMax < 0:
		return fmt.Errorf("Limits.MemoryMax %d is negative", l.MemoryMax)
	case l.MemoryMax > 0 && l.MemoryMax < MinMemoryMax:
		return fmt.Errorf("Limits.MemoryMax %d is below %d bytes", l.MemoryMax, MinMemoryMax)
	case math.IsNaN(l.CPUMax) || math.IsInf(l.CPUMax, 0):
		return fmt.Errorf("Limits.CPUMax %v is not a number of CPUs", l.CPUMax)
	case l.CPUMax < 0:
		return fmt.Errorf("Limits.CPUMax %v is negative", l.CPUMax)
	case l.CPUMax > 0 && l.CPUMax < MinCPUMax:
		return fmt.Errorf("Limits.CPUMax %v is below %v CPUs", l.CPUMax, MinCPUMax)
	case l.CPUMax > MaxCPUMax:
		return fmt.Errorf("Limits.CPUMax %v is above %d CPUs", l.CPUMax, MaxCPUMax)
	case l.PidsMax < 0:
		return fmt.Errorf("Limits.PidsMax %d is negative", l.PidsMax)
	}
	return nil
}
