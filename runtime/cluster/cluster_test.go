package cluster_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func unsafePointer(s string) unsafe.Pointer {
	p, err := unix.BytePtrFromString(s)
	if err != nil {
		panic(err)
	}
	return unsafe.Pointer(p)
}

// proc is one member process of a test.
type proc struct {
	t     *testing.T
	name  string
	bind  string
	http  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // every stdout line
	done  chan struct{}
	mu    sync.Mutex
	log   []string
}

// startMember re-executes the test binary as a member.
func startMember(t *testing.T, dir, name, bind string, peers []string) *proc {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=member", envName+"="+name, envBind+"="+bind,
		envPeers+"="+strings.Join(peers, ","), envDir+"="+dir)
	cmd.Stderr = &prefixWriter{t: t, prefix: name + ": "}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, bind: bind, cmd: cmd, stdin: in, lines: make(chan string, 4096), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// expect waits for a line with the given prefix and returns it.
func (p *proc) expect(prefix string, d time.Duration) string {
	p.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("%s: exited while waiting for %q", p.name, prefix)
			}
			if strings.HasPrefix(l, "error") || (prefix == "reply" && strings.HasPrefix(l, "reqerr")) {
				p.t.Fatalf("%s: %s", p.name, l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline.C:
			p.t.Fatalf("%s: no %q within %v", p.name, prefix, d)
		}
	}
}

func (p *proc) send(cmd string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// quit asks the member to leave and waits for it to exit 0.
func (p *proc) quit() {
	p.t.Helper()
	p.send("quit")
	p.stdin.Close()
	for range p.lines {
	}
	<-p.done
	if err := p.cmd.Wait(); err != nil {
		p.t.Errorf("%s: exit: %v; output:\n%s", p.name, err, strings.Join(p.log, "\n"))
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.stdin.Close()
	for range p.lines {
	}
	<-p.done
	p.cmd.Wait()
}

type prefixWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		if testing.Verbose() {
			w.t.Log(w.prefix + string(w.buf[:i]))
		}
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// owner computes, as every member does, which of addrs owns worker:
// protoactor's rendezvous hash, as in disthash.
func owner(worker string, addrs []string) string {
	var ms []*pcluster.Member
	for i, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		ms = append(ms, &pcluster.Member{Id: strconv.Itoa(i), Host: host, Port: int32(p), Kinds: []string{"bgworker-worker"}})
	}
	r := pcluster.NewRendezvous()
	r.UpdateMembers(ms)
	return r.GetByClusterIdentity(&pcluster.ClusterIdentity{Identity: worker, Kind: "bgworker-worker"})
}

// scanner watches /proc while a test runs: processes of this run whose
// threads carry a worker's name. It records the most it ever saw at once.
type scanner struct {
	mu    sync.Mutex
	most  map[string]int
	seen  map[string]map[int]bool
	scans int
	stop  chan struct{}
	done  chan struct{}
}

func startScanner(run string) *scanner {
	s := &scanner{most: map[string]int{}, seen: map[string]map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	tagged := map[int]bool{}
	untagged := map[int]bool{}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			now := map[string]int{}
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				pid, err := strconv.Atoi(e.Name())
				if err != nil || untagged[pid] {
					continue
				}
				if !tagged[pid] {
					env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
					if err != nil {
						continue
					}
					if !strings.Contains(string(env), envRun+"="+run+"\x00") {
						untagged[pid] = true
						continue
					}
					tagged[pid] = true
				}
				if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err != nil || strings.Contains(string(st), ") Z ") {
					continue
				}
				tasks, _ := os.ReadDir("/proc/" + e.Name() + "/task")
				for _, tk := range tasks {
					comm, _ := os.ReadFile("/proc/" + e.Name() + "/task/" + tk.Name() + "/comm")
					c := strings.TrimSpace(string(comm))
					for _, w := range testWorkers {
						if c == threadName(w) {
							now[w]++
							s.mu.Lock()
							if s.seen[w] == nil {
								s.seen[w] = map[int]bool{}
							}
							s.seen[w][pid] = true
							s.mu.Unlock()
						}
					}
				}
			}
			s.mu.Lock()
			s.scans++
			for w, n := range now {
				s.most[w] = max(s.most[w], n)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *scanner) finish() (map[string]int, int) {
	close(s.stop)
	<-s.done
	return s.most, s.scans
}

// tagged returns the live processes of this run other than this one.
func tagged(run string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && strings.Contains(string(env), envRun+"="+run+"\x00") {
			out = append(out, pid)
		}
	}
	return out
}

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

type workerRow struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	PID    *int   `json:"pid"`
	Member string `json:"member"`
}

