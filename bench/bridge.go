package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/bridge"
)

// Worker code and child roles of the bridge suite. The worker codes run in
// children the runtime starts; the roles are the naive baselines, started
// by the suite itself. Both are this same binary re-executed.
const (
	bridgeEchoCode = "bench-echo"     // answers []byte requests with the message; counts []byte tells
	bridgeSinkCode = "bench-sink"     // counts []byte tells only
	bridgeActCode  = "bench-activity" // answers "activity N" with the ns one SetActivity costs, over N calls

	bridgeColdRole  = "bridge-cold"  // actor system, one actor, one byte on fd 3 when it has started
	bridgeEchoRole  = "bridge-echo"  // echoes 64-byte reads on fd 3 through the netpoller
	bridgeDrainRole = "bridge-drain" // reads fd 3 to EOF, then writes back the byte count

	// BridgeChildProfileEnv, when set to a path in the bench command's
	// environment, makes every bench-sink worker write its own CPU profile
	// there (the child inherits the host's environment), for looking at
	// the receiving side of the Tell measurement.
	BridgeChildProfileEnv = "BGWBENCH_CHILD_CPUPROFILE"
)

// bridgeMsgSize is the payload of every measured message.
const bridgeMsgSize = 64

// Targets of the go-plugin rows, on the ratio ours ÷ go-plugin's.
const (
	peerRequestRatio   = 0.33 // request round trip: at least 3× faster
	peerColdStartRatio = 0.67 // start → first message, no pool: at least 1.5× faster
	peerWarmStartRatio = 0.1  // start → first message from the warm pool: at least 10× faster
)

// bridgePeerKinds are go-plugin's transports, as bgwpeers names them, and
// as the table names them.
var bridgePeerKinds = []struct{ kind, label string }{{"netrpc", "net/rpc"}, {"grpc", "gRPC"}}

func bridgeIDs() []string {
	ids := []string{
		"bridge.cold.p50",
		"bridge.request.p50",
		"bridge.request.p99",
		"bridge.request.inproc.p50",
		"bridge.tell",
		"bridge.tell.raw",
		"bridge.activity",
	}
	for _, k := range bridgePeerKinds {
		p := "peer.goplugin." + k.kind
		ids = append(ids, p+".start.cold.p50", p+".start.warm.p50", p+".request.p50", p+".kill.p50")
	}
	return ids
}

func init() {
	actors.MustDefine(actors.Spec{Name: bridgeEchoCode, Props: func(actors.Worker) *actor.Props {
		return bridgeCounter(true)
	}})
	actors.MustDefine(actors.Spec{Name: bridgeSinkCode, Props: func(actors.Worker) *actor.Props {
		return bridgeCounter(false)
	}})
	actors.MustDefine(actors.Spec{Name: bridgeActCode, Props: func(w actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*actors.Terminate); ok {
				ctx.Stop(ctx.Self())
				return
			}
			if m, ok := ctx.Message().(string); ok && strings.HasPrefix(m, "activity ") {
				n, _ := strconv.Atoi(m[len("activity "):])
				texts := [...]string{"copying batch 1", "copying batch 2"}
				t0 := time.Now()
				for i := range n {
					w.SetActivity(texts[i&1])
				}
				ctx.Respond(strconv.FormatInt(int64(time.Since(t0))/int64(max(n, 1)), 10))
			}
		})
	}})
	RegisterRole(bridgeColdRole, bridgeColdChild)
	RegisterRole(bridgeEchoRole, bridgeEchoChild)
	RegisterRole(bridgeDrainRole, bridgeDrainChild)
	RegisterSuite(Suite{Name: "bridge", IDs: bridgeIDs(), Run: runBridge})
}

// bridgeCounter is the worker actor of bench-echo (echo) and bench-sink: it
// counts []byte tells, answers the request "count" with the count as a
// decimal string, and stops on Terminate. With echo it answers a []byte
// request with the same bytes.
func bridgeCounter(echo bool) *actor.Props {
	var count uint64
	var prof *os.File
	if path := os.Getenv(BridgeChildProfileEnv); path != "" && !echo {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			prof = f
		}
	}
	return actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case []byte:
			if c.Sender() == nil {
				count++
			} else if echo {
				c.Respond(m)
			}
		case string:
			if m == "count" {
				c.Respond(strconv.FormatUint(count, 10))
			}
		case *actors.Terminate:
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
				prof = nil
			}
			c.Stop(c.Self())
		}
	})
}

