package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	goruntime "runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bgworker/bgworker/phases"
)

// httpServer serves the status page at /, /metrics, /workers, /status,
// /events, /healthz and /readyz. No pprof, GET only, header and idle
// timeouts set.
type httpServer struct {
	srv    *http.Server
	ln     net.Listener
	events *eventHub
	done   chan struct{}
}

// Addr returns the address the HTTP endpoint listens on, or "" when there is
// none. Useful with HTTPAddr "127.0.0.1:0".
func (rt *Runtime) Addr() string {
	if rt.http == nil {
		return ""
	}
	return rt.http.ln.Addr().String()
}

// startHTTP serves the endpoint on ln, or on a listener of its own at
// Config.HTTPAddr when ln is nil (ln is an upgrade's, handed across exec).
func (rt *Runtime) startHTTP(ln net.Listener) (*httpServer, error) {
	if ln != nil {
		return rt.serveHTTP(ln), nil
	}
	host, _, err := net.SplitHostPort(rt.cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: HTTPAddr %q: %v", ErrInvalidConfig, rt.cfg.HTTPAddr, err)
	}
	if !rt.cfg.AllowPublicHTTP {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%w: HTTPAddr %q is not a loopback address; set AllowPublicHTTP to serve metrics beyond this machine", ErrInvalidConfig, rt.cfg.HTTPAddr)
		}
	}
	ln, err = net.Listen("tcp", rt.cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("runtime: http: %w", err)
	}
	return rt.serveHTTP(ln), nil
}

// serveHTTP serves the endpoint's routes on ln.
func (rt *Runtime) serveHTTP(ln net.Listener) *httpServer {
	g := rt.metrics.gatherer // Config.Registry, or the runtime's own
	mux := http.NewServeMux()
	events := newEventHub(rt, eventQueue)
	mux.HandleFunc("GET /{$}", rt.serveStatusPage)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rt.Status())
	})
	mux.Handle("GET /events", events)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /workers", func(w http.ResponseWriter, r *http.Request) {
		ws, err := rt.WorkersContext(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ws)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := rt.pingPostmaster(ctx); err != nil {
			http.Error(w, "postmaster not answering: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := rt.pingPostmaster(ctx); err != nil {
			http.Error(w, "not running: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		ws, err := rt.WorkersContext(ctx)
		if err != nil {
			http.Error(w, "not running", http.StatusServiceUnavailable)
			return
		}
		if p := phases.Phase(rt.phase.Load()); p < phases.RecoveryFinished {
			http.Error(w, "phase "+p.String(), http.StatusServiceUnavailable)
			return
		}
		for _, wi := range ws {
			if wi.State == Failed {
				http.Error(w, "worker "+wi.Name+" failed", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Version  string `json:"version"`
			Go       string `json:"go"`
			Upgrades uint64 `json:"upgrades"`
		}{rt.cfg.Version, goruntime.Version(), uint64(counterValue(rt.metrics.upgrades))})
	})
	rt.addRoutes(mux)
	h := &httpServer{ln: ln, events: events, done: make(chan struct{}), srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rt.log.Error("runtime: http", "err", err)
		}
	}()
	return h
}

func (h *httpServer) close() {
	// Event streams never go idle by themselves: end them first, and wait
	// for their handlers, which Shutdown and Close do not.
	h.events.close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	h.srv.Close()
	<-h.done
}