type clusterStatus struct {
	Members []struct {
		ID      string    `json:"id"`
		Name    string    `json:"name"`
		Address string    `json:"address"`
		Alive   bool      `json:"alive"`
		Since   time.Time `json:"since"`
	} `json:"members"`
	Placements []struct {
		Worker string `json:"worker"`
		Member string `json:"member"`
		Token  uint64 `json:"token"`
	} `json:"placements"`
}

// waitStatus polls a member's /workers and /cluster until cond holds
// (the state spreads with heartbeats), failing after d.
func waitStatus(t *testing.T, p *proc, d time.Duration, cond func([]workerRow, clusterStatus) bool) ([]workerRow, clusterStatus) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	for {
		var rows []workerRow
		var cs clusterStatus
		getJSON(t, "http://"+p.http+"/workers", &rows)
		getJSON(t, "http://"+p.http+"/cluster", &cs)
		if cond(rows, cs) {
			return rows, cs
		}
		if time.Now().After(end) {
			t.Fatalf("%s: status did not settle within %v: workers %+v cluster %+v", p.name, d, rows, cs)
		}
		<-tick.C
	}
}

// rowsAgree checks that rows has one row per test worker with the member
// placements name, and a pid exactly on that member.
func rowsAgree(self string, rows []workerRow, want map[string]string) bool {
	n := 0
	for _, r := range rows {
		m, ok := want[r.Name]
		if !ok {
			continue
		}
		n++
		if r.Member != m || (r.PID != nil) != (m == self) || (m == self && r.State != "running") {
			return false
		}
	}
	return n == len(want)
}