// ---- baseline roles (children of the suite, not of the runtime) ----

func bridgeFD3() (net.Conn, error) {
	f := os.NewFile(3, "bench")
	defer f.Close()
	return net.FileConn(f)
}

// bridgeColdChild is the naive cold child: what a worker process must do at
// least (exec this binary, build an actor system, start one actor), minus
// every protocol step of the runtime.
func bridgeColdChild() int {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	f := os.NewFile(3, "bench")
	done := make(chan error, 1)
	sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(*actor.Started); ok {
			_, err := f.Write([]byte{1})
			done <- err
		}
	}))
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", bridgeColdRole, err)
		return 1
	}
	return 0
}

// bridgeEchoChild answers each 64-byte message with itself until EOF.
func bridgeEchoChild() int {
	c, err := bridgeFD3()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", bridgeEchoRole, err)
		return 1
	}
	buf := make([]byte, bridgeMsgSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0 // EOF: the parent is done
		}
		if _, err := c.Write(buf); err != nil {
			return 1
		}
	}
}

// bridgeDrainChild reads and discards until EOF, then reports the byte
// count as 8 little-endian bytes.
func bridgeDrainChild() int {
	c, err := bridgeFD3()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", bridgeDrainRole, err)
		return 1
	}
	buf := make([]byte, 64<<10)
	var n uint64
	for {
		k, err := c.Read(buf)
		n += uint64(k)
		if err != nil {
			break
		}
	}
	var out [8]byte
	binary.LittleEndian.PutUint64(out[:], n)
	if _, err := c.Write(out[:]); err != nil {
		return 1
	}
	return 0
}

// bridgeRawChild is a baseline child with a socketpair end on its fd 3.
type bridgeRawChild struct {
	role string
	cmd  *exec.Cmd
	conn *net.UnixConn
}

// bridgeStartRaw re-executes this binary in role with a socketpair on fd 3.
func bridgeStartRaw(role string) (*bridgeRawChild, error) {
	parentEnd, childEnd, err := bridge.Pair()
	if err != nil {
		return nil, err
	}
	defer parentEnd.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), RoleEnv+"="+role)
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		return nil, fmt.Errorf("bench: start %s child: %w", role, err)
	}
	nc, err := net.FileConn(parentEnd)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("bench: %s child socket: %w", role, err)
	}
	return &bridgeRawChild{role: role, cmd: cmd, conn: nc.(*net.UnixConn)}, nil
}

// close closes the socket (the child's cue to exit) and reaps the child,
// killing it if it has not exited within 5 s.
func (c *bridgeRawChild) close() error {
	c.conn.Close()
	t := time.AfterFunc(5*time.Second, func() { c.cmd.Process.Kill() })
	defer t.Stop()
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("bench: %s child: %w", c.role, err)
	}
	return nil
}

// ---- the suite ----

// bridgeSuite holds the suite's runtimes and baselines.
type bridgeSuite struct {
	rt   *bgw.Runtime       // WarmPool -1: every start is cold
	warm *bgw.Runtime       // the default warm pool (2), for warm start → first message
	root *actor.RootContext // rt's
	// inproc is an actor in rt's actor system running the worker actor's
	// code: the in-process baseline of Tell and RequestFuture.
	inproc *actor.PID
	// peers drives go-plugin; nil without -peers.
	peers *peerDriver
	// tellRate is the Tell rate measured by tellThroughput, msg/s.
	tellRate float64
	// msg is the 64-byte []byte message, boxed in an interface once, so
	// that the caller's own conversion (an allocation per send) is not
	// counted against the runtime.
	msg any
	// resets counts clean worker exits (goodbye, exit 0) that the runtime
	// nevertheless classified as protocol_error crashes because its bridge
	// read ended in ECONNRESET rather than EOF: the child exited with a
	// frame from the host still unread (the terminate notice or a
	// heartbeat). That is a runtime defect; the suite tolerates and reports it.
	resets atomic.Int64
}

// bridgeResetFilter drops the runtime's warning for the ECONNRESET case
// above (counting it instead), so that 30 cold starts do not print 30 of them.
type bridgeResetFilter struct {
	slog.Handler
	n *atomic.Int64
}

