package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	bgw "github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/bridge"
)

// Options configures Run.
type Options struct {
	Duration  time.Duration // how long to inject faults; then a final settle and shutdown
	Seed      uint64        // of the fault schedule; 0 = random
	NoCgroups bool          // run the host with Config.NoCgroups (process groups only)
	Keep      bool          // keep the work directory (host logs, journal) even without violations
	Log       io.Writer     // progress lines; nil = none
}

// Bounds the soak holds the host to. A settled host (every injection
// accounted for, every worker running, the pool full) must be within them
// of its first settled state in the same life.
const (
	settleTimeout   = 20 * time.Second
	persistFor      = 2 * time.Second // a finding that lasts this long is a violation, not a transient
	cleanupBound    = 3 * time.Second // after SIGKILL of the host, every process of it is gone within this
	fdSlack         = 12              // fds over the first settled count (children come and go: ~4 each)
	goroutineSlack  = 24
	rssSlack        = 64 << 20
	probeBound      = 12 * time.Second // a child-mode start without Welcome must have exited by then
	shortStopMax    = 500 * time.Millisecond
	longStopMin     = 2*heartbeatTimeout + time.Second
	longStopMax     = 3*heartbeatTimeout + time.Second
	injectMin       = 150 * time.Millisecond
	injectMax       = 900 * time.Millisecond
	settleEvery     = 20 * time.Second
	hostKillMean    = 75 * time.Second
	hostKillMinLife = 30 * time.Second
	hostPauseMean   = 45 * time.Second
	probeEvery      = 40 * time.Second
)

// Run runs the soak and returns its report; the caller prints it. An error
// means the soak itself could not run (not a violation).
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Seed == 0 {
		o.Seed = mrand.Uint64()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bgwchaos-")
	if err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	rand.Read(b)
	s := &soak{o: o, rng: mrand.New(mrand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), tag: hex.EncodeToString(b), dir: dir, exe: exe,
		lock: filepath.Join(dir, "bgwchaos.lock"), journal: filepath.Join(dir, "journal"),
		http: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		rep: &Report{Seed: o.Seed, Dir: dir, Injected: map[string]int{}, Exits: map[string]int{}, Violations: map[string][]string{},
			violationCount: map[string]int{}},
		suspects: map[string]time.Time{}, reported: map[string]bool{}, stopped: map[int]*stopRec{}}
	err = s.run(ctx)
	s.cleanupAll()
	if err == nil && len(s.rep.Violations) == 0 && !o.Keep {
		os.RemoveAll(dir)
		s.rep.Dir = ""
	}
	return s.rep, err
}

type soak struct {
	o             Options
	rng           *mrand.Rand
	tag, dir, exe string
	lock, journal string
	jpos          int64 // read offset in the journal
	http          *http.Client
	rep           *Report
	h             *host // the current life; nil between lives
	stopped       map[int]*stopRec
	probe         *probe
	suspects      map[string]time.Time // finding → first seen, for persistence
	reported      map[string]bool      // findings already reported
	rows          []bgw.WorkerInfo     // the last /workers
	rowsAt        time.Time
	ps            map[int]proc // the last scan of the run's processes
	lastScan      time.Time
	final         bool // the final shutdown is under way: its exits are expected
}

// host is one life of the host process.
type host struct {
	n       int
	cmd     *exec.Cmd
	pid     int
	addr    string
	lines   chan string
	exited  chan struct{}
	started time.Time
	cgroups bool // its rows name cgroup leaves

	pending     map[wkey]*inj // worker injections waiting for their exit
	shortStops  map[wkey]time.Duration
	seen        map[wkey]bool
	poolInj     int            // pool kills and long pool stops: each costs one idle child or is one exit
	poolKills   int            // of which kills
	poolMissed  int            // pool faults not accounted for, as last reported
	poolVictims map[int]string // pid → the fault injected into it while it was an idle child
	poolByExit  int            // pool victims whose exit (as a worker's process) accounts for them
	exitLines   int
	resets      int
	lastGen     uint64
	shmCrashes  int
	base, peak  resources
	baseSet     bool
	paused      bool
	pauseExits  []journalLine // exits while a host pause is being judged
	judging     bool
}

type wkey struct {
	name string
	inc  uint64
}

type inj struct {
	kind string
	at   time.Time
	pid  int
}

type stopRec struct {
	until time.Time
	kind  string
	key   wkey
}

type probe struct {
	cmd     *exec.Cmd
	peer    *os.File
	started time.Time
	ended   time.Time // when its Wait returned; read after done is closed
	done    chan struct{}
	stderr  *strings.Builder
}

