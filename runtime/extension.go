package runtime

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// This file holds the hooks by which a package built on the runtime's
// public API (runtime/cluster, for one) extends what the runtime serves:
// an HTTP route beside /workers, rows of its own in Workers, and metrics
// on the runtime's registry. The runtime itself never imports such a
// package, so a host that does not import it links none of it.

// hooks are what extensions installed on a runtime; see HandleHTTP and
// DecorateWorkers.
type hooks struct {
	routes   []extRoute             // added before Start, read by startHTTP
	decorate atomic.Pointer[rowsFn] // nil = rows as the postmaster publishes them
}

// extRoute is one HTTP route added with HandleHTTP.
type extRoute struct {
	pattern string
	h       http.Handler
}

type rowsFn func([]WorkerInfo) []WorkerInfo

// HandleHTTP adds a GET route to the runtime's HTTP endpoint (see
// Config.HTTPAddr), beside /metrics, /workers, /healthz and /readyz, with
// a path such as "/cluster". It must be called before Start; afterwards it
// fails with ErrAlreadyStarted. A path that the runtime serves itself, or
// one added before, is an error. Without an HTTP endpoint the route is
// accepted and never served.
func (rt *Runtime) HandleHTTP(path string, h http.Handler) error {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t{}") {
		return fmt.Errorf("%w: HTTP path %q: want an absolute path without patterns", ErrInvalidConfig, path)
	}
	if h == nil {
		return fmt.Errorf("%w: HTTP path %q: nil handler", ErrInvalidConfig, path)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state != 0 {
		return fmt.Errorf("%w: HandleHTTP(%q) after Start", ErrAlreadyStarted, path)
	}
	switch path {
	case "/", "/metrics", "/workers", "/healthz", "/readyz", "/status", "/events":
		return fmt.Errorf("%w: HTTP path %q is the runtime's own", ErrInvalidConfig, path)
	}
	for _, r := range rt.ext.routes {
		if r.pattern == path {
			return fmt.Errorf("%w: HTTP path %q added twice", ErrInvalidConfig, path)
		}
	}
	rt.ext.routes = append(rt.ext.routes, extRoute{pattern: path, h: h})
	return nil
}

// addRoutes registers the routes added with HandleHTTP on mux.
func (rt *Runtime) addRoutes(mux *http.ServeMux) {
	for _, r := range rt.ext.routes {
		mux.Handle("GET "+r.pattern, r.h)
	}
}

// DecorateWorkers installs fn, which sees every result of Workers (and of
// GET /workers) before the caller does: it may annotate rows (for example
// set Member) and append rows of its own for workers that run elsewhere.
// It gets a fresh slice it may modify and returns the rows to show. fn
// runs on the caller's goroutine, so it must be quick and must not call
// Workers. A later call replaces fn; nil removes it. The final rows kept
// after Shutdown are not decorated.
func (rt *Runtime) DecorateWorkers(fn func([]WorkerInfo) []WorkerInfo) {
	if fn == nil {
		rt.ext.decorate.Store(nil)
		return
	}
	f := rowsFn(fn)
	rt.ext.decorate.Store(&f)
}

// decorated applies the DecorateWorkers hook to rows.
func (rt *Runtime) decorated(rows []WorkerInfo) []WorkerInfo {
	if f := rt.ext.decorate.Load(); f != nil {
		return (*f)(rows)
	}
	return rows
}

// Registerer returns the registry that receives the runtime's metrics
// (Config.Registry, or the one the runtime made), so that an extension's
// metrics are served at the same /metrics.
func (rt *Runtime) Registerer() prometheus.Registerer {
	if rt.cfg.Registry != nil {
		return rt.cfg.Registry
	}
	return rt.metrics.gatherer.(prometheus.Registerer)
}
