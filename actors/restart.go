package actors

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Restart is a restart policy: how long to wait before a worker that exited
// with code 1 or crashed is started again. The policies are [Fixed],
// [Exponential] and [NeverRestart]. A nil Restart in a [Spec] means the
// default, DefaultExponential.
//
// A worker that exits 0 is done and is never restarted, whatever its policy
// (PostgreSQL unregisters it).
type Restart interface {
	// delay returns the wait before restart number attempt (1 for the first
	// restart after a run), given a random number in [0, 1).
	delay(attempt int, rnd float64) (time.Duration, bool)
	validate() error
	// resetAfter is how long a run must last for the attempt count to reset.
	resetAfter() time.Duration
	String() string
}

// Fixed returns a policy that restarts after the same interval every time,
// counted from the moment the process was reaped: PostgreSQL's
// bgw_restart_time. Fixed(0) restarts at once.
func Fixed(d time.Duration) Restart { return fixed(d) }

type fixed time.Duration

func (f fixed) delay(int, float64) (time.Duration, bool) { return time.Duration(f), true }
func (f fixed) resetAfter() time.Duration                { return 0 }
func (f fixed) String() string                           { return "fixed(" + time.Duration(f).String() + ")" }
func (f fixed) validate() error {
	if f < 0 {
		return fmt.Errorf("fixed restart interval %v is negative", time.Duration(f))
	}
	return nil
}

// NeverRestart is the policy of a worker that is never restarted
// (PostgreSQL's BGW_NEVER_RESTART): after it exits 1 or crashes it stays
// stopped or crashed.
var NeverRestart Restart = never{}

type never struct{}

func (never) delay(int, float64) (time.Duration, bool) { return 0, false }
func (never) resetAfter() time.Duration                { return 0 }
func (never) validate() error                          { return nil }
func (never) String() string                           { return "never" }

// Exponential is a restart policy whose wait grows geometrically with the
// number of consecutive failed runs, up to a cap, with random jitter so
// that workers that fail together do not restart together.
//
// The wait before restart n (n = 1 for the first) is
//
//	d = min(Initial × Multiplier^(n-1), Max)
//	wait ∈ [d × (1 − Jitter), d]
//
// so the wait never exceeds Max and never falls below (1 − Jitter) of the
// unjittered value. A run that lasted at least ResetAfter resets n to 1.
// Zero fields take the values of [DefaultExponential].
type Exponential struct {
	Initial    time.Duration // first wait; zero = 100ms
	Max        time.Duration // cap on the wait; zero = 30s
	Multiplier float64       // growth per failure, ≥ 1; zero = 2
	Jitter     float64       // fraction in [0, 1) taken off at random; zero = none, use a negative value never
	ResetAfter time.Duration // a run this long resets the growth; zero = 60s
}

// DefaultExponential is the policy used when a spec names none.
var DefaultExponential = Exponential{
	Initial:    100 * time.Millisecond,
	Max:        30 * time.Second,
	Multiplier: 2,
	Jitter:     0.2,
	ResetAfter: 60 * time.Second,
}

func (e Exponential) withDefaults() Exponential {
	if e.Initial == 0 {
		e.Initial = DefaultExponential.Initial
	}
	if e.Max == 0 {
		e.Max = DefaultExponential.Max
	}
	if e.Multiplier == 0 {
		e.Multiplier = DefaultExponential.Multiplier
	}
	if e.ResetAfter == 0 {
		e.ResetAfter = DefaultExponential.ResetAfter
	}
	return e
}

func (e Exponential) validate() error {
	switch {
	case e.Initial < 0:
		return fmt.Errorf("exponential restart: Initial %v is negative", e.Initial)
	case e.Max < 0:
		return fmt.Errorf("exponential restart: Max %v is negative", e.Max)
	case e.ResetAfter < 0:
		return fmt.Errorf("exponential restart: ResetAfter %v is negative", e.ResetAfter)
	case e.Multiplier != 0 && (e.Multiplier < 1 || math.IsNaN(e.Multiplier) || math.IsInf(e.Multiplier, 0)):
		return fmt.Errorf("exponential restart: Multiplier %v is below 1", e.Multiplier)
	case e.Jitter < 0 || e.Jitter >= 1 || math.IsNaN(e.Jitter):
		return fmt.Errorf("exponential restart: Jitter %v is outside [0, 1)", e.Jitter)
	}
	d := e.withDefaults()
	if d.Initial > d.Max {
		return fmt.Errorf("exponential restart: Initial %v exceeds Max %v", d.Initial, d.Max)
	}
	return nil
}

func (e Exponential) delay(attempt int, rnd float64) (time.Duration, bool) {
	e = e.withDefaults()
	if attempt < 1 {
		attempt = 1
	}
	// Computed in float64 but clamped in Duration: float64(Max) can round
	// above math.MaxInt64, and converting that back would overflow.
	base := e.Max
	if d := float64(e.Initial) * math.Pow(e.Multiplier, float64(attempt-1)); d < float64(e.Max) {
		base = time.Duration(d)
	}
	cut := float64(base) * e.Jitter * rnd
	if cut >= float64(base) || cut < 0 || math.IsNaN(cut) {
		cut = 0
	}
	return base - time.Duration(cut), true
}

func (e Exponential) resetAfter() time.Duration { return e.withDefaults().ResetAfter }

func (e Exponential) String() string {
	e = e.withDefaults()
	return fmt.Sprintf("exponential(%v..%v ×%g jitter %g)", e.Initial, e.Max, e.Multiplier, e.Jitter)
}