// Report is what the soak saw.
type Report struct {
	Seed             uint64              // of the fault schedule
	Dir              string              // work directory (host logs, journal) kept for inspection; "" when removed
	Elapsed          time.Duration       // the whole run, final shutdown included
	Cgroups          string              // how the host contained its children
	Lives            int                 // host processes started
	Injected         map[string]int      // faults by kind
	Exits            map[string]int      // exits the host recorded, by reason
	Resets           int                 // all-for-one resets
	SegmentsChecked  int                 // segment generations checked fresh
	Cleanups         []time.Duration     // SIGKILL of the host → the last process of it gone, per kill
	LifeFigures      []string            // per life: first settled → highest fds, memfds, goroutines, RSS
	MemfdAfterResets []string            // resets:memfds/fds of the settled host
	Probes           int                 // child-mode starts without Welcome
	ProbeMax         time.Duration       // the longest of them to exit
	ShutdownMS       int64               // the final Shutdown, as the host measured it
	ShutdownOK       bool                // it returned nil
	Violations       map[string][]string // by kind: the first five messages
	OrphansFound     int                 // processes of the run found not descending from a live host
	ZombiesFound     int                 // children of the host left unreaped
	DeadRowsFound    int                 // /workers rows naming a pid that was gone
	violationCount   map[string]int
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.o.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// violate records a violation of kind with a message naming it.
func (s *soak) violate(kind, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.rep.violationCount[kind]++
	if len(s.rep.Violations[kind]) < 5 {
		s.rep.Violations[kind] = append(s.rep.Violations[kind], msg)
	}
	s.logf("VIOLATION %s: %s", kind, msg)
}

// persist reports whether finding has held for persistFor; once reported it
// is not reported again.
func (s *soak) persist(finding string, now time.Time) bool {
	first, ok := s.suspects[finding]
	if !ok {
		s.suspects[finding] = now
		return false
	}
	if now.Sub(first) < persistFor || s.reported[finding] {
		return false
	}
	s.reported[finding] = true
	return true
}

func (s *soak) run(ctx context.Context) error {
	t0 := time.Now()
	defer func() { s.rep.Elapsed = time.Since(t0) }()
	if err := s.startHost(); err != nil {
		return err
	}
	end := t0.Add(s.o.Duration)
	now := time.Now()
	nextInj := now.Add(s.between(injectMin, injectMax))
	nextSettle := now.Add(settleEvery)
	nextKill := now.Add(s.exp(hostKillMean))
	nextPause := now.Add(s.exp(hostPauseMean))
	nextProbe := now.Add(5 * time.Second)
	for ctx.Err() == nil && time.Now().Before(end) {
		s.poll()
		now = time.Now()
		switch {
		case now.After(nextKill) && now.Sub(s.h.started) > hostKillMinLife:
			s.settle("before a host kill")
			if err := s.killHost(); err != nil {
				return err
			}
			if err := s.startHost(); err != nil {
				return err
			}
			nextKill = time.Now().Add(s.exp(hostKillMean))
		case now.After(nextPause):
			s.settle("before a host pause")
			s.pauseHost()
			nextPause = time.Now().Add(s.exp(hostPauseMean))
		case now.After(nextSettle):
			s.settle("periodic")
			nextSettle = time.Now().Add(settleEvery)
		case now.After(nextProbe) && s.probe == nil:
			s.startProbe()
			nextProbe = time.Now().Add(probeEvery)
		case now.After(nextInj):
			s.inject()
			nextInj = time.Now().Add(s.between(injectMin, injectMax))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.settle("final")
	for s.probe != nil {
		s.checkProbe()
		time.Sleep(50 * time.Millisecond)
	}
	s.shutdownHost()
	return nil
}

func (s *soak) between(a, b time.Duration) time.Duration {
	return a + time.Duration(s.rng.Int64N(int64(b-a)))
}
func (s *soak) exp(mean time.Duration) time.Duration {
	return time.Duration(s.rng.ExpFloat64() * float64(mean))
}

// ---- the host's lives ----

func (s *soak) startHost() error {
	for attempt := 0; ; attempt++ {
		h, err := s.spawnHost()
		if err == nil {
			s.h = h
			s.rep.Lives++
			s.killLeftovers()
			s.logf("host life %d: pid %d at %s", h.n, h.pid, h.addr)
			s.refresh()
			if h.n == 1 && s.rep.Cgroups == "" {
				s.rep.Cgroups = "none (process groups only)" // until a row names a leaf (refresh)
			}
			s.settle("start of a life") // the baseline of the bounds
			return nil
		}
		if attempt > 0 || !strings.Contains(err.Error(), "lock file is held") {
			return fmt.Errorf("chaos: host would not start: %w", err)
		}
		s.violate("restart refused", "a new host on the same LockFile refused to start: %v", err)
		s.killTagged("so that the next host can take the lock")
	}
}

// killLeftovers kills what a dead life left behind (reported already) once
// the next host runs: every process of the run that does not descend from
// the current host.
func (s *soak) killLeftovers() {
	ps := s.liveOf(scanTagged(s.tag))
	for pid := range ps {
		if rootOf(ps, pid) != s.h.pid {
			signalTagged(pid, unix.SIGKILL, s.tag)
		}
	}
}

func (s *soak) spawnHost() (*host, error) {
	n := s.rep.Lives + 1
	logf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("host-%d.log", n)))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(s.exe)
	cmd.Env = append(os.Environ(), RoleEnv+"=host", envTag+"="+s.tag, envLock+"="+s.lock, envJournal+"="+s.journal,
		envHostLife+"="+strconv.Itoa(n), "GORACE=atexit_sleep_ms=0")
	if s.o.NoCgroups {
		cmd.Env = append(cmd.Env, envNoCg+"=1")
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &host{n: n, cmd: cmd, pid: cmd.Process.Pid, lines: make(chan string, 16), exited: make(chan struct{}), started: time.Now(),
		pending: map[wkey]*inj{}, shortStops: map[wkey]time.Duration{}, seen: map[wkey]bool{}, poolVictims: map[int]string{}}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		cmd.Wait()
		close(h.exited)
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-h.lines:
			switch {
			case !ok:
				<-h.exited
				return nil, fmt.Errorf("host exited before it was ready (%v); see %s", cmd.ProcessState, logf.Name())
			case strings.HasPrefix(l, "addr "):
				h.addr = strings.TrimPrefix(l, "addr ")
			case strings.HasPrefix(l, "error "):
				cmd.Process.Kill()
				<-h.exited
				return nil, errors.New(strings.TrimPrefix(l, "error "))
			case l == "ready":
				return h, nil
			}
		case <-timeout:
			cmd.Process.Kill()
			<-h.exited
			return nil, fmt.Errorf("host not ready after 30 s; see %s", logf.Name())
		}
	}
}