func (f bridgeResetFilter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "runtime: killing child" {
		reset := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" && strings.Contains(a.Value.String(), "connection reset by peer") {
				reset = true
			}
			return true
		})
		if reset {
			f.n.Add(1)
			return nil
		}
	}
	return f.Handler.Handle(ctx, r)
}

func (f bridgeResetFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return bridgeResetFilter{f.Handler.WithAttrs(as), f.n}
}

func (f bridgeResetFilter) WithGroup(g string) slog.Handler {
	return bridgeResetFilter{f.Handler.WithGroup(g), f.n}
}

func runBridge(ctx context.Context) (rs []Result, err error) {
	scale := ScaleOf(ctx)
	n := func(base int) int { return max(1, int(float64(base)*scale)) }
	payload := make([]byte, bridgeMsgSize)
	for i := range payload {
		payload[i] = byte(i)
	}
	s := &bridgeSuite{msg: payload}
	logger := slog.New(bridgeResetFilter{
		Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}),
		n:       &s.resets,
	})
	var rts []*bgw.Runtime
	defer func() {
		for _, rt := range rts {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if serr := rt.Shutdown(sctx, phases.Fast); serr != nil && err == nil {
				err = serr
			}
			cancel()
		}
		if n := s.resets.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "bench: bridge: %d clean worker exits were reported as protocol_error crashes "+
				"(bridge read got ECONNRESET after the goodbye: a runtime defect)\n", n)
		}
	}()
	// Cold starts: the cold-start ratio is exec → ready, so no idle
	// children on rt. The warm runtime has the default pool.
	for _, pool := range []int{-1, 0} {
		rt, err := bgw.New(bgw.Config{Workers: []actors.Spec{}, WarmPool: pool, Logger: logger})
		if err != nil {
			return nil, err
		}
		rts = append(rts, rt)
		if err := rt.Start(ctx); err != nil {
			return nil, err
		}
	}
	s.rt, s.warm, s.root = rts[0], rts[1], rts[0].System().Root
	s.inproc = s.root.Spawn(bridgeCounter(true))
	defer func() { s.root.StopFuture(s.inproc).Wait() }()
	if path := PeersOf(ctx); path != "" {
		if s.peers, err = startPeerDriver(path); err != nil {
			return nil, err
		}
		defer func() {
			if cerr := s.peers.close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
	} else {
		fmt.Fprintln(os.Stderr, "bench: bridge: no -peers binary: the go-plugin rows are left out")
	}
	steps := []struct {
		label string
		run   func(context.Context, int) ([]Result, error)
		n     int
	}{
		{"cold", s.coldStart, n(30)},
		{"first", s.firstMessage, n(30)},
		{"request", s.roundTrip, n(20000)},
		{"tell", s.tellThroughput, n(2_000_000)},
		{"activity", s.activityCost, n(1_000_000)},
	}
	for _, st := range steps {
		if st.label == "first" && s.peers == nil {
			continue // only the go-plugin rows use it
		}
		var out []Result
		var serr error
		pprof.Do(ctx, pprof.Labels("bridge", st.label), func(ctx context.Context) {
			out, serr = st.run(ctx, st.n)
		})
		rs = append(rs, out...)
		if serr != nil {
			return rs, fmt.Errorf("bench: bridge %s: %w", st.label, serr)
		}
	}
	return rs, nil
}

// startWorker starts a dynamic worker running code and waits until it is
// ready.
func (s *bridgeSuite) startWorker(ctx context.Context, name, code string) (*bgw.Handle, error) {
	return bridgeStart(ctx, s.rt, name, code)
}

