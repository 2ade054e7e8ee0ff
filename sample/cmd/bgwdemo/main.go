// Command bgwdemo is a host service that embeds the bgworker runtime the
// way a real service would. It blank-imports the sample worker packages
// (their init() registers the workers), runs a short simulated recovery
// through the start phases, serves /workers, /metrics, /healthz and
// /readyz, prints a status table whenever a worker changes state, starts
// dynamic workers, and shuts down on a signal or after -duration.
//
// Usage:
//
//	bgwdemo [-http 127.0.0.1:9464] [-duration 0] [-crash 2s] [-dynamic 1] [-smart-wait 5s] [-v]
//	        [-member NAME -bind HOST:PORT -peers HOST:PORT,...]
//
// With -peers the demo is one member of a cluster (see cluster.go) and
// runs the cluster-scoped worker cluster_singleton on one member at a time.
//
// Signals: SIGINT (Ctrl-C) shuts down fast (SIGTERM to every worker, kill
// after its grace period); SIGTERM shuts down smart (wait for the workers
// to finish by themselves), turning fast after -smart-wait or on a second
// signal; a signal during a fast shutdown makes it immediate. SIGUSR1
// starts one more dynamic "ticker" worker. SIGUSR2 upgrades the demo in
// place to the binary on disk now (build a new one over it first): the
// process and every worker keep their pids, and the new image carries on
// (its -duration counts afresh).
//
// With -crash the crasher panics in every run; after more than 10
// restarts within a minute (the default restart intensity) it is failed,
// and /readyz answers 503 from then on.
//
// On a terminal, the demo redraws one status screen in place (see
// tui.go), writes its logs to a file whose path it prints, and shows them
// on the screen too with -v; it ends with the final table. Otherwise (a
// pipe, a file, CI) the status table goes to stdout whenever a worker
// changes, logs to stderr, and the first line on stdout is
// "http: http://ADDR" (or "http: off"). The status page is at / on the
// HTTP endpoint.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/sample/crasher"
	"github.com/bgworker/bgworker/sample/shmq"
	"github.com/bgworker/bgworker/sample/spi"
)

// version names this build in GET /version and bgworker_build_info; set it
// with -ldflags "-X main.version=v2". Empty = the binary's own (its VCS
// revision where the build recorded one).
var version string

func main() {
	runtime.Main() // in a worker's child process this runs the worker and never returns
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	http      string
	duration  time.Duration
	crash     time.Duration
	shmCrash  time.Duration
	dynamic   int
	smartWait time.Duration
	verbose   bool
	cluster   *clusterFlags // cluster.go
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bgwdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.http, "http", "127.0.0.1:9464", `address of the HTTP endpoint (loopback; port 0 picks one; "" = none)`)
	fs.DurationVar(&o.duration, "duration", 0, "run this long, then shut down fast (0 = until a signal)")
	fs.DurationVar(&o.crash, "crash", 2*time.Second, "the crasher panics this long after each start (0 = never)")
	fs.DurationVar(&o.shmCrash, "shm-crash", 3*time.Second, "the shared-memory producer panics this long after its first start, causing one all-for-one reset (0 = never)")
	fs.IntVar(&o.dynamic, "dynamic", 1, `dynamic "ticker" workers to start once recovery has finished`)
	fs.DurationVar(&o.smartWait, "smart-wait", 5*time.Second, "how long a smart shutdown (SIGTERM) waits before it turns fast")
	fs.BoolVar(&o.verbose, "v", false, "on a terminal, show the log lines under the live table too (they always go to the log file)")
	o.cluster = addClusterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if err := o.cluster.validate(); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.duration < 0, o.crash < 0, o.smartWait < 0, o.shmCrash < 0:
		return o, errors.New("durations must not be negative")
	case o.dynamic < 0 || o.dynamic > 64:
		return o, errors.New("-dynamic must be in [0, 64]")
	}
	return o, nil
}

