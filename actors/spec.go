package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// MaxNameLen is the longest worker name accepted, in bytes (PostgreSQL's
// BGW_MAXLEN is 96; names here also label metrics, so they are kept short).
const MaxNameLen = 64

// RunFunc is a loop-style worker, like worker_spi's main loop. It runs in
// the worker's child process and must return once ctx is done (the
// postmaster asked the worker to stop). Returning nil exits 0: the worker
// is done and is not restarted. Returning an error exits 1: the worker is
// restarted after its backoff, as PostgreSQL does after ereport(ERROR). A
// panic exits 2: a crash.
type RunFunc func(ctx context.Context, w Worker) error

// Spec describes a worker: what to run, when to start it and how to restart
// it. The zero values of the optional fields are the defaults written next
// to them. A Spec is copied when registered; changing it later has no
// effect.
type Spec struct {
	// Name identifies the worker: unique, 1 to MaxNameLen bytes of
	// [A-Za-z0-9_.-]. It labels the worker's logs and metrics.
	Name string
	// Type groups workers of one kind (PostgreSQL's bgw_type); dynamic
	// workers are labelled by Type in metrics. Empty = Name.
	Type string
	// StartAt is the phase at which the worker is started. Zero =
	// phases.RecoveryFinished.
	StartAt phases.Phase

	// SharedMemory gives the worker the shared segment (its memfd comes
	// with the worker's assignment over the bridge, by SCM_RIGHTS; fd 4 is
	// the lock file) and makes it a member of the all-for-one group: if it crashes, every
	// shared-memory worker is stopped, the segment rebuilt and the group
	// restarted. Not allowed at phases.PostmasterStart.
	SharedMemory bool
	// Regions are the named shared-memory regions this worker needs; they
	// size the segment (PostgreSQL's RequestAddinShmemSpace). Only with
	// SharedMemory. Regions of the same name requested by several workers
	// must agree on the size; the first initialiser registered is used.
	Regions []shmactor.Region
	// Connect lets the worker send to and request from the actors the host
	// exposed by name (PostgreSQL's BGWORKER_BACKEND_DATABASE_CONNECTION).
	// Without it the worker talks only to its own bridge.
	Connect bool

	// Run is a loop-style worker. Exactly one of Run and Props is set.
	Run RunFunc
	// Props produces the protoactor props of an actor-style worker, run in
	// the child's actor system. The actor stops the worker by stopping
	// itself (exit 0) or calling w.Exit; a panic in it is a crash (exit 2).
	Props func(w Worker) *actor.Props
	// Arg is passed to the worker as Worker.Arg (PostgreSQL's bgw_extra
	// and bgw_main_arg). At most 64 KiB.
	Arg []byte

	// Restart is the restart policy. nil = DefaultExponential.
	Restart Restart
	// Intensity limits restarts; after the limit the worker is failed.
	// Zero = 10 restarts within 60 s.
	Intensity Intensity
	// Critical makes a failed worker (restart intensity exceeded, or
	// NeverRestart after a crash) shut the whole runtime down, like an
	// OTP supervisor escalating to its parent.
	Critical bool

	// StopTimeout is the grace period between SIGTERM and SIGKILL when the
	// worker is stopped. Zero = 5 s (PostgreSQL's SIGQUIT-to-SIGKILL delay).
	StopTimeout time.Duration
	// StartTimeout bounds the time from spawn until the worker reports
	// ready; past it the child is killed and the start counts as failed.
	// Zero = 10 s.
	StartTimeout time.Duration
	// NotifyReady makes the worker ready only when it calls Worker.Ready,
	// after its own setup (systemd's Type=notify), instead of as soon as
	// its actor has started (Type=simple). StartTimeout counts until then.
	NotifyReady bool

	// Limits caps the memory, CPU and tasks of the worker's process tree
	// (see Limits). Zero = no limits. Where the runtime cannot enforce
	// them, Start (for a static worker) or StartWorker fails with an
	// error wrapping the runtime's ErrLimitsUnavailable.
	Limits Limits
}

// Defaults for the optional durations of a Spec.
const (
	DefaultStopTimeout  = 5 * time.Second
	DefaultStartTimeout = 10 * time.Second
	MaxArgLen           = 64 << 10
)

