package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/bgworker/bgworker/actors"
)

// Config configures one cluster member. Zero values take the defaults
// written next to each field. A Config is copied by New.
type Config struct {
	// Name is this member's name in status (/workers, /cluster) and logs.
	// Empty = Bind.
	Name string
	// Bind is the host:port of this member's remote endpoint (gRPC). It
	// listens on exactly this address, never on every interface; with
	// StaticPeers it must be one of Peers, in the same spelling. Required.
	Bind string
	// Peers is the static membership: every member's Bind, the same full
	// list on every member, itself included. A member is up while its
	// heartbeats arrive (see Interval and Lease). Set Peers or Provider.
	Peers []string
	// Provider is a protoactor-go membership provider (the k8s, etcd or
	// consul provider) used instead of Peers. Quorum is then required.
	Provider pcluster.ClusterProvider
	// Quorum is how many members must grant a worker's lease before it
	// runs (this member included). Zero = a majority of Peers. With a
	// Provider it must be set: a majority of the fleet's expected size.
	Quorum int
	// Interval is how often every member sends every other member a
	// heartbeat: the health check of the static peers and the renewal of
	// the leases it holds. Zero = 100 ms.
	Interval time.Duration
	// Timeout is the fixed timeout of a health check: an answer later than
	// this after its heartbeat is ignored. Zero = Interval.
	Timeout time.Duration
	// Lease is how long a grant lasts after its last renewal, and with
	// Peers the time after which a silent member is taken as down. Zero =
	// 10 × Interval. Must be at least 5 × Interval.
	Lease time.Duration
	// Workers are the cluster-scoped workers. nil = every worker added
	// with Register. Every member must have the same list.
	Workers []actors.Spec
	// Kinds are protoactor grain kinds to host beside the workers.
	Kinds []*pcluster.Kind
	// ClusterName is the protoactor cluster name. Empty = "bgworker".
	ClusterName string
	// RequestTimeout bounds a Request whose context has no deadline, and a
	// request relayed for a host actor. Zero = 5 s.
	RequestTimeout time.Duration
	// Logger receives the member's log lines. nil = slog.Default().
	Logger *slog.Logger
}

// ErrInvalidConfig is wrapped by every configuration error of New.
var ErrInvalidConfig = errors.New("cluster: invalid config")

func (c *Config) defaults() error {
	if c.Interval == 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = c.Interval
	}
	if c.Lease == 0 {
		c.Lease = 10 * c.Interval
	}
	if c.Name == "" {
		c.Name = c.Bind
	}
	if c.ClusterName == "" {
		c.ClusterName = "bgworker"
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if _, _, err := splitHostPort(c.Bind); err != nil {
		return bad("Bind %q: %v", c.Bind, err)
	}
	switch {
	case c.Interval < time.Millisecond:
		return bad("Interval %v is below 1ms", c.Interval)
	case c.Timeout <= 0 || c.Timeout > c.Lease/2:
		return bad("Timeout %v must be positive and at most half the Lease %v", c.Timeout, c.Lease)
	case c.Lease < 5*c.Interval:
		return bad("Lease %v is below 5 × Interval (%v)", c.Lease, 5*c.Interval)
	case len(c.Peers) > 0 && c.Provider != nil:
		return bad("both Peers and Provider are set; choose one")
	case len(c.Peers) == 0 && c.Provider == nil:
		return bad("neither Peers nor Provider is set")
	case c.Provider != nil && c.Quorum <= 0:
		return bad("Quorum must be set with a Provider (a majority of the fleet's size)")
	case c.Quorum < 0:
		return bad("Quorum %d is negative", c.Quorum)
	}
	if err := actors.ValidName(c.Name); err != nil && c.Name != c.Bind {
		return bad("Name %q: %v", c.Name, err)
	}
	if len(c.Peers) > 0 {
		seen := map[string]bool{}
		for _, p := range c.Peers {
			if _, _, err := splitHostPort(p); err != nil {
				return bad("peer %q: %v", p, err)
			}
			if seen[p] {
				return bad("peer %q listed twice", p)
			}
			seen[p] = true
		}
		if !seen[c.Bind] {
			return bad("Bind %q is not among Peers %q; list every member, this one included", c.Bind, c.Peers)
		}
		if c.Quorum == 0 {
			c.Quorum = len(c.Peers)/2 + 1
		}
		if c.Quorum > len(c.Peers) {
			return bad("Quorum %d exceeds the %d peers", c.Quorum, len(c.Peers))
		}
	}
	c.Peers = slices.Clone(c.Peers)
	return nil
}

// splitHostPort parses host:port with a numeric port in [1, 65535].
func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in [1, 65535]", port)
	}
	if host == "" {
		return "", 0, errors.New("empty host: name the address to bind, e.g. 127.0.0.1")
	}
	return host, p, nil
}