// The failover test: three member processes on 127.0.0.1. Every
// cluster-scoped worker runs exactly once; SIGKILL of the member running
// one moves it to a survivor (the time is logged); a request by name from
// the third member is answered before and after; and no two processes run
// a worker at any moment, as /proc, the exclusive locks and the tokens
// show. No process of the run is left afterwards.
func TestClusterFailover(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	run := os.Getenv(envRun)
	dir := t.TempDir()
	addrs := freePorts(t, 3)
	names := []string{"m1", "m2", "m3"}
	nameOf := map[string]string{}
	for i, a := range addrs {
		nameOf[a] = names[i]
	}
	sc := startScanner(run)
	var procs []*proc
	byAddr := map[string]*proc{}
	for i, a := range addrs {
		p := startMember(t, dir, names[i], a, addrs)
		procs = append(procs, p)
		byAddr[a] = p
	}
	alive := map[*proc]bool{}
	for _, p := range procs {
		alive[p] = true
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if alive[p] {
				p.kill()
			}
		}
	})
	for _, p := range procs {
		p.http = strings.Fields(p.expect("http ", 30*time.Second))[1]
		p.expect("started", 10*time.Second)
	}

	waitAllUp(t, procs, 3)
	// Where every worker runs, as the rendezvous hash says.
	want := map[string]string{}
	for _, w := range testWorkers {
		want[w] = nameOf[owner(w, addrs)]
	}
	for _, p := range procs {
		waitStatus(t, p, 20*time.Second, func(rows []workerRow, cs clusterStatus) bool { return rowsAgree(p.name, rows, want) })
	}

	// The victim holds tsingle; the requester is the member that holds it
	// neither before nor after.
	victim := byAddr[owner("tsingle", addrs)]
	var survivors []string
	for _, a := range addrs {
		if a != victim.bind {
			survivors = append(survivors, a)
		}
	}
	heir := byAddr[owner("tsingle", survivors)]
	var third *proc
	for _, p := range procs {
		if p != victim && p != heir {
			third = p
		}
	}
	third.send("req tsingle")
	r1 := strings.Fields(third.expect("reply", 10*time.Second))
	if r1[1] != victim.name {
		t.Fatalf("before the kill, tsingle answered from %s, want %s", r1[1], victim.name)
	}
	tok1, _ := strconv.ParseUint(r1[2], 10, 64)
	for _, cmd := range []string{"pidreq tsingle", "syspidreq tsingle"} {
		third.send(cmd)
		if r := strings.Fields(third.expect("reply", 10*time.Second)); r[1] != victim.name || r[2] != r1[2] {
			t.Errorf("%s before the kill answered %v, want %v", cmd, r, r1)
		}
	}

	killed := time.Now()
	victim.kill()
	alive[victim] = false
	var readyAt int64
	var tok2 uint64
	for tok2 <= tok1 { // skip placements from before the kill
		f := strings.Fields(heir.expect("event ready tsingle", 30*time.Second))
		readyAt, _ = strconv.ParseInt(f[5], 10, 64)
		tok2, _ = strconv.ParseUint(f[3], 10, 64)
	}
	t.Logf("failover: SIGKILL of %s → tsingle ready on %s after %v (token %d → %d)",
		victim.name, heir.name, time.Unix(0, readyAt).Sub(killed), tok1, tok2)
	third.send("req tsingle")
	r2 := strings.Fields(third.expect("reply", 10*time.Second))
	if r2[1] != heir.name || r2[2] != strconv.FormatUint(tok2, 10) {
		t.Errorf("after the failover, tsingle answered %v, want from %s with token %d", r2, heir.name, tok2)
	}
	for _, cmd := range []string{"pidreq tsingle", "syspidreq tsingle"} {
		third.send(cmd)
		if r := strings.Fields(third.expect("reply", 10*time.Second)); r[1] != heir.name || r[2] != r2[2] {
			t.Errorf("%s after the failover answered %v, want %v", cmd, r, r2)
		}
	}
	// The heir answers requests to its own worker too.
	heir.send("req tsingle")
	if r := strings.Fields(heir.expect("reply", 10*time.Second)); r[1] != heir.name {
		t.Errorf("req on the heir answered %v", r)
	}

	for _, w := range testWorkers {
		want[w] = nameOf[owner(w, survivors)]
	}
	for _, p := range []*proc{heir, third} {
		// Each member takes the victim as down on its own clock, once it has
		// heard nothing from it for the lease.
		_, cs := waitStatus(t, p, 20*time.Second, func(rows []workerRow, cs clusterStatus) bool {
			ok := rowsAgree(p.name, rows, want) && len(cs.Members) == 3
			for _, m := range cs.Members {
				ok = ok && m.Alive == (m.Address != victim.bind)
			}
			return ok
		})
		for _, m := range cs.Members {
			if m.ID == "" || m.Name == "" || m.Since.IsZero() {
				t.Errorf("%s: /cluster member %+v lacks its id, name or since", p.name, m)
			}
		}
		for _, pl := range cs.Placements {
			if pl.Member != want[pl.Worker] || pl.Token == 0 {
				t.Errorf("%s: /cluster placement %+v, want member %s and a token", p.name, pl, want[pl.Worker])
			}
		}
	}

	for _, p := range []*proc{heir, third} {
		p.quit()
		alive[p] = false
	}
	most, scans := sc.finish()
	t.Logf("/proc: %d scans, most instances at once %v", scans, most)
	for _, w := range testWorkers {
		if most[w] > 1 {
			t.Errorf("/proc showed %d processes running %s at once", most[w], w)
		}
	}
	if most["tsingle"] != 1 {
		t.Errorf("/proc never showed tsingle running (most %d)", most["tsingle"])
	}
	viol, _ := filepath.Glob(dir + "/violation-*")
	for _, v := range viol {
		b, _ := os.ReadFile(v)
		t.Errorf("fencing violation %s: %s", filepath.Base(v), b)
	}
	starts, _ := filepath.Glob(dir + "/tsingle.*.token-*")
	if len(starts) < 2 {
		t.Errorf("tsingle started %d times (%v), want at least twice (before and after the kill)", len(starts), starts)
	}
	// Nothing of the run is left: the killed member's children died with
	// it, the others were stopped.
	noneLeft(t, run)
}

// readyAfter waits for p to report worker ready under a token above min,
// and returns the token and when.
func readyAfter(t *testing.T, p *proc, worker string, min uint64) (uint64, time.Time) {
	t.Helper()
	for {
		f := strings.Fields(p.expect("event ready "+worker+" ", 30*time.Second))
		tok, _ := strconv.ParseUint(f[3], 10, 64)
		at, _ := strconv.ParseInt(f[5], 10, 64)
		if tok > min {
			return tok, time.Unix(0, at)
		}
	}
}

