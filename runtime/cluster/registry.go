package cluster

import (
	"slices"
	"sync"

	"github.com/bgworker/bgworker/actors"
)

// The cluster-scoped workers added in init(), beside actors' registry. It
// is package state for the reason actors' is: init() has nowhere else to
// put it. It is only read by New, which copies it.
var registry struct {
	sync.Mutex
	names []string
}

// Register adds a cluster-scoped worker: it runs on exactly one live
// member of the cluster, the one that owns its name, in a child process of
// that member under its restart policy. Call it from init() on every
// member (the same binary). The spec is defined with actors.Define, so a
// runtime does not start it by itself; errors are those of actors.Define.
// A Cluster started later places it.
func Register(spec actors.Spec) error {
	if err := actors.Define(spec); err != nil {
		return err
	}
	registry.Lock()
	defer registry.Unlock()
	registry.names = append(registry.names, spec.Name)
	return nil
}

// MustRegister is Register that panics on error.
func MustRegister(spec actors.Spec) {
	if err := Register(spec); err != nil {
		panic(err)
	}
}

// registered returns the specs added with Register.
func registered() []actors.Spec {
	registry.Lock()
	names := slices.Clone(registry.names)
	registry.Unlock()
	out := make([]actors.Spec, 0, len(names))
	for _, n := range names {
		if s, ok := actors.Lookup(n); ok {
			out = append(out, s)
		}
	}
	return out
}
