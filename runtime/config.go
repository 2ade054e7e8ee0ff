package runtime

import (
	"fmt"
	"log/slog"
	goruntime "runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
)

// Config configures a Runtime. Zero values take the defaults written next
// to each field. A Config is copied by New; changing it later has no effect.
type Config struct {
	// Workers are the static workers of this runtime. nil = every worker
	// registered with actors.Register. Each must be registered or defined
	// in this binary under its Name (its code is found by that name in the
	// child).
	Workers []actors.Spec
	// MaxWorkers caps the workers that are not stopped or failed
	// (PostgreSQL's max_worker_processes). Zero = 128.
	MaxWorkers int
	// StartsPerIteration is how many pending workers one server-loop
	// iteration starts before the postmaster yields to its mailbox. Zero = 1.
	StartsPerIteration int
	// MaxStarting caps the workers being started at once (spawned or
	// assigned, not yet ready). Starting a Go child is CPU-bound (exec,
	// page faults, the actor system), so running many at once on few cores
	// only makes each slower and starves the postmaster. Zero = 2 × the
	// number of CPUs. Warm starts from the pool are not held back by it.
	MaxStarting int
	// HeartbeatInterval is how often a child proves it is alive. Zero = 1 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the bridge may stay silent before the
	// child is judged wedged and killed. Zero = 5 × HeartbeatInterval.
	HeartbeatTimeout time.Duration
	// MaxFrame caps a bridge frame. Zero = 1 MiB.
	MaxFrame int
	// HTTPAddr is where the metrics, status and health endpoints listen.
	// Empty = no endpoint. Must be a loopback address unless AllowPublicHTTP.
	HTTPAddr string
	// AllowPublicHTTP permits a non-loopback HTTPAddr. Prometheus' own
	// security model says metrics must not be exposed to public networks.
	AllowPublicHTTP bool
	// Registry receives the runtime's metrics. nil = a new registry owned
	// by the runtime (never the global one unless passed here).
	Registry *prometheus.Registry
	// Logger receives the runtime's and the children's log lines. nil =
	// slog.Default().
	Logger *slog.Logger
	// ChildEnv is the environment of child processes. nil = the host's.
	ChildEnv []string
	// WarmPool is how many idle children to keep started ahead of time, so
	// that starting or restarting a worker skips exec and actor-system
	// startup. Zero = 2; negative = no pool (every start is cold).
	WarmPool int
	// LockFile, when set, is locked (flock) for the runtime's life and
	// inherited by every child, so a second runtime cannot start while any
	// child of the first, or a process it left behind, is still alive
	// (PostgreSQL's "pre-existing shared memory block" interlock). Created
	// 0600.
	LockFile string
	// GroupStopTimeout is the deadline between SIGTERM and SIGKILL for the
	// shared-memory workers taken down by an all-for-one reset. Zero = 1 s.
	GroupStopTimeout time.Duration
	// GroupResetIntensity limits all-for-one resets; past it the
	// shared-memory group is failed and stays down. Zero = 5 within 60 s.
	GroupResetIntensity actors.Intensity
	// NoRestartAfterCrash turns all-for-one resets off (PostgreSQL's
	// restart_after_crash = off): the first crash of a shared-memory
	// worker fails the whole shared-memory group instead of resetting it,
	// and a critical member then shuts the runtime down.
	NoRestartAfterCrash bool
	// NoCgroups keeps children in process groups only, even where cgroup
	// v2 is usable; workers with Limits are then refused.
	NoCgroups bool
	// HandleSignals makes the runtime own SIGTERM, SIGINT and SIGQUIT and
	// map them to smart, fast and immediate shutdown, as PostgreSQL's
	// postmaster does, SIGHUP to Reload, and SIGUSR2 to Upgrade (the
	// binary as it is on disk now).
	HandleSignals bool
	// Version is the running build's version, as GET /version and
	// bgworker_build_info report it. Empty = the binary's own (its module
	// version or VCS revision).
	Version string
}

func (c *Config) defaults() error {
	if c.MaxWorkers == 0 {
		c.MaxWorkers = 128
	}
	if c.StartsPerIteration == 0 {
		c.StartsPerIteration = 1
	}
	if c.MaxStarting == 0 {
		c.MaxStarting = 2 * goruntime.NumCPU()
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 5 * c.HeartbeatInterval
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = bridge.DefaultMaxFrame
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Version == "" {
		c.Version = buildVersion()
	}
	if c.WarmPool == 0 {
		c.WarmPool = 2
	} else if c.WarmPool < 0 {
		c.WarmPool = 0
	}
	if c.GroupStopTimeout == 0 {
		c.GroupStopTimeout = time.Second
	}
	if c.GroupResetIntensity.MaxRestarts == 0 {
		c.GroupResetIntensity.MaxRestarts = 5
	}
	switch {
	case c.GroupStopTimeout < 0:
		return fmt.Errorf("%w: GroupStopTimeout %v is negative", ErrInvalidConfig, c.GroupStopTimeout)
	case c.MaxWorkers < 0:
		return fmt.Errorf("%w: MaxWorkers %d is negative", ErrInvalidConfig, c.MaxWorkers)
	case c.MaxStarting < 0:
		return fmt.Errorf("%w: MaxStarting %d is negative", ErrInvalidConfig, c.MaxStarting)
	case c.StartsPerIteration < 0:
		return fmt.Errorf("%w: StartsPerIteration %d is negative", ErrInvalidConfig, c.StartsPerIteration)
	case c.HeartbeatInterval < time.Millisecond:
		return fmt.Errorf("%w: HeartbeatInterval %v is below 1ms", ErrInvalidConfig, c.HeartbeatInterval)
	case c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatTimeout %v must exceed HeartbeatInterval %v", ErrInvalidConfig, c.HeartbeatTimeout, c.HeartbeatInterval)
	case c.MaxFrame < 4096 || c.MaxFrame > 64<<20:
		return fmt.Errorf("%w: MaxFrame %d is outside [4096, 64 MiB]", ErrInvalidConfig, c.MaxFrame)
	}
	return nil
}