// A member that leaves (its Shutdown, as on Ctrl-C) hands its workers on
// at once, without waiting for the lease; a member that comes back at the
// same address takes its workers back, the old holder stopping first. No
// two instances at any moment, as before.
func TestClusterLeaveAndRejoin(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	run := os.Getenv(envRun)
	dir := t.TempDir()
	addrs := freePorts(t, 3)
	names := map[string]string{addrs[0]: "m1", addrs[1]: "m2", addrs[2]: "m3"}
	sc := startScanner(run)
	byAddr := map[string]*proc{}
	var all []*proc
	t.Cleanup(func() {
		for _, p := range all {
			select {
			case <-p.done:
			default:
				p.kill()
			}
		}
	})
	start := func(a string) *proc {
		p := startMember(t, dir, names[a], a, addrs)
		all = append(all, p)
		byAddr[a] = p
		p.http = strings.Fields(p.expect("http ", 30*time.Second))[1]
		p.expect("started", 10*time.Second)
		return p
	}
	for _, a := range addrs {
		start(a)
	}
	home := owner("tsingle", addrs)
	var others []string
	for _, a := range addrs {
		if a != home {
			others = append(others, a)
		}
	}
	heir := byAddr[owner("tsingle", others)]
	waitAllUp(t, all, 3)
	var tok1 uint64
	waitStatus(t, byAddr[home], 20*time.Second, func(_ []workerRow, cs clusterStatus) bool {
		for _, pl := range cs.Placements {
			if pl.Worker == "tsingle" && pl.Member == names[home] {
				tok1 = pl.Token
				return true
			}
		}
		return false
	})

	left := time.Now()
	byAddr[home].quit()
	tok2, at := readyAfter(t, heir, "tsingle", tok1)
	t.Logf("leave: %s left → tsingle ready on %s after %v (token %d → %d)", names[home], heir.name, at.Sub(left), tok1, tok2)

	back := start(home)
	tok3, at3 := readyAfter(t, back, "tsingle", tok2)
	t.Logf("rejoin: %s back → tsingle moved back, ready there at token %d", names[home], tok3)
	// The heir reported its instance stopped (and released) before that.
	var stoppedAt time.Time
	heir.mu.Lock()
	for _, l := range heir.log {
		if f := strings.Fields(l); len(f) == 6 && f[0] == "event" && f[1] == "placed" && f[2] == "tsingle" && f[3] == strconv.FormatUint(tok2, 10) && f[4] == "false" {
			n, _ := strconv.ParseInt(f[5], 10, 64)
			stoppedAt = time.Unix(0, n)
		}
	}
	heir.mu.Unlock()
	if stoppedAt.IsZero() || !stoppedAt.Before(at3) {
		t.Errorf("the heir's instance (token %d) stopped at %v, want before the return's ready at %v", tok2, stoppedAt, at3)
	}

	for _, a := range addrs {
		byAddr[a].quit()
	}
	most, scans := sc.finish()
	t.Logf("/proc: %d scans, most instances at once %v", scans, most)
	for _, w := range testWorkers {
		if most[w] > 1 {
			t.Errorf("/proc showed %d processes running %s at once", most[w], w)
		}
	}
	viol, _ := filepath.Glob(dir + "/violation-*")
	for _, v := range viol {
		b, _ := os.ReadFile(v)
		t.Errorf("fencing violation %s: %s", filepath.Base(v), b)
	}
	noneLeft(t, run)
}

// noneLeft fails unless every process of the run other than this one is
// gone within a few seconds (children of a SIGKILLed member die by EOF on
// their bridge, and init reaps them).
func noneLeft(t *testing.T, run string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(5 * time.Second)
	for left := tagged(run); len(left) > 0; left = tagged(run) {
		if time.Now().After(end) {
			t.Fatalf("processes of the run left after the test: %v", left)
		}
		<-tick.C
	}
}

// waitAllUp waits until every member of ps sees n members alive: members
// started one after another see each other only once protoactor's remote
// has retried its first connection (it waits 2 s after a refused one).
func waitAllUp(t *testing.T, ps []*proc, n int) {
	t.Helper()
	for _, p := range ps {
		waitStatus(t, p, 30*time.Second, func(_ []workerRow, cs clusterStatus) bool {
			up := 0
			for _, m := range cs.Members {
				if m.Alive {
					up++
				}
			}
			return up == n
		})
	}
}
