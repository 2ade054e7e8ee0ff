package phases

import "fmt"

// Phase is a start phase of the runtime. The zero value is not a phase.
type Phase uint8

const (
	// PostmasterStart is entered when the postmaster starts, before any
	// shared memory exists. Workers that start here may not use shared memory.
	PostmasterStart Phase = iota + 1
	// ConsistentState is entered once the host's state is consistent enough
	// for read-only work (PostgreSQL: hot standby reached consistency).
	ConsistentState
	// RecoveryFinished is entered once recovery is over and the host accepts
	// normal work. Most workers start here.
	RecoveryFinished
)

// All returns the phases in the order they are entered.
func All() [3]Phase { return [3]Phase{PostmasterStart, ConsistentState, RecoveryFinished} }

// Reverse returns the phases in the order workers stop: the latest first.
func Reverse() [3]Phase { return [3]Phase{RecoveryFinished, ConsistentState, PostmasterStart} }

// Valid reports whether p is one of the three phases.
func (p Phase) Valid() bool { return p >= PostmasterStart && p <= RecoveryFinished }

// String returns the phase's name, as used in logs, metrics and JSON.
func (p Phase) String() string {
	switch p {
	case PostmasterStart:
		return "postmaster_start"
	case ConsistentState:
		return "consistent_state"
	case RecoveryFinished:
		return "recovery_finished"
	case 0:
		return "none"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// MarshalText encodes the phase by name.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText decodes a phase by name; "none" is the zero Phase, as
// MarshalText writes it.
func (p *Phase) UnmarshalText(b []byte) error {
	if string(b) == "none" {
		*p = 0
		return nil
	}
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Parse returns the phase with the given name (as printed by String).
func Parse(s string) (Phase, error) {
	for _, p := range All() {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("phases: unknown phase %q", s)
}

// ShutdownMode says how the runtime stops its workers.
type ShutdownMode uint8

const (
	// Smart waits until every worker has finished by itself. No worker is
	// started or restarted once it begins.
	Smart ShutdownMode = iota + 1
	// Fast sends SIGTERM (and the terminate notice) to every worker, in
	// reverse start order, and kills those still alive after their grace
	// period.
	Fast
	// Immediate kills every worker at once with SIGKILL.
	Immediate
)

// Valid reports whether m is one of the three modes.
func (m ShutdownMode) Valid() bool { return m >= Smart && m <= Immediate }

// String returns the mode's name.
func (m ShutdownMode) String() string {
	switch m {
	case Smart:
		return "smart"
	case Fast:
		return "fast"
	case Immediate:
		return "immediate"
	}
	return fmt.Sprintf("shutdown_mode(%d)", uint8(m))
}