// workers returns the registered workers with the crasher's Arg set from
// -crash. Registered specs are fixed at init; the runtime takes its static
// workers from Config.Workers, so the host adjusts a copy here.
// actors.Registered closes the registry, which is fine: every init() has
// run by the time main does.
func workers(crash, shmCrash time.Duration) []actors.Spec {
	specs := actors.Registered()
	for i := range specs {
		if specs[i].Name == shmq.Producer && shmCrash > 0 {
			specs[i].Arg = shmq.CrashArg(shmCrash)
		}
		if specs[i].Name == crasher.Name {
			specs[i].Arg = nil
			if crash > 0 {
				specs[i].Arg = crasher.CrashArg(crash)
			}
		}
	}
	return specs
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bgwdemo:", err)
		return 2
	}
	b := newBoard(stdout, isTerminal(stdout))
	v, err := newView(stdout, b, o.verbose)
	if err != nil {
		fmt.Fprintln(stderr, "bgwdemo:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(v.logs(stderr), &slog.HandlerOptions{Level: slog.LevelInfo}))

	rt, err := runtime.New(runtime.Config{Workers: workers(o.crash, o.shmCrash), HTTPAddr: o.http, Logger: log, Version: version})
	if err != nil {
		log.Error("bgwdemo: new runtime", "err", err)
		v.finish(nil)
		return 1
	}
	cl, err := newCluster(o.cluster, rt, log)
	if err != nil {
		log.Error("bgwdemo: cluster", "err", err)
		_ = rt.Shutdown(context.Background(), phases.Fast)
		v.finish(nil)
		return 1
	}
	// The store must be exposed before the connected worker can start.
	store := rt.System().Root.Spawn(spi.NewStoreProps())
	if err := rt.Expose(spi.StoreName, store); err != nil {
		log.Error("bgwdemo: expose the store", "err", err)
		_ = rt.Shutdown(context.Background(), phases.Fast)
		v.finish(nil)
		return 1
	}

	b.footer = func() string {
		p, c, ok := shmq.Counters(rt.Segment())
		if !ok {
			return "segment released"
		}
		return fmt.Sprintf("queue: %d produced, %d consumed", p, c)
	}
	unsubscribe := rt.Subscribe(b.event)
	printerCtx, stopPrinter := context.WithCancel(context.Background())
	printerDone := make(chan struct{})
	go func() { defer close(printerDone); v.loop(printerCtx) }()

	// The first stop request decides the shutdown mode and cancels runCtx.
	intCtx, stopInt := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stopInt()
	termCtx, stopTerm := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stopTerm()
	var timeout <-chan time.Time
	if o.duration > 0 {
		timer := time.NewTimer(o.duration)
		defer timer.Stop()
		timeout = timer.C
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	// SIGUSR2 (upgrade in place) is taken from the start, so that one sent
	// while the demo still starts waits for it instead of killing it (the
	// signal's default action).
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	mode := make(chan phases.ShutdownMode, 1)
	go func() {
		defer cancelRun()
		select {
		case <-intCtx.Done():
			log.Info("bgwdemo: SIGINT: fast shutdown")
			mode <- phases.Fast
		case <-termCtx.Done():
			log.Info("bgwdemo: SIGTERM: smart shutdown")
			mode <- phases.Smart
		case <-timeout:
			log.Info("bgwdemo: -duration elapsed: fast shutdown", "duration", o.duration)
			mode <- phases.Fast
		case <-rt.Done():
			log.Error("bgwdemo: the runtime stopped by itself", "err", rt.Err())
			mode <- phases.Fast
		}
	}()

	var wg sync.WaitGroup // goroutines that wait for dynamic workers
	code := 0
	if err := rt.Start(runCtx); err != nil {
		log.Error("bgwdemo: start", "err", err)
		code = 1
		cancelRun()
	} else {
		v.announce(rt.Addr())
		if ws, err := rt.WorkersContext(runCtx); err == nil {
			b.seed(ws)
		}
		if err := recovery(runCtx, rt, log); err != nil {
			if runCtx.Err() == nil {
				log.Error("bgwdemo: recovery", "err", err)
				code = 1
				cancelRun()
			}
		} else if err := startCluster(runCtx, cl, log); err != nil {
			log.Error("bgwdemo: cluster", "err", err)
			code = 1
			cancelRun()
		} else {
			d := &dynamic{rt: rt, log: log, ctx: runCtx, wg: &wg}
			if rt.Upgraded() {
				// This image took over from an earlier one (SIGUSR2): its
				// workers, dynamic ones included, run on.
				d.n = d.running()
				log.Info("bgwdemo: upgraded in place; every worker ran on", "version", rt.Version(), "tickers", d.n)
			} else {
				for range o.dynamic {
					d.start()
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-usr2:
						// Upgrade in place to the binary on disk now; it
						// returns only if the upgrade did not happen.
						log.Info("bgwdemo: SIGUSR2: upgrading in place")
						uctx, cancel := context.WithTimeout(runCtx, time.Minute)
						err := rt.Upgrade(uctx, "")
						cancel()
						log.Error("bgwdemo: upgrade did not happen", "err", err)
					case <-runCtx.Done():
						return
					}
				}
			}()
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-usr1:
						d.start()
					case <-runCtx.Done():
						return
					}
				}
			}()
		}
	}
	<-runCtx.Done()
	m := phases.Fast
	select {
	case m = <-mode:
	default: // a start or recovery error
	}
	stopCluster(cl, log)
	if err := shutdown(rt, m, o.smartWait, log); err != nil {
		log.Error("bgwdemo: shutdown", "err", err)
		code = 1
	}
	if err := rt.Err(); err != nil {
		code = 1
	}
	wg.Wait()
	unsubscribe()
	stopPrinter()
	<-printerDone
	v.finish(rt.Workers())
	return code
}

