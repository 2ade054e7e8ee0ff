package clusterbench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/bgworker/bgworker/bench/report"
)

// member is one member process of the benchmark.
type member struct {
	name, addr string
	cmd        *exec.Cmd
	in         io.WriteCloser
	lines      chan string
}

func startMember(name, addr string, peers []string, run string, stderr io.Writer) (*member, error) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envRole+"=member", envName+"="+name, envBind+"="+addr,
		envPeers+"="+strings.Join(peers, ","), envRun+"="+run)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &member{name: name, addr: addr, cmd: cmd, in: in, lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			m.lines <- sc.Text()
		}
		close(m.lines)
	}()
	return m, nil
}

// await returns the first line for which match is true.
func (m *member) await(ctx context.Context, d time.Duration, what string, match func([]string) bool) ([]string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case l, ok := <-m.lines:
			if !ok {
				return nil, fmt.Errorf("member %s exited while waiting for %s", m.name, what)
			}
			f := strings.Fields(l)
			if len(f) > 0 && f[0] == "error" {
				return nil, fmt.Errorf("member %s: %s", m.name, l)
			}
			if match(f) {
				return f, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("member %s: no %s within %v", m.name, what, d)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (m *member) send(cmd string) { fmt.Fprintln(m.in, cmd) }

func (m *member) kill() {
	m.cmd.Process.Signal(syscall.SIGKILL)
	m.in.Close()
	for range m.lines {
	}
	m.cmd.Wait()
}

func (m *member) quit() {
	m.send("quit")
	m.in.Close()
	for range m.lines {
	}
	m.cmd.Wait()
}

// latencies asks m for one "lat" line of µs.
func (m *member) latencies(ctx context.Context, cmd string) ([]float64, error) {
	m.send(cmd)
	f, err := m.await(ctx, 2*time.Minute, "lat", func(f []string) bool { return len(f) > 0 && f[0] == "lat" })
	if err != nil {
		return nil, err
	}
	if len(f) > 1 && f[1] == "error" {
		return nil, fmt.Errorf("member %s: %s: %s", m.name, cmd, strings.Join(f[2:], " "))
	}
	out := make([]float64, 0, len(f)-1)
	for _, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		out = append(out, v)
	}
	return out, nil
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}

// owner is the member among addrs that owns Worker: protoactor's
// rendezvous hash, as every member computes it.
func owner(addrs []string) string {
	var ms []*pcluster.Member
	for i, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		ms = append(ms, &pcluster.Member{Id: strconv.Itoa(i), Host: host, Port: int32(p), Kinds: []string{"bgworker-worker"}})
	}
	r := pcluster.NewRendezvous()
	r.UpdateMembers(ms)
	return r.GetByClusterIdentity(&pcluster.ClusterIdentity{Identity: Worker, Kind: "bgworker-worker"})
}