// killHost SIGKILLs the host and times how long its processes take to go:
// with a cgroup per child, each child kills its own leaf on EOF of the
// bridge; with process groups, its group.
func (s *soak) killHost() error {
	h := s.h
	before := len(scanTagged(s.tag))
	s.rep.Injected["host SIGKILL"]++
	t0 := time.Now()
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
	var left map[int]proc
	for {
		left = s.liveOf(scanTagged(s.tag))
		if len(left) == 0 || time.Since(t0) > cleanupBound {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(t0)
	s.readJournal() // what the host wrote before it died
	s.closeLife()
	if len(left) > 0 {
		s.rep.OrphansFound += len(left)
		s.violate("orphan", "after SIGKILL of the host (life %d), %d of its %d processes still alive after %v: %s",
			h.n, len(left), before, cleanupBound, describe(left))
		// Left alive: the next host must start beside them (or refuse,
		// naming them, if they hold the lock).
	} else {
		s.rep.Cleanups = append(s.rep.Cleanups, took)
		s.logf("host life %d killed: %d processes gone in %v", h.n, before, took.Round(time.Microsecond))
	}
	s.h = nil
	return nil
}

// liveOf drops zombies (dead, waiting for init) and the probe.
func (s *soak) liveOf(ps map[int]proc) map[int]proc {
	out := map[int]proc{}
	for pid, p := range ps {
		if p.state == "Z" || s.probe != nil && pid == s.probe.cmd.Process.Pid {
			continue
		}
		out[pid] = p
	}
	return out
}

func describe(ps map[int]proc) string {
	var pids []int
	for pid := range ps {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	var b strings.Builder
	for i, pid := range pids {
		if i == 6 {
			fmt.Fprintf(&b, " and %d more", len(pids)-i)
			break
		}
		p := ps[pid]
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d (%s, ppid %d, %s)", pid, p.comm, p.ppid, p.state)
	}
	return b.String()
}

// killTagged kills every process of the run but the host, so that the soak
// can go on after a violation.
func (s *soak) killTagged(why string) {
	for range 50 {
		left := s.liveOf(scanTagged(s.tag))
		if s.h != nil {
			delete(left, s.h.pid)
		}
		if len(left) == 0 {
			return
		}
		for pid := range left {
			signalTagged(pid, unix.SIGKILL, s.tag)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.logf("could not kill every process %s", why)
}

// shutdownHost asks the host to shut down fast (SIGTERM) and checks that
// Shutdown returned within its 10 s context, without error, and that no
// process of the run is left.
func (s *soak) shutdownHost() {
	h := s.h
	s.final = true
	h.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.After(shutdownTimeout + 3*time.Second)
	line := ""
wait:
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				break wait
			}
			if strings.HasPrefix(l, "shutdown ") {
				line = l
			}
		case <-deadline:
			s.violate("shutdown", "Shutdown(ctx with a %v timeout, Fast) had not returned %v after SIGTERM; killing the host", shutdownTimeout, shutdownTimeout+3*time.Second)
			h.cmd.Process.Kill()
			<-h.exited
			break wait
		}
	}
	<-h.exited
	s.readJournal()
	if f := strings.Fields(line); len(f) >= 3 {
		s.rep.ShutdownMS, _ = strconv.ParseInt(f[1], 10, 64)
		s.rep.ShutdownOK = f[2] == "ok"
		if !s.rep.ShutdownOK {
			s.violate("shutdown", "Shutdown returned an error after %s ms: %s", f[1], strings.Join(f[2:], " "))
		}
	}
	t0 := time.Now()
	for {
		left := s.liveOf(scanTagged(s.tag))
		if len(left) == 0 {
			break
		}
		if time.Since(t0) > 2*time.Second {
			s.rep.OrphansFound += len(left)
			s.violate("orphan", "after the host's shutdown, %d processes of the run are alive: %s", len(left), describe(left))
			s.killTagged("after the shutdown")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.closeLife()
	s.h = nil
}

// cleanupAll leaves nothing of the run behind, whatever happened.
func (s *soak) cleanupAll() {
	if s.probe != nil {
		s.probe.cmd.Process.Kill()
		<-s.probe.done
		s.probe.peer.Close()
		s.probe = nil
	}
	if s.h != nil {
		s.h.cmd.Process.Kill()
		<-s.h.exited
		s.h = nil
	}
	s.killTagged("at the end")
}

func (s *soak) closeLife() {
	h := s.h
	if h == nil {
		return
	}
	if h.baseSet {
		s.rep.LifeFigures = append(s.rep.LifeFigures, fmt.Sprintf("life %d (%v, %d resets): fds %d→%d, memfds %d→%d, goroutines %d→%d, RSS %.1f→%.1f MiB",
			h.n, time.Since(h.started).Round(time.Second), h.resets, h.base.fds, h.peak.fds, h.base.memfds, h.peak.memfds,
			h.base.goroutines, h.peak.goroutines, float64(h.base.rss)/(1<<20), float64(h.peak.rss)/(1<<20)))
	}
}

// ---- observing ----

// poll reads the journal, resumes what is due, and checks /workers against
// /proc.
func (s *soak) poll() {
	s.readJournal()
	now := time.Now()
	for pid, st := range s.stopped {
		if now.After(st.until) {
			signalTagged(pid, unix.SIGCONT, s.tag)
			delete(s.stopped, pid)
		}
	}
	s.checkProbe()
	if s.h == nil || s.h.paused || now.Sub(s.lastScan) < 250*time.Millisecond {
		return
	}
	s.refresh()
	s.checkProcs(now)
}

// refresh reads /workers and scans /proc.
func (s *soak) refresh() {
	s.lastScan = time.Now()
	var rows []bgw.WorkerInfo
	if err := s.getJSON("/workers", &rows); err == nil {
		s.rows, s.rowsAt = rows, time.Now()
		for _, r := range rows {
			if r.Cgroup != "" && s.h != nil {
				s.h.cgroups = true
				s.rep.Cgroups = "a cgroup v2 leaf per child"
			}
		}
	}
	s.ps = scanTagged(s.tag)
}

func (s *soak) getJSON(path string, v any) error {
	resp, err := s.http.Get("http://" + s.h.addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *soak) metrics() (map[string]*dto.MetricFamily, error) {
	resp, err := s.http.Get("http://" + s.h.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// metricSum sums a family's series whose labels match (name=value pairs).
func metricSum(mf map[string]*dto.MetricFamily, name string, match ...string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, m := range f.Metric {
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == match[i] && l.GetValue() == match[i+1] {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

// checkProcs holds /workers and /proc to each other: no row points at a
// process that is dead or not the host's child, every process of the run
// descends from the host (no orphan), and the host leaves no zombie.
func (s *soak) checkProcs(now time.Time) {
	h := s.h
	rowPIDs := map[int]bgw.WorkerInfo{}
	for _, r := range s.rows {
		if r.PID == 0 {
			continue
		}
		rowPIDs[r.PID] = r
		p, ok := s.ps[r.PID]
		if !ok || p.state == "Z" || p.ppid != h.pid {
			f := fmt.Sprintf("row %s#%d points at pid %d", r.Name, r.Incarnation, r.PID)
			if s.persist(f, now) {
				s.rep.DeadRowsFound++
				state := "gone"
				if ok {
					state = fmt.Sprintf("state %s, parent %d", p.state, p.ppid)
				}
				s.violate("row and /proc disagree", "%s, which is %s (the host is %d), for %v", f, state, h.pid, persistFor)
			}
		}
	}
	for pid, p := range s.ps {
		if pid == h.pid || s.probe != nil && pid == s.probe.cmd.Process.Pid {
			continue
		}
		if p.state == "Z" {
			if p.ppid == h.pid && s.persist(fmt.Sprintf("zombie %d", pid), now) {
				s.rep.ZombiesFound++
				s.violate("zombie", "pid %d (%s), a child of the host, has been a zombie for %v", pid, p.comm, persistFor)
			}
			continue
		}
		if root := rootOf(s.ps, pid); root != h.pid {
			if s.persist(fmt.Sprintf("orphan %d", pid), now) {
				s.rep.OrphansFound++
				s.violate("orphan", "pid %d (%s) of the run no longer descends from the host: its parent is %d (%s)",
					pid, p.comm, p.ppid, comm(p.ppid))
			}
		}
	}
}

func comm(pid int) string {
	if p, ok := readProc(pid); ok {
		return p.comm
	}
	return "gone"
}

// readJournal takes the host's new journal lines.
func (s *soak) readJournal() {
	f, err := os.Open(s.journal)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(s.jpos, io.SeekStart); err != nil {
		return
	}
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return // a partial line is read again next time
		}
		s.jpos += int64(len(line))
		var l journalLine
		if json.Unmarshal(line, &l) != nil {
			s.violate("journal", "unreadable journal line %q", line)
			continue
		}
		s.onJournal(l)
	}
}

func isShm(name string) bool { return slices.Contains(shmNames, name) }

func (s *soak) onJournal(l journalLine) {
	h := s.h
	if h == nil {
		return
	}
	switch l.T {
	case "exit":
		h.exitLines++
		s.rep.Exits[l.Reason]++
		k := wkey{l.Name, l.Inc}
		if h.seen[k] {
			s.violate("double exit", "%s#%d exited twice (second: %s)", l.Name, l.Inc, l.Reason)
		}
		h.seen[k] = true
		if isShm(l.Name) && l.Crash {
			h.shmCrashes++
		}
		if h.judging {
			h.pauseExits = append(h.pauseExits, l)
			return
		}
		if in, ok := h.pending[k]; ok {
			delete(h.pending, k)
			if !reasonFits(in.kind, l.Reason, l.Name) {
				s.violate("wrong exit reason", "%s of %s#%d (pid %d) was recorded as %q", in.kind, l.Name, l.Inc, in.pid, l.Reason)
			}
			if l.PID != in.pid {
				s.violate("wrong exit pid", "%s of %s#%d hit pid %d; its exit names pid %d", in.kind, l.Name, l.Inc, in.pid, l.PID)
			}
			return
		}
		if kind, ok := h.poolVictims[l.PID]; ok && l.PID != 0 {
			// An idle child the soak hit had become this worker's process.
			delete(h.poolVictims, l.PID)
			switch {
			case kind == "pool short SIGSTOP" && l.Reason == bgw.ReasonHeartbeat:
				s.violate("liveness", "%s#%d (pid %d), stopped for at most %v, was killed as heartbeat_timeout (timeout %v)",
					l.Name, l.Inc, l.PID, shortStopMax, heartbeatTimeout)
			case kind == "pool short SIGSTOP":
				// ended otherwise (a reset, say): not the stop's doing
			case !reasonFits(strings.Replace(kind, "pool", "worker", 1), l.Reason, l.Name):
				s.violate("wrong exit reason", "%s of pid %d, which had become %s#%d, was recorded as %q", kind, l.PID, l.Name, l.Inc, l.Reason)
				h.poolByExit++
			default:
				h.poolByExit++
			}
			return
		}
		if d, ok := h.shortStops[k]; ok && l.Reason == bgw.ReasonHeartbeat {
			s.violate("liveness", "%s#%d was stopped for only %v and was killed as heartbeat_timeout (timeout %v)", l.Name, l.Inc, d, heartbeatTimeout)
			return
		}
		switch {
		case s.final:
		case l.Name == leaverName && l.Reason == bgw.ReasonExit1:
		case isShm(l.Name) && l.Reason == bgw.ReasonGroupReset:
		default:
			s.violate("unexpected exit", "%s#%d exited as %q with no fault injected into it", l.Name, l.Inc, l.Reason)
		}
	case "segment":
		s.rep.SegmentsChecked++
		if !l.OK {
			s.violate("shared memory", "generation %d: %s", l.Gen, l.Why)
		}
		if h.lastGen != 0 && l.Gen != h.lastGen+1 {
			s.violate("shared memory", "generation %d follows %d", l.Gen, h.lastGen)
		}
		h.lastGen = l.Gen
		if l.Reset {
			h.resets++
			s.rep.Resets++
		}
	case "shm":
		s.violate("shared memory", "%s", l.Why)
	}
}

// reasonFits says whether an exit reason is one an injection can cause:
// its own, or one the runtime gives when it was ending the process anyway.
func reasonFits(kind, reason, name string) bool {
	switch reason {
	case bgw.ReasonGroupReset, bgw.ReasonShutdown:
		return true
	case bgw.ReasonExit1:
		return name == leaverName // it may have left on its own just before
	}
	switch kind {
	case "worker SIGKILL":
		return reason == "signal:KILL"
	case "worker long SIGSTOP":
		return reason == bgw.ReasonHeartbeat
	}
	return false
}

// ---- injecting ----

func (s *soak) inject() {
	type choice struct {
		kind   string
		weight int
	}
	choices := []choice{{"worker SIGKILL", 30}, {"worker short SIGSTOP", 6}, {"worker long SIGSTOP", 6},
		{"pool SIGKILL", 12}, {"pool short SIGSTOP", 3}, {"pool long SIGSTOP", 3}, {"grandchild SIGKILL", 12}}
	total := 0
	for _, c := range choices {
		total += c.weight
	}
	n := s.rng.IntN(total)
	kind := ""
	for _, c := range choices {
		if n -= c.weight; n < 0 {
			kind = c.kind
			break
		}
	}
	h := s.h
	s.refresh()
	switch kind {
	case "worker SIGKILL", "worker short SIGSTOP", "worker long SIGSTOP":
		var cands []bgw.WorkerInfo
		for _, r := range s.rows {
			if r.PID != 0 && (r.State == bgw.Running || r.State == bgw.Starting) && s.stopped[r.PID] == nil {
				if p, ok := s.ps[r.PID]; ok && p.ppid == h.pid && p.state != "Z" {
					cands = append(cands, r)
				}
			}
		}
		if len(cands) == 0 {
			return
		}
		r := cands[s.rng.IntN(len(cands))]
		k := wkey{r.Name, r.Incarnation}
		if h.seen[k] || h.pending[k] != nil {
			return // already ended, or already hit
		}
		switch kind {
		case "worker SIGKILL":
			if signalTagged(r.PID, unix.SIGKILL, s.tag) {
				h.pending[k] = &inj{kind: kind, at: time.Now(), pid: r.PID}
				s.rep.Injected[kind]++
			}
		case "worker short SIGSTOP":
			d := s.between(100*time.Millisecond, shortStopMax)
			if signalTagged(r.PID, unix.SIGSTOP, s.tag) {
				s.stopped[r.PID] = &stopRec{until: time.Now().Add(d), kind: kind, key: k}
				h.shortStops[k] = d
				s.rep.Injected[kind]++
			}
		case "worker long SIGSTOP":
			d := s.between(longStopMin, longStopMax)
			if signalTagged(r.PID, unix.SIGSTOP, s.tag) {
				s.stopped[r.PID] = &stopRec{until: time.Now().Add(d), kind: kind, key: k}
				h.pending[k] = &inj{kind: kind, at: time.Now(), pid: r.PID}
				s.rep.Injected[kind]++
			}
		}
	case "pool SIGKILL", "pool short SIGSTOP", "pool long SIGSTOP":
		rowPIDs := map[int]bool{}
		for _, r := range s.rows {
			rowPIDs[r.PID] = true
		}
		var cands []int
		for pid, p := range s.ps {
			if p.ppid == h.pid && p.state != "Z" && !rowPIDs[pid] && s.stopped[pid] == nil && p.comm != "sleep" {
				cands = append(cands, pid)
			}
		}
		if len(cands) == 0 {
			return
		}
		sort.Ints(cands)
		pid := cands[s.rng.IntN(len(cands))]
		// The postmaster may hand the child to a worker at any moment,
		// even while it is stopped: then its exit, with its pid, accounts
		// for the fault instead of an idle child.
		switch kind {
		case "pool SIGKILL":
			if !signalTagged(pid, unix.SIGKILL, s.tag) {
				return
			}
			h.poolInj++
			h.poolKills++
		default:
			d := s.between(100*time.Millisecond, shortStopMax)
			if kind == "pool long SIGSTOP" {
				d = s.between(longStopMin, longStopMax)
			}
			if !signalTagged(pid, unix.SIGSTOP, s.tag) {
				return
			}
			s.stopped[pid] = &stopRec{until: time.Now().Add(d), kind: kind}
			if kind == "pool long SIGSTOP" {
				h.poolInj++
			}
		}
		h.poolVictims[pid] = kind
		s.rep.Injected[kind]++
	case "grandchild SIGKILL":
		var cands []int
		for pid, p := range s.ps {
			if pp, ok := s.ps[p.ppid]; ok && pp.ppid == h.pid && p.state != "Z" && s.stopped[p.ppid] == nil {
				cands = append(cands, pid)
			}
		}
		if len(cands) == 0 {
			return
		}
		sort.Ints(cands)
		if signalTagged(cands[s.rng.IntN(len(cands))], unix.SIGKILL, s.tag) {
			s.rep.Injected[kind]++
		}
	}
}

// pauseHost stops the host (as Ctrl-Z, a debugger or a VM pause would) and
// continues it: no worker and no idle child may be lost for it, since
// every one of them kept heartbeating meanwhile.
func (s *soak) pauseHost() {
	h := s.h
	long := s.rng.IntN(2) == 0
	d := s.between(200*time.Millisecond, shortStopMax)
	kind := "host short SIGSTOP"
	if long {
		d, kind = s.between(longStopMin, longStopMax), "host long SIGSTOP"
	}
	mf, err := s.metrics()
	if err != nil {
		s.violate("metrics", "before a host pause: %v", err)
		return
	}
	lost0 := metricSum(mf, "bgworker_pool_idle_lost_total")
	h.judging, h.pauseExits = true, nil
	if !signalTagged(h.pid, unix.SIGSTOP, s.tag) {
		return
	}
	h.paused = true
	s.rep.Injected[kind]++
	time.Sleep(d)
	signalTagged(h.pid, unix.SIGCONT, s.tag)
	h.paused = false
	// Give a host that misjudges the pause time to act on it.
	until := time.Now().Add(heartbeatTimeout + time.Second)
	for time.Now().Before(until) {
		s.poll()
		time.Sleep(50 * time.Millisecond)
	}
	lack := s.waitSettled("after a host pause")
	s.readJournal()
	h.judging = false
	for _, l := range h.pauseExits {
		if l.Name == leaverName && l.Reason == bgw.ReasonExit1 || isShm(l.Name) && l.Reason == bgw.ReasonGroupReset {
			continue
		}
		s.violate("host pause", "after the host was stopped for %v, %s#%d was ended as %q although it kept running", d.Round(time.Millisecond), l.Name, l.Inc, l.Reason)
	}
	if mf, err := s.metrics(); err == nil {
		if lost := metricSum(mf, "bgworker_pool_idle_lost_total") - lost0; lost > 0 {
			s.violate("host pause", "after the host was stopped for %v, %v idle pool children were replaced although they kept running", d.Round(time.Millisecond), lost)
			h.poolInj += int(lost) // reported here, not again by the pool account
		}
	}
	s.checkAccounts("after a host pause", lack)
}

// ---- settling ----

// settle waits until every stop is resumed, every injection is accounted
// for, every worker but the leaver is running and the pool is full, then
// checks the host's accounts and resources.
func (s *soak) settle(why string) {
	lack := s.waitSettled(why)
	s.checkAccounts(why, lack)
}

// waitSettled waits for a settled host and returns what is still in motion
// after settleTimeout ("" when settled). Injections still without their
// exit then are violations, and are dropped.
func (s *soak) waitSettled(why string) string {
	h := s.h
	deadline := time.Now().Add(settleTimeout)
	for {
		s.poll()
		lack := s.unsettled()
		if lack == "" {
			return ""
		}
		if time.Now().After(deadline) {
			for k, in := range h.pending {
				s.violate("unaccounted kill", "%s: the %s of %s#%d (pid %d) %v ago is not recorded as an exit",
					why, in.kind, k.name, k.inc, in.pid, time.Since(in.at).Round(time.Millisecond))
				delete(h.pending, k)
			}
			if lack = s.unsettled(); lack != "" {
				s.violate("not settled", "%s: after %v: %s", why, settleTimeout, lack)
			}
			return lack
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkAccounts holds the host's metrics, its journal and /proc to each
// other and its resources to their bounds.
func (s *soak) checkAccounts(why, lack string) {
	h := s.h
	s.refresh()
	n1, r1 := h.exitLines, h.resets
	mf, err := s.metrics()
	if err != nil {
		s.violate("metrics", "%s: %v", why, err)
		return
	}
	s.readJournal() // the leaver may exit meanwhile: the metrics lie between the two reads
	// Every exit the runtime told its subscribers of is in the metrics.
	if m := int(metricSum(mf, "bgworker_worker_exits_total")); m < n1 || m > h.exitLines {
		s.violate("metrics and events disagree", "%s: bgworker_worker_exits_total = %v, the journal has %d exits", why, m, h.exitLines)
	}
	// Every kill or long stop of an idle child cost one idle child, or
	// was the exit of the worker it had become; nothing else costs one.
	lost := int(metricSum(mf, "bgworker_pool_idle_lost_total"))
	if lack == "" {
		if miss := h.poolInj - (lost + h.poolByExit); miss != h.poolMissed {
			s.violate("pool account", "%s: bgworker_pool_idle_lost_total is %d and %d hit pool children exited as a worker's, for %d SIGKILLs and %d long SIGSTOPs of idle children (life %d)",
				why, lost, h.poolByExit, h.poolKills, h.poolInj-h.poolKills, h.n)
			h.poolMissed = miss // each discrepancy is reported once
		}
		clear(h.poolVictims) // all accounted for: a recycled pid must not match later
	}
	if r := int(metricSum(mf, "bgworker_shmem_resets_total")); r < r1 || r > h.resets {
		s.violate("metrics and events disagree", "%s: bgworker_shmem_resets_total = %d, the journal has %d resets", why, r, h.resets)
	}
	if h.resets > h.shmCrashes {
		s.violate("shared memory", "%s: %d resets for %d crashes of shm members", why, h.resets, h.shmCrashes)
	}
	// The host's children that no row names are its idle pool.
	rowPIDs := map[int]bool{}
	for _, r := range s.rows {
		rowPIDs[r.PID] = true
	}
	idle := 0
	for pid, p := range s.ps {
		if p.ppid == h.pid && p.state != "Z" && !rowPIDs[pid] {
			idle++
		}
	}
	if lack == "" && idle != warmPool {
		s.violate("unknown process", "%s: the host has %d children no row names; its pool is %d", why, idle, warmPool)
	}
	r, ok := hostResources(h.pid)
	if !ok {
		return
	}
	r.goroutines = int(metricSum(mf, "go_goroutines"))
	if lack != "" {
		return // bounds hold for a settled host only
	}
	if !h.baseSet {
		h.base, h.peak, h.baseSet = r, r, true
		return
	}
	h.peak.fds, h.peak.memfds = max(h.peak.fds, r.fds), max(h.peak.memfds, r.memfds)
	h.peak.goroutines, h.peak.rss = max(h.peak.goroutines, r.goroutines), max(h.peak.rss, r.rss)
	if h.resets > 0 {
		s.rep.MemfdAfterResets = append(s.rep.MemfdAfterResets, fmt.Sprintf("%d:%d/%d", h.resets, r.memfds, r.fds))
	}
	// memfds are held to their own bound, so that a leaked segment is
	// named as one and not counted twice.
	if r.fds-r.memfds > h.base.fds-h.base.memfds+fdSlack {
		s.violate("fd bound", "%s (life %d, %d resets): the host has %d fds besides memfds, %d when first settled",
			why, h.n, h.resets, r.fds-r.memfds, h.base.fds-h.base.memfds)
	}
	if r.memfds > h.base.memfds {
		s.violate("memfd bound", "%s (life %d): the host holds %d memfds after %d resets, %d when first settled", why, h.n, r.memfds, h.resets, h.base.memfds)
	}
	if r.goroutines > h.base.goroutines+goroutineSlack {
		s.violate("goroutine bound", "%s (life %d): %d goroutines, %d when first settled", why, h.n, r.goroutines, h.base.goroutines)
	}
	if r.rss > max(2*h.base.rss, h.base.rss+rssSlack) {
		s.violate("RSS bound", "%s (life %d): RSS %.1f MiB, %.1f MiB when first settled", why, h.n, float64(r.rss)/(1<<20), float64(h.base.rss)/(1<<20))
	}
}

// unsettled says what is still in motion, or "".
func (s *soak) unsettled() string {
	h := s.h
	var lack []string
	if len(s.stopped) > 0 {
		lack = append(lack, fmt.Sprintf("%d processes stopped", len(s.stopped)))
	}
	for k, in := range h.pending {
		lack = append(lack, fmt.Sprintf("%s of %s#%d (%v ago) not yet an exit", in.kind, k.name, k.inc, time.Since(in.at).Round(time.Millisecond)))
	}
	s.refresh()
	for _, r := range s.rows {
		if r.Name != leaverName && r.State != bgw.Running {
			lack = append(lack, fmt.Sprintf("%s is %s", r.Name, r.State))
		}
	}
	if mf, err := s.metrics(); err != nil {
		lack = append(lack, "metrics: "+err.Error())
	} else if idle := metricSum(mf, "bgworker_pool_idle_children"); idle != warmPool {
		lack = append(lack, fmt.Sprintf("pool %v of %d", idle, warmPool))
	}
	return strings.Join(lack, "; ")
}

// ---- the child-mode probe ----

// startProbe starts the binary in child mode with the marker, a valid
// cookie and a connected socket on fd 3 whose peer never sends Welcome: it
// must give up with a message within 10 s, as it does for any other bad
// start.
func (s *soak) startProbe() {
	mine, theirs, err := bridge.Pair()
	if err != nil {
		s.logf("probe: %v", err)
		return
	}
	cookie := make([]byte, bridge.CookieLen)
	rand.Read(cookie)
	cmd := exec.Command(s.exe)
	cmd.Env = append(os.Environ(), "BGWORKER_CHILD="+hex.EncodeToString(cookie), envTag+"="+s.tag)
	cmd.ExtraFiles = []*os.File{theirs}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		mine.Close()
		theirs.Close()
		s.logf("probe: %v", err)
		return
	}
	theirs.Close()
	p := &probe{cmd: cmd, peer: mine, started: time.Now(), done: make(chan struct{}), stderr: &stderr}
	go func() { cmd.Wait(); p.ended = time.Now(); close(p.done) }()
	s.probe = p
	s.rep.Probes++
	s.rep.Injected["child start without Welcome"]++
}

func (s *soak) checkProbe() {
	p := s.probe
	if p == nil {
		return
	}
	select {
	case <-p.done:
		// Timed to its exit, not to this check, which a host restart
		// can delay.
		took := p.ended.Sub(p.started)
		if took > probeBound {
			s.violate("handshake timeout", "a child started with the marker and a socket that never sends Welcome took %v to give up, more than %v", took.Round(time.Millisecond), probeBound)
		}
		s.rep.ProbeMax = max(s.rep.ProbeMax, took)
		p.peer.Close()
		s.probe = nil
	default:
		if time.Since(p.started) > probeBound {
			s.violate("handshake timeout", "a child started with the marker and a socket that never sends Welcome was still waiting after %v", probeBound)
			p.cmd.Process.Kill()
			<-p.done
			p.peer.Close()
			s.rep.ProbeMax = max(s.rep.ProbeMax, time.Since(p.started))
			s.probe = nil
		}
	}
}

// ---- the report ----

// Failed reports whether any invariant was violated.
func (r *Report) Failed() bool { return len(r.Violations) > 0 }

// Print writes the figures and the violations.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "bgwchaos: %v, seed %d, %s\n", r.Elapsed.Round(time.Second), r.Seed, r.Cgroups)
	fmt.Fprintf(w, "  host lives: %d\n", r.Lives)
	fmt.Fprintf(w, "  injected:\n")
	for _, k := range sortedKeys(r.Injected) {
		fmt.Fprintf(w, "    %-30s %6d\n", k, r.Injected[k])
	}
	fmt.Fprintf(w, "  exits recorded by the host, by reason:\n")
	for _, k := range sortedKeys(r.Exits) {
		fmt.Fprintf(w, "    %-30s %6d\n", k, r.Exits[k])
	}
	fmt.Fprintf(w, "  all-for-one resets: %d; segment generations checked fresh: %d\n", r.Resets, r.SegmentsChecked)
	if len(r.Cleanups) > 0 {
		c := slices.Clone(r.Cleanups)
		slices.Sort(c)
		fmt.Fprintf(w, "  after SIGKILL of the host, its processes gone in: min %v, median %v, max %v (%d kills)\n",
			c[0].Round(time.Microsecond), c[len(c)/2].Round(time.Microsecond), c[len(c)-1].Round(time.Microsecond), len(c))
	}
	for _, l := range r.LifeFigures {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if len(r.MemfdAfterResets) > 0 {
		fmt.Fprintf(w, "  memfds/fds of the settled host by resets so far (resets:memfds/fds): %s\n", strings.Join(r.MemfdAfterResets, " "))
	}
	fmt.Fprintf(w, "  child starts without Welcome: %d, longest to exit %v\n", r.Probes, r.ProbeMax.Round(time.Millisecond))
	fmt.Fprintf(w, "  final fast shutdown: %d ms, ok=%v\n", r.ShutdownMS, r.ShutdownOK)
	fmt.Fprintf(w, "  orphans %d, zombies %d, rows pointing at dead pids %d\n", r.OrphansFound, r.ZombiesFound, r.DeadRowsFound)
	if r.Dir != "" {
		fmt.Fprintf(w, "  host logs and journal: %s\n", r.Dir)
	}
	if !r.Failed() {
		fmt.Fprintf(w, "PASS: no invariant violated\n")
		return
	}
	fmt.Fprintf(w, "FAIL: %d kinds of violation\n", len(r.Violations))
	for _, k := range sortedKeys(r.Violations) {
		fmt.Fprintf(w, "  %s: %d\n", k, r.violationCount[k])
		for _, m := range r.Violations[k] {
			fmt.Fprintf(w, "    - %s\n", m)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
