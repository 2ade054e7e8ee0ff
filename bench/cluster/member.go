package clusterbench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/cluster"
)

// Names of the benchmark's workers, grain kind and actors.
const (
	// Worker is the cluster-scoped worker; the grain of GrainKind has the
	// same identity, so that rendezvous hashing puts both on one member.
	Worker    = "bench_single"
	GrainKind = "bench_grain"
	echoName  = "bench-remote-echo"
	warmType  = "bench-cluster-warm"
)

// Environment of a member child.
const (
	envRole  = "BGWCLUSTERBENCH_ROLE"
	envName  = "BGWCLUSTERBENCH_NAME"
	envBind  = "BGWCLUSTERBENCH_BIND"
	envPeers = "BGWCLUSTERBENCH_PEERS"
	envRun   = "BGWCLUSTERBENCH_RUN"
)

// Provider settings of every member, the baseline's grains included.
const (
	Interval = 50 * time.Millisecond
	Lease    = 500 * time.Millisecond
)

func init() {
	cluster.MustRegister(actors.Spec{Name: Worker, Restart: actors.Fixed(0), StopTimeout: 100 * time.Millisecond,
		Props: func(w actors.Worker) *actor.Props {
			return actor.PropsFromFunc(func(ctx actor.Context) {
				switch m := ctx.Message().(type) {
				case *wrapperspb.BytesValue:
					ctx.Respond(m)
				case *actors.Terminate:
					ctx.Stop(ctx.Self())
				}
			})
		}})
	actors.MustDefine(actors.Spec{Name: warmType, Run: func(ctx context.Context, w actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
}

// ChildMain runs a member when this binary was re-executed as one, and
// exits. It returns at once otherwise. Call it first in main, after
// runtime.Main.
func ChildMain() {
	if os.Getenv(envRole) != "member" {
		return
	}
	os.Exit(memberMain())
}

// memberMain runs one member: a runtime, a Cluster on static peers with the
// benchmark's worker, a grain kind and a plain echo actor for the
// baselines. It prints events on stdout ("ready", "down", "grain") and
// runs commands from stdin until EOF or "quit".
func memberMain() int {
	name := os.Getenv(envName)
	level := slog.LevelWarn
	if os.Getenv("BGWCLUSTERBENCH_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	out := bufio.NewWriter(os.Stdout)
	lines := make(chan string, 4096)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for l := range lines {
			out.WriteString(l + "\n")
			if len(lines) == 0 {
				out.Flush()
			}
		}
		out.Flush()
	}()
	say := func(format string, args ...any) { lines <- fmt.Sprintf(format, args...) }
	end := func(code int) int { close(lines); <-printed; return code }
	rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, Logger: log, WarmPool: 2})
	if err != nil {
		say("error runtime: %v", err)
		return end(1)
	}
	grain := pcluster.NewKind(GrainKind, actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*wrapperspb.BytesValue); ok {
			ctx.Respond(wrapperspb.String(name))
		}
	}))
	cl, err := cluster.New(rt, cluster.Config{Name: name, Bind: os.Getenv(envBind), Peers: strings.Split(os.Getenv(envPeers), ","),
		Interval: Interval, Lease: Lease, Kinds: []*pcluster.Kind{grain}, Logger: log})
	if err != nil {
		say("error cluster: %v", err)
		return end(1)
	}
	downs := &downWatch{ch: map[string]chan struct{}{}}
	cl.Subscribe(func(e cluster.Event) {
		switch e := e.(type) {
		case cluster.WorkerReady:
			say("ready %s %d %d", e.Worker, e.Token, e.At.UnixNano())
		case cluster.PlacementEvent:
			if e.Here {
				say("placed %s %d %d", e.Worker, e.Token, e.At.UnixNano())
			}
		case cluster.MemberEvent:
			if !e.Up {
				say("down %s %d", e.Address, e.At.UnixNano())
				downs.down(e.Address)
			} else {
				say("up %s %d", e.Address, e.At.UnixNano())
			}
		}
	})
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		say("error start: %v", err)
		return end(1)
	}
	_ = rt.Advance(ctx, phases.RecoveryFinished)
	if err := cl.Start(ctx); err != nil {
		say("error join: %v", err)
		_ = rt.Shutdown(ctx, phases.Fast)
		return end(1)
	}
	echo := actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*wrapperspb.BytesValue); ok {
			ctx.Respond(m)
		}
	})
	if _, err := cl.System().Root.SpawnNamed(echo, echoName); err != nil {
		say("error echo: %v", err)
	}
	say("started")
	commands(cl, rt, downs, say)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_ = cl.Shutdown(sctx)
	_ = rt.Shutdown(sctx, phases.Fast)
	return end(0)
}

