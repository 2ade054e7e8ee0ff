package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/cluster"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Bad configuration is refused by New with an error naming what is wrong.
func TestConfigErrors(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	peers := []string{"127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"}
	for _, c := range []struct {
		cfg  cluster.Config
		want string
	}{
		{cluster.Config{Peers: peers}, "Bind"},
		{cluster.Config{Bind: ":7101", Peers: peers}, "empty host"},
		{cluster.Config{Bind: "127.0.0.1:x", Peers: peers}, "port"},
		{cluster.Config{Bind: "127.0.0.1:7101"}, "neither Peers nor Provider"},
		{cluster.Config{Bind: "127.0.0.1:7104", Peers: peers}, "not among Peers"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: append(peers, peers[0])}, "listed twice"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: peers, Quorum: 4}, "exceeds"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: peers, Interval: 100 * time.Millisecond, Lease: 200 * time.Millisecond}, "below 5"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: peers, Timeout: time.Hour}, "Timeout"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: peers, Workers: []actors.Spec{{Name: "nowhere", Run: func(context.Context, actors.Worker) error { return nil }}}}, "not registered"},
		{cluster.Config{Bind: "127.0.0.1:7101", Peers: peers, Workers: []actors.Spec{{Name: "tsingle", StopTimeout: time.Second, Props: fencedWorker}}}, "StopTimeout"},
	} {
		rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		c.cfg.Logger = quiet
		_, err = cluster.New(rt, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error about %q", c.cfg, err, c.want)
		}
		rt.Shutdown(context.Background(), phases.Fast)
	}
}

// New after the runtime has started, and Start before it, are refused; a
// Start that cannot bind its address fails with an error instead of
// protoactor's panic, and Shutdown after it returns at once.
func TestStartErrors(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bind := ln.Addr().String()
	ctx := context.Background()
	rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, Logger: quiet, WarmPool: -1})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.New(rt, cluster.Config{Bind: bind, Peers: []string{bind}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx); err == nil || !strings.Contains(err.Error(), "start the runtime first") {
		t.Errorf("Start before the runtime's = %v", err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(ctx, phases.Fast)
	if _, err := cluster.New(rt, cluster.Config{Bind: bind, Peers: []string{bind}, Logger: quiet}); !errors.Is(err, runtime.ErrAlreadyStarted) {
		t.Errorf("New after the runtime started = %v, want ErrAlreadyStarted", err)
	}
	if _, err := cl.Request(ctx, "tsingle", nil); !errors.Is(err, cluster.ErrNotStarted) {
		t.Errorf("Request before Start = %v, want ErrNotStarted", err)
	}
	if err := cl.Start(ctx); err == nil || !strings.Contains(err.Error(), bind) {
		t.Errorf("Start on a bound address = %v, want an error naming it", err)
	}
	if _, err := cl.Request(ctx, "tsingle", nil); !errors.Is(err, cluster.ErrShutdown) {
		t.Errorf("Request after a failed Start = %v, want ErrShutdown", err)
	}
	if err := cl.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after a failed Start = %v", err)
	}
	if _, err := cl.Request(ctx, "nosuch", nil); !errors.Is(err, cluster.ErrUnknown) {
		t.Errorf("Request of an unknown worker = %v, want ErrUnknown", err)
	}
}

// A cluster-scoped worker whose spec leaves StopTimeout zero gets a quarter
// of the lease: it runs steadily under one placement. (With the runtime's
// default grace period, longer than the lease, the holder's stop was due
// at once: it gave the worker up as soon as it took it, in a loop.)
func TestDefaultStopTimeoutHoldsSteadily(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster member with a child")
	}
	t.Setenv(envDir, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := ln.Addr().String()
	ln.Close()
	ctx := context.Background()
	rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, Logger: quiet, WarmPool: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cluster.Config{Bind: bind, Peers: []string{bind}, Logger: quiet, Lease: time.Second,
		Workers: []actors.Spec{{Name: "tsingle", Props: fencedWorker}}}
	cl, err := cluster.New(rt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	placed, given := 0, 0
	gaveUp := make(chan struct{}, 1) // the first time this member gives the worker up
	cl.Subscribe(func(e cluster.Event) {
		if p, ok := e.(cluster.PlacementEvent); ok && p.Worker == "tsingle" {
			mu.Lock()
			defer mu.Unlock()
			if p.Here {
				placed++
			} else {
				given++
				select {
				case gaveUp <- struct{}{}:
				default:
				}
			}
		}
	})
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(ctx, phases.Fast)
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cl.Shutdown(ctx)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); !runningHere(rt, "tsingle"); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("tsingle never ran: rows %+v", rt.Workers())
		}
	}
	// Three leases' worth of renewals: a holder that gives its worker up
	// at once does so within the first (it is caught at its first give-up).
	select {
	case <-gaveUp:
	case <-time.After(3 * cfg.Lease):
	}
	mu.Lock()
	defer mu.Unlock()
	if placed != 1 || given != 0 {
		t.Fatalf("over three leases: placed here %d times, given up %d times; want 1 and 0", placed, given)
	}
}

// runningHere reports whether rt runs the named worker now.
func runningHere(rt *runtime.Runtime, name string) bool {
	for _, w := range rt.Workers() {
		if w.Name == name && w.State == runtime.Running {
			return true
		}
	}
	return false
}