func freeAddrs(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// Run measures both benchmarks on three member processes and returns the
// table's rows. scale multiplies the counts (at least 10 kills). Progress
// goes to stderr.
func Run(ctx context.Context, scale float64, stderr io.Writer) ([]report.Result, error) {
	b := make([]byte, 8)
	rand.Read(b)
	run := hex.EncodeToString(b)
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	names := map[string]string{addrs[0]: "m1", addrs[1]: "m2", addrs[2]: "m3"}
	ms := map[string]*member{}
	defer func() {
		for _, m := range ms {
			m.kill()
		}
	}()
	start := func(a string) error {
		m, err := startMember(names[a], a, addrs, run, stderr)
		if err != nil {
			return err
		}
		ms[a] = m
		_, err = m.await(ctx, time.Minute, "started", func(f []string) bool { return len(f) == 1 && f[0] == "started" })
		return err
	}
	for _, a := range addrs {
		if err := start(a); err != nil {
			return nil, err
		}
	}
	home := owner(addrs)
	var token uint64
	ready := func(f []string) bool {
		if len(f) != 4 || f[0] != "ready" || f[1] != Worker {
			return false
		}
		t, _ := strconv.ParseUint(f[2], 10, 64)
		return t > token
	}
	// Placements settle on the owner of all three.
	for {
		f, err := ms[home].await(ctx, time.Minute, "the worker ready on its owner", ready)
		if err != nil {
			return nil, err
		}
		token, _ = strconv.ParseUint(f[2], 10, 64)
		if token > 0 {
			break
		}
	}
	var other []string
	for _, a := range addrs {
		if a != home {
			other = append(other, a)
		}
	}
	heir := owner(other)
	client := other[0]
	if client == heir {
		client = other[1]
	}

	// Warm start, on a member that holds nothing.
	warm, err := ms[client].latencies(ctx, fmt.Sprintf("warm %d", scaled(20, scale)))
	if err != nil {
		return nil, err
	}
	warmW, err := ms[client].latencies(ctx, fmt.Sprintf("warmworker %d", scaled(20, scale)))
	if err != nil {
		return nil, err
	}

	// Request by name against a raw remote request, same two members,
	// rounds interleaved, and the bridge round trip that a request by name
	// pays on the holder (a request to the worker from the holder itself).
	var byName, raw, local []float64
	if _, err := ms[client].latencies(ctx, "req 300"); err != nil {
		return nil, err
	}
	if _, err := ms[client].latencies(ctx, "raw "+home+" 300"); err != nil {
		return nil, err
	}
	if _, err := ms[home].latencies(ctx, "local 300"); err != nil {
		return nil, err
	}
	for range 5 {
		x, err := ms[client].latencies(ctx, fmt.Sprintf("req %d", scaled(1000, scale)))
		if err != nil {
			return nil, err
		}
		y, err := ms[client].latencies(ctx, fmt.Sprintf("raw %s %d", home, scaled(1000, scale)))
		if err != nil {
			return nil, err
		}
		byName, raw = append(byName, x...), append(raw, y...)
		z, err := ms[home].latencies(ctx, fmt.Sprintf("local %d", scaled(1000, scale)))
		if err != nil {
			return nil, err
		}
		local = append(local, z...)
	}
	fmt.Fprintf(stderr, "cluster: request by name p50 %.1f µs p99 %.1f µs; raw remote p50 %.1f µs p99 %.1f µs; bridge round trip on the holder p50 %.1f µs (%d each)\n",
		quantile(byName, .5), quantile(byName, .99), quantile(raw, .5), quantile(raw, .99), quantile(local, .5), len(byName))

	// Failover: SIGKILL of the owner, timed to the worker's ready report on
	// the heir, beside the grain (same identity, same owner) re-activated
	// through protoactor's cluster context on the client; the detection
	// is the heir's view of the kill. Kills alternate between an owner
	// that has held the worker for a lease ("settled") and one killed
	// right after it took the worker back ("fresh").
	var runs [2]kills
	n := max(10, scaled(10, scale))
	for i := range 2 * n {
		k := &runs[i%2]
		ms[client].send("grain1")
		if f, err := ms[client].await(ctx, 10*time.Second, "grain1", func(f []string) bool { return len(f) > 0 && f[0] == "grain1" }); err != nil {
			return nil, err
		} else if f[1] != names[home] {
			fmt.Fprintf(stderr, "cluster: kill %d: the grain answered from %s before the kill, not %s\n", i, f[1], names[home])
		}
		victim := ms[home]
		killed := time.Now()
		victim.cmd.Process.Signal(syscall.SIGKILL)
		ms[client].send("grain " + names[home])
		ms[client].send("grainafter " + home)
		var hd, pl []string
		f, err := ms[heir].await(ctx, time.Minute, "the worker ready on the heir", func(f []string) bool {
			if len(f) == 3 && f[0] == "down" && f[1] == home {
				hd = f
			}
			if len(f) == 4 && f[0] == "placed" {
				pl = f
			}
			return ready(f)
		})
		if err != nil {
			return nil, err
		}
		if hd == nil {
			return nil, fmt.Errorf("kill %d: the heir placed the worker before it saw the owner down", i)
		}
		hat, _ := strconv.ParseInt(hd[2], 10, 64)
		token, _ = strconv.ParseUint(f[2], 10, 64)
		at, _ := strconv.ParseInt(f[3], 10, 64)
		placedAfter, readyAfter := math.NaN(), math.NaN()
		if pl != nil {
			pat, _ := strconv.ParseInt(pl[3], 10, 64)
			placedAfter, readyAfter = ms2(time.Unix(0, pat).Sub(time.Unix(0, hat))), ms2(time.Unix(0, at).Sub(time.Unix(0, pat)))
			k.granted, k.started = append(k.granted, placedAfter), append(k.started, readyAfter)
		}
		heirDetect := ms2(time.Unix(0, hat).Sub(killed))
		failover := ms2(time.Unix(0, at).Sub(killed))
		victim.kill()
		delete(ms, home)
		// The client reports the grain elsewhere and its view of the kill,
		// in either order.
		var g, ga, d []string
		if _, err := ms[client].await(ctx, time.Minute, "the grain elsewhere and the victim down", func(f []string) bool {
			switch {
			case len(f) == 3 && f[0] == "grain":
				g = f
			case len(f) == 3 && f[0] == "grainafter":
				ga = f
			case len(f) == 3 && f[0] == "down" && f[1] == home:
				d = f
			}
			return g != nil && ga != nil && d != nil
		}); err != nil {
			return nil, err
		}
		if g[1] == "none" || ga[1] == "none" {
			return nil, fmt.Errorf("kill %d: the grain was not re-activated within 30 s", i)
		}
		gat, _ := strconv.ParseInt(g[2], 10, 64)
		gaat, _ := strconv.ParseInt(ga[2], 10, 64)
		dat, _ := strconv.ParseInt(d[2], 10, 64)
		detect := ms2(time.Unix(0, dat).Sub(killed))
		k.add(failover, heirDetect, detect, ms2(time.Unix(0, gat).Sub(killed)), ms2(time.Unix(0, gaat).Sub(killed)))
		fmt.Fprintf(stderr, "cluster: kill %d (%s) of %s: down on %s after %.2f ms, worker placed there %.2f ms later and ready %.2f ms after that, at %.2f ms; on %s: down after %.2f ms, grain (requests from the kill) on %s after %.1f ms, grain (requests from the down) after %.1f ms\n",
			i, scenario[i%2], names[home], names[heir], heirDetect, placedAfter, readyAfter, failover, names[client], detect, g[1], k.grain[len(k.grain)-1], k.after[len(k.after)-1])
		// Restart the victim: the worker moves back to it (the owner of all
		// three), gracefully.
		if err := start(home); err != nil {
			return nil, err
		}
		if _, err := ms[home].await(ctx, time.Minute, "the worker back on its owner", ready); err != nil {
			return nil, err
		}
		for _, a := range other {
			if _, err := ms[a].await(ctx, 15*time.Second, "the restarted member up", func(f []string) bool {
				return len(f) == 3 && f[0] == "up" && f[1] == home
			}); err != nil {
				return nil, err
			}
		}
		if (i+1)%2 == 0 {
			// A settled kill finds the worker as it runs: a lease passes,
			// in which heartbeats renew the grants of the move.
			time.Sleep(Lease)
		}
		// Drain the lines of the move on the others.
		for _, a := range other {
			for len(ms[a].lines) > 0 {
				<-ms[a].lines
			}
		}
		token = 0
	}
	for _, m := range ms {
		m.quit()
	}
	ms = nil

	wp50 := quantile(warm, .5) / 1e3
	nr, rr, lr := quantile(byName, .5), quantile(raw, .5), quantile(local, .5)
	r := func(id, name string, v float64, unit, base string, bv float64, target ...report.Cond) report.Result {
		return report.Result{ID: "cluster." + id, Suite: "cluster", Name: name, Value: v, Unit: unit, Baseline: base, BaselineValue: bv, Target: target}
	}
	var out []report.Result
	for j, k := range runs {
		// A failure is detected once both survivors, a quorum, have seen
		// it: only then have both their grants run out.
		quorum := make([]float64, len(k.failover))
		excess := make([]float64, len(k.failover))
		for i := range k.failover {
			quorum[i] = max(k.heirDetect[i], k.detect[i])
			excess[i] = k.failover[i] - quorum[i]
		}
		fp50, dp50 := quantile(k.failover, .5), quantile(quorum, .5)
		bound := dp50 + 1.2*wp50
		s := scenario[j]
		out = append(out,
			r("failover."+s+".p50", fmt.Sprintf("failover p50, %d SIGKILLs of the owner, %s (bound: detection + 1.2 × warm start)", len(k.failover), s), fp50, "ms",
				"protoactor grain re-activation p50", quantile(k.grain, .5), report.AtMost(bound)),
			r("failover."+s+".vs_detected_grain.p50", "failover p50 (the same kills)", fp50, "ms",
				"grain, requests from the down, p50", quantile(k.after, .5)),
			r("detect."+s+".p50", "detection p50, both survivors (lease "+Lease.String()+")", dp50, "ms",
				"the new owner alone", quantile(k.heirDetect, .5)),
			r("failover."+s+".excess.p50", "failover - detection, per kill, p50", quantile(excess, .5), "ms",
				"warm start p50 (pool of 2)", wp50, report.RatioAtMost(1.2)),
			r("grant."+s+".p50", "lease grant after new owner's detection p50", quantile(k.granted, .5), "ms",
				"raw protoactor remote request p50", rr/1e3),
			r("start."+s+".p50", "new owner's start, placed → ready, p50", quantile(k.started, .5), "ms",
				"warm start p50 (pool of 2)", wp50))
	}
	return append(out,
		r("warm.p50", "warm start of the worker's code p50", quantile(warmW, .5)/1e3, "ms",
			"warm start p50 (pool of 2)", wp50),
		r("request.p50", "request by name p50, 64 B, other member", nr, "µs",
			"raw protoactor remote request p50", rr, report.RatioAtMost(1.5)),
		r("request.p99", "request by name p99", quantile(byName, .99), "µs",
			"raw protoactor remote request p99", quantile(raw, .99)),
		r("bridge.p50", "bridge round trip on the holder p50", lr, "µs",
			"raw protoactor remote request p50", rr),
		r("request.minus_raw.p50", "request by name − raw remote, p50s", nr-rr, "µs",
			"bridge round trip on the holder p50", lr),
	), nil
}

// scenario names the two kinds of kills, by their parity.
var scenario = [2]string{"settled", "fresh"}

// kills are the measurements of one scenario's kills, in ms from the kill.
type kills struct {
	failover, heirDetect, detect, grain, after []float64
	granted, started                           []float64 // placed after the heir's detection; ready after placed
}

func (k *kills) add(failover, heirDetect, detect, grain, after float64) {
	k.failover = append(k.failover, failover)
	k.heirDetect = append(k.heirDetect, heirDetect)
	k.detect = append(k.detect, detect)
	k.grain = append(k.grain, grain)
	k.after = append(k.after, after)
}

func ms2(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func scaled(n int, scale float64) int { return max(1, int(float64(n)*scale)) }