// commands runs the commands read from stdin:
//
//	req N           N requests by name to Worker, one at a time; prints "lat" with the µs of each
//	raw ADDR N      N raw remote requests to the echo actor of the member at ADDR; prints "lat"
//	local N         N requests to Worker through the runtime's PID, on the member that holds it; prints "lat"
//	grain VICTIM    requests the grain until a member other than VICTIM answers; prints "grain NAME UNIXNANO"
//	grainafter ADDR the same, from when this member sees the member at ADDR down; prints "grainafter NAME UNIXNANO"
//	grain1          one request to the grain; prints "grain1 NAME"
//	warm N          N warm starts of a dynamic worker; prints "lat"
//	warmworker N    N warm starts of a dynamic worker with Worker's code (an actor); prints "lat"
func commands(cl *cluster.Cluster, rt *runtime.Runtime, downs *downWatch, say func(string, ...any)) {
	names := map[string]string{}
	for _, m := range cl.Members() {
		names[m.Address] = m.Name
	}
	msg := wrapperspb.Bytes(make([]byte, 64))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		n := 0
		if len(f) > 1 {
			n, _ = strconv.Atoi(f[len(f)-1])
		}
		switch f[0] {
		case "quit":
			return
		case "req":
			say("lat %s", timeEach(n, func() error {
				_, err := cl.Request(context.Background(), Worker, msg)
				return err
			}))
		case "local":
			pid := rt.PID(Worker)
			say("lat %s", timeEach(n, func() error {
				_, err := rt.System().Root.RequestFuture(pid, msg, 5*time.Second).Result()
				return err
			}))
		case "raw":
			pid := actor.NewPID(f[1], echoName)
			say("lat %s", timeEach(n, func() error {
				_, err := cl.System().Root.RequestFuture(pid, msg, 5*time.Second).Result()
				return err
			}))
		case "grain":
			go watchGrain(cl, f[1], "grain", say)
		case "grainafter":
			go func(victim string) {
				<-downs.wait(victim)
				watchGrain(cl, names[victim], "grainafter", say)
			}(f[1])
		case "grain1":
			r, err := cl.Protoactor().Request(Worker, GrainKind, msg, pcluster.WithTimeout(time.Second))
			if sv, ok := r.(*wrapperspb.StringValue); ok && err == nil {
				say("grain1 %s", sv.GetValue())
			} else {
				say("grain1 error %v", err)
			}
		case "warm":
			say("lat %s", warmStarts(rt, n, warmType))
		case "warmworker":
			say("lat %s", warmStarts(rt, n, Worker))
		}
	}
}

// timeEach runs fn n times and returns the µs of each run, or "error ...".
func timeEach(n int, fn func() error) string {
	ds := make([]string, 0, n)
	for range n {
		t0 := time.Now()
		if err := fn(); err != nil {
			return "error " + strings.ReplaceAll(err.Error(), " ", "_")
		}
		ds = append(ds, strconv.FormatFloat(float64(time.Since(t0).Nanoseconds())/1e3, 'f', 1, 64))
	}
	return strings.Join(ds, " ")
}

// warmStarts times n warm starts (StartWorker → WaitStarted of a worker
// whose code is typ; the member's pool of two idle children), each
// followed by an untimed stop, and returns the µs of each.
func warmStarts(rt *runtime.Runtime, n int, typ string) string {
	ctx := context.Background()
	ds := make([]string, 0, n)
	for i := range n {
		t0 := time.Now()
		h, err := rt.StartWorker(ctx, actors.Spec{Name: "warm-" + strconv.Itoa(i), Type: typ, StartAt: phases.PostmasterStart})
		if err == nil {
			_, err = h.WaitStarted(ctx)
		}
		d := time.Since(t0)
		if err != nil {
			return "error " + strings.ReplaceAll(err.Error(), " ", "_")
		}
		ds = append(ds, strconv.FormatFloat(float64(d.Nanoseconds())/1e3, 'f', 1, 64))
		if err := h.Terminate(ctx); err == nil {
			_, _ = h.WaitStopped(ctx)
		}
		time.Sleep(20 * time.Millisecond) // the pool refills
	}
	return strings.Join(ds, " ")
}

// watchGrain requests the grain Worker of GrainKind through protoactor's
// cluster context, with a short timeout per try, until a member other
// than victim answers, and prints when.
func watchGrain(cl *cluster.Cluster, victim, tag string, say func(string, ...any)) {
	msg := wrapperspb.Bytes(make([]byte, 64))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := cl.Protoactor().Request(Worker, GrainKind, msg, pcluster.WithTimeout(20*time.Millisecond), pcluster.WithRetryCount(1))
		if s, ok := r.(*wrapperspb.StringValue); ok && err == nil && s.GetValue() != victim {
			say("%s %s %d", tag, s.GetValue(), time.Now().UnixNano())
			return
		}
		if err != nil {
			cl.Protoactor().PidCache.Remove(Worker, GrainKind)
		}
	}
	say("%s none %d", tag, time.Now().UnixNano())
}

// downWatch lets a command wait for a member to go down in this view.
type downWatch struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func (d *downWatch) get(addr string) chan struct{} {
	if d.ch[addr] == nil {
		d.ch[addr] = make(chan struct{})
	}
	return d.ch[addr]
}

func (d *downWatch) wait(addr string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.get(addr)
}

func (d *downWatch) down(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.get(addr))
	d.ch[addr] = nil // the next wait is for the next time
}
