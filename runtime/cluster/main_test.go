package cluster_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/cluster"
)

// Environment of the re-executed roles. CLTEST_RUN tags every process of
// one test run, members and their children alike.
const (
	envRun   = "CLTEST_RUN"
	envRole  = "CLTEST_ROLE"
	envName  = "CLTEST_NAME"
	envBind  = "CLTEST_BIND"
	envPeers = "CLTEST_PEERS"
	envDir   = "CLTEST_DIR"
)

// threadName marks a thread of a process that runs a test worker, so that
// /proc shows which processes run one: /proc/PID/task/TID/comm.
func threadName(worker string) string { return "bgwc-" + worker }

// testWorkers are the cluster-scoped workers of the tests.
var testWorkers = []string{"tsingle", "tsecond"}

func init() {
	for _, name := range testWorkers {
		cluster.MustRegister(actors.Spec{Name: name, Restart: actors.Fixed(50 * time.Millisecond), StopTimeout: 100 * time.Millisecond,
			Props: fencedWorker})
	}
}

// fencedWorker is an actor worker that proves it runs alone: it names a
// thread for /proc, takes an exclusive flock on a file of its own name
// (held until the process is gone, so a second live instance cannot take
// it), and checks, under the lock, that its fencing token is above every
// token written there before. A failed check leaves a "violation" file.
// It answers a StringValue request with "member token pid".
func fencedWorker(w actors.Worker) *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case *actor.Started:
			named := make(chan struct{})
			go func() {
				goruntime.LockOSThread() // never unlocked: the thread keeps its name until the process ends
				_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafePointer(threadName(w.Name()))), 0, 0, 0)
				close(named)
				select {}
			}()
			<-named
			fence(w)
		case *wrapperspb.StringValue:
			tok, _ := cluster.Token(w)
			ctx.Respond(wrapperspb.String(fmt.Sprintf("%s %d %d", cluster.Member(w), tok, os.Getpid())))
		case *actors.Terminate:
			ctx.Stop(ctx.Self())
		}
	})
}

func fence(w actors.Worker) {
	dir := os.Getenv(envDir)
	violate := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		_ = os.WriteFile(fmt.Sprintf("%s/violation-%s-%d", dir, w.Name(), os.Getpid()), []byte(msg), 0o644)
	}
	tok, ok := cluster.Token(w)
	if !ok {
		violate("no token in the arg")
		return
	}
	f, err := os.OpenFile(dir+"/"+w.Name()+".lock", os.O_RDWR|os.O_CREATE, 0o644) // kept open: the lock lives with the process
	if err != nil {
		violate("open: %v", err)
		return
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		violate("token %d on %s: another instance holds the lock: %v", tok, cluster.Member(w), err)
		return
	}
	b, _ := os.ReadFile(dir + "/" + w.Name() + ".token")
	if last, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); tok <= last && len(b) > 0 {
		// A restart under the same placement keeps its token.
		if tok < last {
			violate("token %d on %s after token %d", tok, cluster.Member(w), last)
			return
		}
	}
	_ = os.WriteFile(dir+"/"+w.Name()+".token", []byte(strconv.FormatUint(tok, 10)), 0o644)
	_ = os.WriteFile(fmt.Sprintf("%s/%s.%d.token-%d", dir, w.Name(), tok, os.Getpid()), nil, 0o644)
}

func TestMain(m *testing.M) {
	runtime.Main() // a worker child: runs its worker and exits
	if os.Getenv(envRole) == "member" {
		os.Exit(memberRole())
	}
	if os.Getenv(envRun) == "" {
		b := make([]byte, 8)
		rand.Read(b)
		os.Setenv(envRun, hex.EncodeToString(b))
	}
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	os.Exit(m.Run())
}

// memberRole runs one cluster member: a runtime with the test workers and
// a Cluster on static peers. It prints what happens, one line each, to
// stdout ("event ..."), and takes commands on stdin: "req WORKER" (a
// request by name) and "quit" (leave and shut down, as on EOF).
func memberRole() int {
	name, bind, peers := os.Getenv(envName), os.Getenv(envBind), strings.Split(os.Getenv(envPeers), ",")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	out := make(chan string, 1024)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for l := range out {
			fmt.Println(l)
		}
	}()
	say := func(format string, args ...any) { out <- fmt.Sprintf(format, args...) }
	fail := func(what string, err error) int {
		say("error %s: %v", what, err)
		close(out)
		<-printed
		return 1
	}
	rt, err := runtime.New(runtime.Config{Workers: []actors.Spec{}, HTTPAddr: "127.0.0.1:0", Logger: log,
		HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		return fail("runtime", err)
	}
	// A lease well above any scheduling stall of a loaded CI machine: a
	// member taken as down by mistake would move workers the test expects
	// in place (safely, but the test would fail).
	cl, err := cluster.New(rt, cluster.Config{Name: name, Bind: bind, Peers: peers, Interval: 100 * time.Millisecond,
		Timeout: 300 * time.Millisecond, Lease: 1500 * time.Millisecond, Logger: log})
	if err != nil {
		return fail("cluster", err)
	}
	cl.Subscribe(func(e cluster.Event) {
		switch e := e.(type) {
		case cluster.WorkerReady:
			say("event ready %s %d %d %d", e.Worker, e.Token, e.PID, e.At.UnixNano())
		case cluster.PlacementEvent:
			say("event placed %s %d %t %d", e.Worker, e.Token, e.Here, e.At.UnixNano())
		case cluster.MemberEvent:
			say("event member %s %t %d", e.Address, e.Up, e.At.UnixNano())
		}
	})
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		return fail("start", err)
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		return fail("advance", err)
	}
	if err := cl.Start(ctx); err != nil {
		_ = rt.Shutdown(ctx, phases.Fast)
		return fail("join", err)
	}
	say("http %s", rt.Addr())
	say("started")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			break
		}
		if (f[0] == "pidreq" || f[0] == "syspidreq") && len(f) == 2 {
			// By PID from an actor system: the runtime's (whose futures have no
			// remote address: the member relays) or the member's own.
			sys := rt.System()
			if f[0] == "syspidreq" {
				sys = cl.System()
			}
			r, err := sys.Root.RequestFuture(cl.PID(f[1]), wrapperspb.String("who"), 10*time.Second).Result()
			if s, ok := r.(*wrapperspb.StringValue); ok && err == nil {
				say("reply %s", s.GetValue())
			} else {
				say("reqerr %v %T", err, r)
			}
			continue
		}
		if f[0] == "req" && len(f) == 2 {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := cl.Request(rctx, f[1], wrapperspb.String("who"))
			cancel()
			if s, ok := r.(*wrapperspb.StringValue); ok && err == nil {
				say("reply %s", s.GetValue())
			} else {
				say("reqerr %v %T", err, r)
			}
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	code := 0
	if err := cl.Shutdown(sctx); err != nil {
		say("error leave: %v", err)
		code = 1
	}
	if err := rt.Shutdown(sctx, phases.Fast); err != nil {
		say("error shutdown: %v", err)
		code = 1
	}
	say("bye")
	close(out)
	<-printed
	return code
}

// errTimeout is returned by waits that gave up.
var errTimeout = errors.New("timed out")

var _ = io.Discard
var _ = syscall.SIGKILL