func bridgeStart(ctx context.Context, rt *bgw.Runtime, name, code string) (*bgw.Handle, error) {
	h, err := rt.StartWorker(ctx, actors.Spec{Name: name, Type: code, StartAt: phases.PostmasterStart,
		Restart: actors.NeverRestart, StopTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	if _, err := h.WaitStarted(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// coldStart measures StartWorker → WaitStarted against exec → first byte
// of the naive child, alternating the two, after two untimed warm-ups.
func (s *bridgeSuite) coldStart(ctx context.Context, n int) ([]Result, error) {
	const warm = 2
	var rtD, rawD []time.Duration
	for i := range warm + n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		goruntime.GC()
		var d1, d2 time.Duration
		var err error
		if i%2 == 0 {
			if d1, err = s.coldRuntime(ctx); err == nil {
				d2, err = bridgeColdRaw()
			}
		} else {
			if d2, err = bridgeColdRaw(); err == nil {
				d1, err = s.coldRuntime(ctx)
			}
		}
		if err != nil {
			return nil, err
		}
		if i >= warm {
			rtD, rawD = append(rtD, d1), append(rawD, d2)
		}
	}
	p50, b50 := bridgeQuantile(rtD, 0.5), bridgeQuantile(rawD, 0.5)
	return []Result{{
		ID:            "bridge.cold.p50",
		Name:          fmt.Sprintf("cold start StartWorker→WaitStarted p50 (n=%d)", n),
		Value:         bridgeMS(p50),
		Baseline:      "exec→actor Started→byte, naive child",
		BaselineValue: bridgeMS(b50),
		Unit:          "ms",
		Target:        []Cond{RatioAtMost(1.2)},
	}}, nil
}

func (s *bridgeSuite) coldRuntime(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	h, err := s.startWorker(ctx, "bench-cold", bridgeEchoCode)
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	return d, stopWorker(ctx, h)
}

// bridgeColdRaw spawns the naive child and times exec → its byte on fd 3; the
// child exits after the byte and is reaped untimed.
func bridgeColdRaw() (time.Duration, error) { return timeChildByte(bridgeColdRole) }

// firstMessage measures start → the answer to the first request of a
// worker of bench-echo, without a pool (rt) and from the warm pool (warm),
// and then Terminate → WaitStopped, beside go-plugin's NewClient → the
// answer to its first RPC and its Kill, over net/rpc and gRPC; the four
// rotate their order each round, after two warm-up rounds.
func (s *bridgeSuite) firstMessage(ctx context.Context, n int) ([]Result, error) {
	const warmup = 2
	var cold, warm, stops []time.Duration
	peerStart := map[string][]time.Duration{}
	peerKill := map[string][]time.Duration{}
	ours := func(rt *bgw.Runtime, name string, into *[]time.Duration, record bool) error {
		goruntime.GC()
		t0 := time.Now()
		h, err := bridgeStart(ctx, rt, name, bridgeEchoCode)
		if err != nil {
			return err
		}
		v, err := rt.System().Root.RequestFuture(h.PID(), s.msg, 5*time.Second).Result()
		d := time.Since(t0)
		if err == nil {
			if b, ok := v.([]byte); !ok || len(b) != bridgeMsgSize {
				err = fmt.Errorf("first request: response %T %v", v, v)
			}
		}
		if err != nil {
			stopWorker(ctx, h)
			return err
		}
		t1 := time.Now()
		if err := stopWorker(ctx, h); err != nil {
			return err
		}
		if record {
			*into = append(*into, d)
			stops = append(stops, time.Since(t1))
		}
		return nil
	}
	for i := range warmup + n {
		record := i >= warmup
		steps := []func() error{
			func() error { return ours(s.rt, "bench-first-cold", &cold, record) },
			func() error {
				if err := poolWaitIdle(ctx, s.warm, 2); err != nil {
					return err
				}
				return ours(s.warm, "bench-first-warm", &warm, record)
			},
		}
		for _, k := range bridgePeerKinds {
			steps = append(steps, func() error {
				goruntime.GC()
				d, err := s.peers.one("start " + k.kind)
				if err != nil {
					return err
				}
				kd, err := s.peers.one("kill " + k.kind)
				if err != nil {
					return err
				}
				if record {
					peerStart[k.kind] = append(peerStart[k.kind], d)
					peerKill[k.kind] = append(peerKill[k.kind], kd)
				}
				return nil
			})
		}
		for j := range steps {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := steps[(i+j)%len(steps)](); err != nil {
				return nil, err
			}
		}
	}
	c50, w50, k50 := bridgeMS(bridgeQuantile(cold, 0.5)), bridgeMS(bridgeQuantile(warm, 0.5)), bridgeMS(bridgeQuantile(stops, 0.5))
	var rs []Result
	for _, k := range bridgePeerKinds {
		id := "peer.goplugin." + k.kind
		p50 := bridgeMS(bridgeQuantile(peerStart[k.kind], 0.5))
		fmt.Fprintf(os.Stderr, "bench: bridge: go-plugin %s: start → first RPC p50 %.2f ms, Kill p50 %.2f ms; ours: cold %.2f, warm %.3f, Terminate→WaitStopped %.2f ms\n",
			k.label, p50, bridgeMS(bridgeQuantile(peerKill[k.kind], 0.5)), c50, w50, k50)
		rs = append(rs, Result{
			ID:            id + ".start.cold.p50",
			Name:          fmt.Sprintf("start→first answer, no pool p50 (n=%d)", n),
			Value:         c50,
			Baseline:      "go-plugin " + k.label + " NewClient→first RPC p50",
			BaselineValue: p50,
			Unit:          "ms",
			Target:        []Cond{RatioAtMost(peerColdStartRatio)},
		}, Result{
			ID:            id + ".start.warm.p50",
			Name:          fmt.Sprintf("start→first answer, warm pool p50 (n=%d)", n),
			Value:         w50,
			Baseline:      "go-plugin " + k.label + " NewClient→first RPC p50",
			BaselineValue: p50,
			Unit:          "ms",
			Target:        []Cond{RatioAtMost(peerWarmStartRatio)},
		}, Result{
			ID:            id + ".kill.p50",
			Name:          fmt.Sprintf("Terminate→WaitStopped p50 (n=%d)", len(stops)),
			Value:         k50,
			Baseline:      "go-plugin " + k.label + " Kill() p50",
			BaselineValue: bridgeMS(bridgeQuantile(peerKill[k.kind], 0.5)),
			Unit:          "ms",
		})
	}
	return rs, nil
}

// roundTrip measures 64-byte request/response through RequestFuture
// against a raw socketpair ping-pong, both over several children (the
// netpoller round trip is bimodal per child pair), against RequestFuture
// to the in-process actor, and (with -peers) against go-plugin's RPC
// round trip on a fresh plugin per round, all alternating.
func (s *bridgeSuite) roundTrip(ctx context.Context, n int) ([]Result, error) {
	const rounds, warm = 4, 500
	per := max(1, n/rounds)
	var rtD, rawD, inD []time.Duration
	peerD := map[string][]time.Duration{}
	for r := range rounds {
		goruntime.GC()
		h, err := s.startWorker(ctx, fmt.Sprintf("bench-rr-%d", r), bridgeEchoCode)
		if err != nil {
			return nil, err
		}
		d, err := s.requests(h.PID(), warm, per)
		if err != nil {
			stopWorker(ctx, h)
			return nil, err
		}
		rtD = append(rtD, d...)
		if err := stopWorker(ctx, h); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		goruntime.GC()
		if d, err = bridgePingPongRaw(warm, per); err != nil {
			return nil, err
		}
		rawD = append(rawD, d...)
		goruntime.GC()
		if d, err = s.requests(s.inproc, warm, per); err != nil {
			return nil, fmt.Errorf("in-process: %w", err)
		}
		inD = append(inD, d...)
		if s.peers == nil {
			continue
		}
		for _, k := range bridgePeerKinds {
			goruntime.GC()
			if _, err := s.peers.one("start " + k.kind); err != nil {
				return nil, err
			}
			d, err := s.peers.do(fmt.Sprintf("rtt %s %d %d", k.kind, warm, per))
			if _, kerr := s.peers.one("kill " + k.kind); err == nil {
				err = kerr
			}
			if err != nil {
				return nil, err
			}
			peerD[k.kind] = append(peerD[k.kind], d...)
		}
	}
	p50, b50, i50 := bridgeQuantile(rtD, 0.5), bridgeQuantile(rawD, 0.5), bridgeQuantile(inD, 0.5)
	p99, b99 := bridgeQuantile(rtD, 0.99), bridgeQuantile(rawD, 0.99)
	rs := []Result{{
		ID:            "bridge.request.p50",
		Name:          fmt.Sprintf("request/response 64 B p50 (n=%d)", len(rtD)),
		Value:         bridgeUS(p50),
		Baseline:      "raw socketpair ping-pong p50",
		BaselineValue: bridgeUS(b50),
		Unit:          "µs",
		Target:        []Cond{RatioAtMost(1.3)},
	}, {
		ID:            "bridge.request.p99",
		Name:          fmt.Sprintf("request/response 64 B p99 (n=%d)", len(rtD)),
		Value:         bridgeUS(p99),
		Baseline:      "raw socketpair ping-pong p99",
		BaselineValue: bridgeUS(b99),
		Unit:          "µs",
	}, {
		ID:            "bridge.request.inproc.p50",
		Name:          fmt.Sprintf("request/response 64 B p50 (n=%d)", len(rtD)),
		Value:         bridgeUS(p50),
		Baseline:      "in-process protoactor RequestFuture p50",
		BaselineValue: bridgeUS(i50),
		Unit:          "µs",
	}}
	for _, k := range bridgePeerKinds {
		if len(peerD[k.kind]) == 0 {
			continue
		}
		rs = append(rs, Result{
			ID:            "peer.goplugin." + k.kind + ".request.p50",
			Name:          fmt.Sprintf("request/response 64 B p50 (n=%d)", len(rtD)),
			Value:         bridgeUS(p50),
			Baseline:      fmt.Sprintf("go-plugin %s RPC 64 B p50 (n=%d)", k.label, len(peerD[k.kind])),
			BaselineValue: bridgeUS(bridgeQuantile(peerD[k.kind], 0.5)),
			Unit:          "µs",
			Target:        []Cond{RatioAtMost(peerRequestRatio)},
		})
	}
	return rs, nil
}

// requests times warm + n requests of the 64-byte message to pid one by
// one and returns the last n.
func (s *bridgeSuite) requests(pid *actor.PID, warm, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range warm + n {
		t0 := time.Now()
		v, err := s.root.RequestFuture(pid, s.msg, 5*time.Second).Result()
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		if b, ok := v.([]byte); !ok || len(b) != bridgeMsgSize {
			return nil, fmt.Errorf("request %d: response %T %v", i, v, v)
		}
		if i >= warm {
			out = append(out, d)
		}
	}
	return out, nil
}

func bridgePingPongRaw(warm, n int) ([]time.Duration, error) {
	c, err := bridgeStartRaw(bridgeEchoRole)
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	buf := make([]byte, bridgeMsgSize)
	for i := range warm + n {
		t0 := time.Now()
		if _, err = c.conn.Write(buf); err == nil {
			_, err = io.ReadFull(c.conn, buf)
		}
		d := time.Since(t0)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("raw ping-pong %d: %w", i, err)
		}
		if i >= warm {
			out = append(out, d)
		}
	}
	return out, c.close()
}

// tellThroughput sends n 64-byte tells as fast as Send returns, then asks
// the worker how many it got; three rounds, median rate, each beside a raw
// batched stream of as many 64-byte frames and beside as many tells to the
// in-process actor.
func (s *bridgeSuite) tellThroughput(ctx context.Context, n int) ([]Result, error) {
	const rounds, warm = 3, 10000
	var rates, raws, inprocs []float64
	inCount := 0 // tells the in-process actor has counted so far
	for r := range rounds {
		goruntime.GC()
		h, err := s.startWorker(ctx, fmt.Sprintf("bench-sink-%d", r), bridgeSinkCode)
		if err != nil {
			return nil, err
		}
		pid := h.PID()
		rate, err := func() (float64, error) {
			if _, err := s.sendAndCount(pid, warm, warm); err != nil {
				return 0, fmt.Errorf("warm-up: %w", err)
			}
			return s.sendAndCount(pid, n, warm+n)
		}()
		if serr := stopWorker(ctx, h); err == nil {
			err = serr
		}
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		goruntime.GC()
		raw, err := bridgeStreamRaw(n)
		if err != nil {
			return nil, err
		}
		goruntime.GC()
		if _, err := s.sendAndCount(s.inproc, warm, inCount+warm); err != nil {
			return nil, fmt.Errorf("in-process warm-up: %w", err)
		}
		in, err := s.sendAndCount(s.inproc, n, inCount+warm+n)
		if err != nil {
			return nil, fmt.Errorf("in-process: %w", err)
		}
		inCount += warm + n
		rates, raws, inprocs = append(rates, rate), append(raws, raw), append(inprocs, in)
	}
	slices.Sort(rates)
	slices.Sort(raws)
	slices.Sort(inprocs)
	rate, raw, in := rates[len(rates)/2], raws[len(raws)/2], inprocs[len(inprocs)/2]
	s.tellRate = rate
	return []Result{{
		ID:            "bridge.tell",
		Name:          fmt.Sprintf("Tell 64 B host→worker, median of %d (n=%d)", rounds, n),
		Value:         rate,
		Baseline:      "in-process protoactor Tell to one actor",
		BaselineValue: in,
		Unit:          "msg/s",
		Target:        []Cond{RatioAtLeast(0.5)},
	}, {
		ID:            "bridge.tell.raw",
		Name:          fmt.Sprintf("Tell 64 B host→worker, median of %d (n=%d)", rounds, n),
		Value:         rate,
		Baseline:      "raw socketpair, 64 KiB writes",
		BaselineValue: raw,
		Unit:          "msg/s",
		Target:        []Cond{AtLeast(5e6)},
	}}, nil
}

// activityCost measures, in a worker, what one SetActivity costs when it is
// called per item, n times in a row, against what one 64-byte Tell costs
// the host per item (the inverse of the Tell rate measured just before):
// reporting progress per item must be far cheaper than sending a message
// per item.
func (s *bridgeSuite) activityCost(ctx context.Context, n int) ([]Result, error) {
	h, err := s.startWorker(ctx, "bench-activity", bridgeActCode)
	if err != nil {
		return nil, err
	}
	v, err := s.root.RequestFuture(h.PID(), "activity "+strconv.Itoa(n), time.Minute).Result()
	if serr := stopWorker(ctx, h); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	ns, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return nil, fmt.Errorf("activity: worker answered %v", v)
	}
	if s.tellRate <= 0 {
		return nil, errors.New("activity: no Tell rate measured to compare with")
	}
	tellNS := 1e9 / s.tellRate
	return []Result{{
		ID:            "bridge.activity",
		Name:          fmt.Sprintf("Worker.SetActivity per call, in the child (n=%d)", n),
		Value:         ns,
		Baseline:      "one 64 B Tell host→worker, per message (same run)",
		BaselineValue: tellNS,
		Unit:          "ns",
		Target:        []Cond{RatioAtMost(0.5)},
	}}, nil
}

// sendAndCount sends n tells and then the request "count" (ordered after
// them), checks the worker's total is want, and returns the rate from the
// first Send to the answer.
func (s *bridgeSuite) sendAndCount(pid *actor.PID, n, want int) (float64, error) {
	return bridgeSendAndCount(s.root, pid, s.msg, n, want)
}

// bridgeSendAndCount sends msg n times to pid, then the request "count",
// checks the answer is want, and returns the rate from the first Send to
// the answer.
func bridgeSendAndCount(root *actor.RootContext, pid *actor.PID, msg any, n, want int) (float64, error) {
	t0 := time.Now()
	for range n {
		root.Send(pid, msg)
	}
	v, err := root.RequestFuture(pid, "count", time.Minute).Result()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	if got, _ := v.(string); got != strconv.Itoa(want) {
		return 0, fmt.Errorf("worker counted %v tells, want %d", v, want)
	}
	return float64(n) / d.Seconds(), nil
}

// bridgeStreamRaw writes n 64-byte frames to a draining child in 64 KiB writes
// and returns frames per second until the child has confirmed the count.
func bridgeStreamRaw(n int) (float64, error) {
	c, err := bridgeStartRaw(bridgeDrainRole)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for i := 0; i < len(buf); i += bridgeMsgSize {
		binary.LittleEndian.PutUint32(buf[i:], bridgeMsgSize-4)
	}
	total := n * bridgeMsgSize
	t0 := time.Now()
	for left := total; left > 0 && err == nil; {
		k := min(left, len(buf))
		_, err = c.conn.Write(buf[:k])
		left -= k
	}
	if err == nil {
		err = c.conn.CloseWrite()
	}
	var got [8]byte
	if err == nil {
		_, err = io.ReadFull(c.conn, got[:])
	}
	d := time.Since(t0)
	if cerr := c.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("raw stream: %w", err)
	}
	if g := binary.LittleEndian.Uint64(got[:]); g != uint64(total) {
		return 0, fmt.Errorf("raw stream: child read %d bytes, want %d", g, total)
	}
	return float64(n) / d.Seconds(), nil
}

func bridgeQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func bridgeMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func bridgeUS(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ---- scale ----

type scaleKey struct{}

// WithScale returns a context that tells suites to scale their iteration
// counts by n (the command's -n flag): 0.1 for a quick look, 10 for
// steadier numbers. Suites read it with [ScaleOf].
func WithScale(ctx context.Context, n float64) context.Context {
	return context.WithValue(ctx, scaleKey{}, n)
}

// ScaleOf returns the scale set with [WithScale], or 1.
func ScaleOf(ctx context.Context) float64 {
	if n, ok := ctx.Value(scaleKey{}).(float64); ok && n > 0 {
		return n
	}
	return 1
}