// recovery simulates a host that recovers its state before it takes work:
// consistent after a moment (read-only work may start), finished after
// another (everything starts), as PostgreSQL advances from startup through
// hot-standby consistency to the end of recovery.
func recovery(ctx context.Context, rt *runtime.Runtime, log *slog.Logger) error {
	for _, p := range []phases.Phase{phases.ConsistentState, phases.RecoveryFinished} {
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
		if err := rt.Advance(ctx, p); err != nil {
			return fmt.Errorf("advance to %v: %w", p, err)
		}
		log.Info("bgwdemo: recovery advanced", "phase", p.String())
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dynamic starts "ticker" workers, as a service starts workers on request
// (PostgreSQL's RegisterDynamicBackgroundWorker).
type dynamic struct {
	rt  *runtime.Runtime
	log *slog.Logger
	ctx context.Context
	wg  *sync.WaitGroup
	mu  sync.Mutex
	n   int
}

// running counts the dynamic tickers the runtime has, after an upgrade.
func (d *dynamic) running() int {
	n := 0
	for _, w := range d.rt.Workers() {
		if w.Dynamic && w.Type == crasher.TickerType {
			n++
		}
	}
	return n
}

func (d *dynamic) start() {
	d.mu.Lock()
	d.n++
	name := fmt.Sprintf("%s-%d", crasher.TickerType, d.n)
	d.mu.Unlock()
	h, err := d.rt.StartWorker(d.ctx, actors.Spec{Name: name, Type: crasher.TickerType, Restart: actors.Fixed(time.Second)})
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Error("bgwdemo: start a dynamic worker", "worker", name, "err", err)
		}
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		pid, err := h.WaitStarted(d.ctx)
		if err != nil {
			if d.ctx.Err() == nil {
				d.log.Warn("bgwdemo: dynamic worker did not start", "worker", name, "err", err)
			}
			return
		}
		d.log.Info("bgwdemo: dynamic worker ready", "worker", name, "pid", pid)
	}()
}

// shutdown stops the runtime in the given mode. A smart shutdown turns
// fast after smartWait or on another SIGINT or SIGTERM; a signal during a
// fast shutdown makes it immediate. It returns when every child is reaped.
func shutdown(rt *runtime.Runtime, mode phases.ShutdownMode, smartWait time.Duration, log *slog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// Past this the runtime kills what is left (see Runtime.Shutdown).
	ctx, cancel := context.WithTimeout(context.Background(), smartWait+30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	begin := func(m phases.ShutdownMode) <-chan error {
		done := make(chan error, 1)
		wg.Add(1)
		go func() { defer wg.Done(); done <- rt.Shutdown(ctx, m) }()
		return done
	}
	done := begin(mode)
	var smart <-chan time.Time
	if mode == phases.Smart {
		t := time.NewTimer(smartWait)
		defer t.Stop()
		smart = t.C
	}
	harden := func(why string) {
		next := phases.Immediate
		if mode == phases.Smart {
			next = phases.Fast
		}
		if next <= mode {
			return
		}
		log.Info("bgwdemo: shutdown hardened", "from", mode.String(), "to", next.String(), "why", why)
		mode = next
		begin(next) // the first call's done channel reports the end
	}
	for {
		select {
		case err := <-done:
			return err
		case <-smart:
			smart = nil
			harden("smart-wait elapsed")
		case s := <-sigs:
			harden(s.String())
		}
	}
}