// Intensity limits how often a worker may be restarted: more than
// MaxRestarts restarts within Window and the worker is failed instead of
// restarted (OTP's MaxR within MaxT). The zero value means the default, 10
// restarts within 60 seconds. MaxRestarts < 0 disables the limit.
type Intensity struct {
	MaxRestarts int           // zero = 10; negative = unlimited
	Window      time.Duration // zero = 60s
}

func (in Intensity) withDefaults() Intensity {
	if in.MaxRestarts == 0 {
		in.MaxRestarts = 10
	}
	if in.Window == 0 {
		in.Window = 60 * time.Second
	}
	return in
}

func (in Intensity) validate() error {
	if in.Window < 0 {
		return fmt.Errorf("restart intensity window %v is negative", in.Window)
	}
	if in.MaxRestarts > 1<<16 {
		return fmt.Errorf("restart intensity MaxRestarts %d is above %d", in.MaxRestarts, 1<<16)
	}
	return nil
}

// ErrNoRestart is returned by [Backoff.Next] when the policy says never.
var ErrNoRestart = errors.New("actors: restart policy is never")

// ErrIntensity is returned by [Backoff.Next] when the restart would exceed
// the restart intensity: the worker is to be failed.
var ErrIntensity = errors.New("actors: restart intensity exceeded")

// Backoff is one worker's restart state: the policy, the count of
// consecutive failed runs, and the times of its recent restarts. It is not
// safe for concurrent use; the postmaster owns one per worker. Its cost is
// flat: it remembers at most MaxRestarts restart times in a ring.
type Backoff struct {
	policy    Restart
	intensity Intensity
	attempt   int         // consecutive failed runs; zero = none since the last reset
	ring      []time.Time // times of the last MaxRestarts restarts, oldest at head once full
	head      int
	n         int
}

// NewBackoff returns the restart state for a worker with the given policy
// (nil = DefaultExponential) and intensity.
func NewBackoff(policy Restart, in Intensity) *Backoff {
	if policy == nil {
		policy = DefaultExponential
	}
	in = in.withDefaults()
	b := &Backoff{policy: policy, intensity: in}
	if in.MaxRestarts > 0 {
		b.ring = make([]time.Time, in.MaxRestarts)
	}
	return b
}

// Next records that the worker's run ended at now after running for uptime,
// and returns how long to wait before restarting it. It returns
// ErrNoRestart when the policy never restarts and ErrIntensity when this
// restart would be more than MaxRestarts within Window. rnd is a random
// number in [0, 1) for the jitter.
func (b *Backoff) Next(now time.Time, uptime time.Duration, rnd float64) (time.Duration, error) {
	if r := b.policy.resetAfter(); r > 0 && uptime >= r {
		b.attempt = 0
	}
	b.attempt++
	d, ok := b.policy.delay(b.attempt, rnd)
	if !ok {
		return 0, ErrNoRestart
	}
	if b.ring != nil {
		at := now.Add(d)
		if b.n == len(b.ring) {
			if oldest := b.ring[b.head]; at.Sub(oldest) < b.intensity.Window {
				return 0, fmt.Errorf("%w: more than %d restarts within %v", ErrIntensity, b.intensity.MaxRestarts, b.intensity.Window)
			}
		}
		b.ring[b.head] = at
		b.head = (b.head + 1) % len(b.ring)
		if b.n < len(b.ring) {
			b.n++
		}
	}
	return d, nil
}

// Attempt returns the number of consecutive failed runs counted so far
// (zero before the first failure or after a reset).
func (b *Backoff) Attempt() int { return b.attempt }

// Reset forgets the consecutive failures (not the intensity history).
func (b *Backoff) Reset() { b.attempt = 0 }

// BackoffState is a Backoff's history, for carrying it into a new image of
// the host (an in-place upgrade).
type BackoffState struct {
	Attempt int         // consecutive failed runs
	Ring    []time.Time // the recent restart times, as kept
	Head, N int
}

// State returns the backoff's history.
func (b *Backoff) State() BackoffState {
	return BackoffState{Attempt: b.attempt, Ring: slices.Clone(b.ring), Head: b.head, N: b.n}
}

// RestoreBackoff returns the restart state of a worker with policy and
// intensity (as NewBackoff) carrying on from st. A history that does not
// fit the intensity (another MaxRestarts) is kept as far as it fits.
func RestoreBackoff(policy Restart, in Intensity, st BackoffState) *Backoff {
	b := NewBackoff(policy, in)
	b.attempt = st.Attempt
	if len(b.ring) == len(st.Ring) && st.Head >= 0 && st.Head < max(len(b.ring), 1) && st.N >= 0 && st.N <= len(b.ring) {
		copy(b.ring, st.Ring)
		b.head, b.n = st.Head, st.N
	}
	return b
}

// RestartState describes a restart policy as data, for carrying a dynamic
// worker's spec into a new image of the host.
type RestartState struct {
	Kind        string        // "default", "fixed", "never" or "exponential"
	Interval    time.Duration // with fixed
	Exponential Exponential   // with exponential
}

// DescribeRestart returns r as data.
func DescribeRestart(r Restart) RestartState {
	switch p := r.(type) {
	case nil:
		return RestartState{Kind: "default"}
	case fixed:
		return RestartState{Kind: "fixed", Interval: time.Duration(p)}
	case never:
		return RestartState{Kind: "never"}
	case Exponential:
		return RestartState{Kind: "exponential", Exponential: p}
	}
	return RestartState{Kind: "unknown"}
}

// Restart returns the policy st describes, or an error for one it does
// not know.
func (st RestartState) Restart() (Restart, error) {
	switch st.Kind {
	case "default":
		return nil, nil
	case "fixed":
		return Fixed(st.Interval), nil
	case "never":
		return NeverRestart, nil
	case "exponential":
		return st.Exponential, nil
	}
	return nil, fmt.Errorf("actors: unknown restart policy %q", st.Kind)
}