// Errors returned by Validate and Register. They are wrapped in a
// *SpecError naming the worker; test with errors.Is.
var (
	ErrInvalidSpec        = errors.New("invalid worker spec")
	ErrAlreadyRegistered  = errors.New("worker already registered")
	ErrRegistrationClosed = errors.New("registration is closed: the runtime has started; use dynamic workers")
)

// SpecError is a spec that failed validation or registration.
type SpecError struct {
	Name   string // the worker's name as given (may be empty)
	Reason string // what was wrong
	Err    error  // ErrInvalidSpec, ErrAlreadyRegistered or ErrRegistrationClosed
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("actors: worker %q: %v: %s", e.Name, e.Err, e.Reason)
}

// Unwrap returns the sentinel error.
func (e *SpecError) Unwrap() error { return e.Err }

func invalid(name, format string, args ...any) error {
	return &SpecError{Name: name, Reason: fmt.Sprintf(format, args...), Err: ErrInvalidSpec}
}

// Validate checks a spec and returns a *SpecError wrapping ErrInvalidSpec
// that says what is wrong, or nil.
func (s *Spec) Validate() error {
	if err := ValidName(s.Name); err != nil {
		return invalid(s.Name, "%v", err)
	}
	if s.Type != "" {
		if err := ValidName(s.Type); err != nil {
			return invalid(s.Name, "type: %v", err)
		}
	}
	if s.StartAt != 0 && !s.StartAt.Valid() {
		return invalid(s.Name, "unknown start phase %d", uint8(s.StartAt))
	}
	if s.SharedMemory && s.StartPhase() == phases.PostmasterStart {
		return invalid(s.Name, "shared memory is not available at %v; start at %v or later", phases.PostmasterStart, phases.ConsistentState)
	}
	if len(s.Regions) > 0 && !s.SharedMemory {
		return invalid(s.Name, "regions requested without SharedMemory")
	}
	seen := map[string]bool{}
	for _, r := range s.Regions {
		if r.Name == "" || r.Size <= 0 {
			return invalid(s.Name, "region %q has size %d; want a name and a positive size", r.Name, r.Size)
		}
		if seen[r.Name] {
			return invalid(s.Name, "region %q requested twice", r.Name)
		}
		seen[r.Name] = true
	}
	switch {
	case s.Run == nil && s.Props == nil:
		return invalid(s.Name, "neither Run nor Props is set")
	case s.Run != nil && s.Props != nil:
		return invalid(s.Name, "both Run and Props are set; choose one")
	}
	if len(s.Arg) > MaxArgLen {
		return invalid(s.Name, "Arg is %d bytes, above %d", len(s.Arg), MaxArgLen)
	}
	if s.Restart != nil {
		if err := s.Restart.validate(); err != nil {
			return invalid(s.Name, "%v", err)
		}
	}
	if err := s.Intensity.validate(); err != nil {
		return invalid(s.Name, "%v", err)
	}
	if s.StopTimeout < 0 {
		return invalid(s.Name, "StopTimeout %v is negative", s.StopTimeout)
	}
	if s.StartTimeout < 0 {
		return invalid(s.Name, "StartTimeout %v is negative", s.StartTimeout)
	}
	if err := s.Limits.validate(); err != nil {
		return invalid(s.Name, "%v", err)
	}
	return nil
}

// ValidName reports whether name can name a worker or a worker type.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name is %d bytes, longer than %d", len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("name has byte %q at %d; use [A-Za-z0-9_.-]", c, i)
		}
	}
	return nil
}

// StartPhase returns the phase the worker starts at, with the default
// applied.
func (s *Spec) StartPhase() phases.Phase {
	if s.StartAt == 0 {
		return phases.RecoveryFinished
	}
	return s.StartAt
}

// TypeName returns Type, or Name when Type is empty.
func (s *Spec) TypeName() string {
	if s.Type == "" {
		return s.Name
	}
	return s.Type
}

// GracePeriod returns StopTimeout with its default applied.
func (s *Spec) GracePeriod() time.Duration {
	if s.StopTimeout == 0 {
		return DefaultStopTimeout
	}
	return s.StopTimeout
}

// ReadyTimeout returns StartTimeout with its default applied.
func (s *Spec) ReadyTimeout() time.Duration {
	if s.StartTimeout == 0 {
		return DefaultStartTimeout
	}
	return s.StartTimeout
}

// RestartPolicy returns Restart with its default applied.
func (s *Spec) RestartPolicy() Restart {
	if s.Restart == nil {
		return DefaultExponential
	}
	return s.Restart
}
