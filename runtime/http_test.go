package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // registers pprof on http.DefaultServeMux; the runtime's mux must not serve it
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

var testHTTPClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpDo makes one request and returns the status code and body.
func httpDo(t *testing.T, method, url string) (int, []byte) {
	t.Helper()
	code, body, err := tryHTTP(method, url)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return code, body
}

func tryHTTP(method, url string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := testHTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// HTTPAddr "127.0.0.1:0" picks a port and Addr reports it; no
// HTTPAddr means no endpoint.
func TestHTTPLoopbackAddr(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	addr := h.rt.Addr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:<picked port>", addr)
	}
	if code, body := httpDo(t, "GET", "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("GET /healthz on Addr(): %d %s", code, body)
	}
}

func TestHTTPNoAddr(t *testing.T) {
	h := newHarness(t, Config{})
	if a := h.rt.Addr(); a != "" {
		t.Errorf("Addr() with no HTTPAddr = %q, want \"\"", a)
	}
}

// A non-loopback HTTPAddr is refused by Start with
// ErrInvalidConfig unless AllowPublicHTTP.
func TestHTTPPublicAddrRefused(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0", "example.com:0", "127.0.0.1"} {
		rt, err := New(Config{HTTPAddr: addr, Workers: []actors.Spec{}})
		if err != nil {
			t.Fatalf("New(%q): %v", addr, err)
		}
		err = rt.Start(ctx(t))
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Start with HTTPAddr %q: %v, want ErrInvalidConfig", addr, err)
		}
		if a := rt.Addr(); a != "" {
			t.Errorf("HTTPAddr %q: Addr() = %q after a refused Start", addr, a)
		}
		if err := rt.Shutdown(ctx(t), phases.Fast); err != nil {
			t.Errorf("Shutdown after a refused Start: %v", err)
		}
	}
	for _, addr := range []string{"localhost:0", "[::1]:0", "127.0.0.2:0"} {
		if addr == "[::1]:0" {
			if ln, err := net.Listen("tcp", addr); err != nil {
				continue // no IPv6 loopback here
			} else {
				ln.Close()
			}
		}
		rt, err := New(Config{HTTPAddr: addr, Workers: []actors.Spec{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx(t)); err != nil {
			t.Errorf("Start with loopback HTTPAddr %q: %v", addr, err)
		}
		if err := rt.Shutdown(ctx(t), phases.Fast); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	checkNoZombieNoOrphan(t)
}

func TestHTTPAllowPublic(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "0.0.0.0:0", AllowPublicHTTP: true})
	host, port, err := net.SplitHostPort(h.rt.Addr())
	if err != nil || port == "0" || !net.ParseIP(host).IsUnspecified() {
		t.Fatalf("Addr() = %q, want the unspecified address and a picked port", h.rt.Addr())
	}
	if code, _ := httpDo(t, "GET", "http://127.0.0.1:"+port+"/healthz"); code != 200 {
		t.Fatalf("GET /healthz: %d", code)
	}
}

// No pprof on the mux (even with net/http/pprof linked in), GET
// only.
func TestHTTPRoutes(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/debug/pprof/", 404},
		{"GET", "/debug/pprof/heap", 404},
		{"GET", "/debug/pprof/goroutine?debug=2", 404},
		{"GET", "/", 200},
		{"HEAD", "/", 200},
		{"POST", "/", 405},
		{"GET", "/index.html", 404},
		{"GET", "/nope", 404},
		{"GET", "/status", 200},
		{"POST", "/status", 405},
		{"POST", "/events", 405},
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"POST", "/metrics", 405},
		{"PUT", "/metrics", 405},
		{"DELETE", "/workers", 405},
		{"POST", "/workers", 405},
		{"POST", "/readyz", 405},
		{"GET", "/healthz", 200},
	} {
		if code, body := httpDo(t, tc.method, base+tc.path); code != tc.code {
			t.Errorf("%s %s: %d, want %d: %.200s", tc.method, tc.path, code, tc.code, body)
		}
	}
}

// ReadHeaderTimeout is set. A slowloris client that keeps
// dribbling header lines is cut off by the server within the runtime's
// ReadHeaderTimeout (5 s, not configurable) plus a margin.
func TestHTTPSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("takes the 5 s ReadHeaderTimeout")
	}
	const readHeaderTimeout = 5 * time.Second
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	conn, err := net.Dial("tcp", h.rt.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	begin := time.Now()
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Dribble a header line every 200ms; never finish the header.
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				closed <- time.Since(begin)
				return
			}
		}
	}()
	limit := readHeaderTimeout + 2*time.Second*timeoutMult()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			if d < readHeaderTimeout-500*time.Millisecond {
				t.Logf("closed after %v, before the 5 s header timeout", d)
			}
			t.Logf("the server closed the slowloris connection after %v", d)
			return
		case <-deadline:
			t.Fatalf("slowloris connection still open after %v; ReadHeaderTimeout not enforced", limit)
		case <-tick.C:
			_, _ = io.WriteString(conn, "X-Slow-"+itoa(i)+": a\r\n")
		}
	}
}

// workersRows reads GET /workers as generic JSON rows.
func workersRows(t *testing.T, base string) []map[string]any {
	t.Helper()
	code, body := httpDo(t, "GET", base+"/workers")
	if code != 200 {
		t.Fatalf("GET /workers: %d: %s", code, body)
	}
	var rows []map[string]any
	if err := json.Unmarshal(body, &rows); err != nil {
		t.Fatalf("decode /workers: %v: %s", err, body)
	}
	return rows
}

func row(t *testing.T, rows []map[string]any, name string) map[string]any {
	t.Helper()
	for _, r := range rows {
		if r["name"] == name {
			return r
		}
	}
	t.Fatalf("no row %q in /workers: %v", name, rows)
	return nil
}

// GET /workers: the documented keys, and a crash (exit2) and a kill
// (signal:KILL) as last_exit.
func TestHTTPWorkersJSON(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	_, runPID := h.startFault("steady", "run", nil)
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "p", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(time.Minute), Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
		t.Fatal(err)
	}
	_, killPID := h.startFault("k", "run", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
	if err := syscall.Kill(killPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.eventually("p crashed and k killed", func() bool {
		p, k := h.info("p"), h.info("k")
		return p.LastExit != nil && k.LastExit != nil && k.State == Crashed
	})

	rows := workersRows(t, base)
	for _, r := range rows {
		for _, key := range []string{"name", "type", "pid", "state", "phase", "shared_memory", "restarts", "started_at", "last_exit"} {
			if _, ok := r[key]; !ok {
				t.Errorf("row %v lacks %q", r["name"], key)
			}
		}
	}
	s := row(t, rows, "steady")
	if s["type"] != "fault" || s["state"] != "running" || s["pid"] != float64(runPID) || s["shared_memory"] != false ||
		s["restarts"] != float64(0) || s["last_exit"] != nil || s["phase"] != "postmaster_start" {
		t.Errorf("steady row: %v", s)
	}
	if at, ok := s["started_at"].(string); !ok {
		t.Errorf("steady started_at = %v, want a time", s["started_at"])
	} else if _, err := time.Parse(time.RFC3339Nano, at); err != nil {
		t.Errorf("steady started_at %q: %v", at, err)
	}

	p := row(t, rows, "p")
	le, ok := p["last_exit"].(map[string]any)
	if !ok {
		t.Fatalf("p last_exit = %v", p["last_exit"])
	}
	if le["reason"] != ReasonExit2 || le["code"] != float64(2) || le["crash"] != true {
		t.Errorf("p last_exit = %v, want reason exit2, code 2, crash", le)
	}
	if at, _ := le["at"].(string); at == "" {
		t.Errorf("p last_exit.at = %v", le["at"])
	}
	if st := p["state"]; st != "pending" && st != "crashed" {
		t.Errorf("p state %v, want pending (restart in a minute)", st)
	}

	k := row(t, rows, "k")
	le, ok = k["last_exit"].(map[string]any)
	if !ok {
		t.Fatalf("k last_exit = %v", k["last_exit"])
	}
	if le["reason"] != "signal:KILL" || le["signal"] != "KILL" || le["code"] != float64(-1) {
		t.Errorf("k last_exit = %v, want reason signal:KILL, signal KILL, code -1", le)
	}
	if k["state"] != "crashed" || k["pid"] != nil {
		t.Errorf("k row: %v, want crashed with a null pid", k)
	}
}

// /readyz: 503 before recovery_finished, 200 after, 503 once a worker is
// failed; /healthz 200; after Shutdown the server is closed.
func TestHTTPReadyzHealthz(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	if code, body := httpDo(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 503 {
		t.Errorf("/readyz in postmaster_start: %d %s, want 503", code, body)
	}
	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 503 {
		t.Errorf("/readyz in consistent_state: %d %s, want 503", code, body)
	}
	if err := h.rt.Advance(ctx(t), phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 200 {
		t.Errorf("/readyz in recovery_finished: %d %s, want 200", code, body)
	}

	// Restart intensity exceeded: failed; not ready.
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "flop", Type: "fault", Arg: []byte("panic"),
		Restart: actors.Fixed(20 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: 1, Window: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	h.waitState("flop", Failed)
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 503 || !strings.Contains(string(body), "flop") {
		t.Errorf("/readyz with a failed worker: %d %s, want 503 naming flop", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz with a failed worker: %d %s, want 200", code, body)
	}

	addr := h.rt.Addr()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second*timeoutMult())
	defer cancel()
	if err := h.rt.Shutdown(sctx, phases.Fast); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tryHTTP("GET", base+"/healthz"); err == nil {
		t.Error("GET /healthz answered after Shutdown")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Shutdown", addr)
	}
}

// /healthz asks the postmaster itself (Workers no longer does): while it is
// wedged (here in a subscriber that blocks) /healthz says 503, and 200
// again once it moves.
func TestHTTPHealthzWedgedPostmaster(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	wedged, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	unsub := h.rt.Subscribe(func(e Event) {
		if pe, ok := e.(PhaseEvent); ok && pe.Phase == phases.ConsistentState {
			once.Do(func() { close(wedged); <-release })
		}
	})
	defer unsub()
	advanced := make(chan error, 1)
	go func() { advanced <- h.rt.Advance(ctx(t), phases.ConsistentState) }()
	<-wedged
	code, body := httpDo(t, "GET", base+"/healthz")
	close(release)
	if code != 503 || !strings.Contains(string(body), "postmaster not answering") {
		t.Errorf("/healthz with the postmaster wedged: %d %s, want 503", code, body)
	}
	if err := <-advanced; err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz after: %d %s, want 200", code, body)
	}
}

// Scraping /metrics and /workers while a worker restarts over and
// over passes -race; every scrape parses and its worker labels stay
// bounded.
func TestHTTPScrapeDuringRestarts(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	for _, n := range []string{"flap1", "flap2"} {
		if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: n, Type: "fault", Arg: []byte("exit1"), StartAt: phases.PostmasterStart,
			Restart: actors.Fixed(5 * time.Millisecond), Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
			t.Fatal(err)
		}
	}
	h.startFault("steady", "run", nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var scrapes atomic.Int64
	errs := make(chan error, 16)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				path := "/metrics"
				if i == 3 {
					path = "/workers"
				}
				code, body, err := tryHTTP("GET", base+path)
				if err != nil || code != 200 {
					report(errors.New(path + ": " + itoa(code) + " " + errString(err)))
					continue
				}
				scrapes.Add(1)
				if path == "/workers" {
					var rows []map[string]any
					if err := json.Unmarshal(body, &rows); err != nil {
						report(err)
					}
					continue
				}
				p := expfmt.NewTextParser(model.UTF8Validation)
				mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
				if err != nil {
					report(err)
					continue
				}
				for name, mf := range mfs {
					for _, m := range mf.GetMetric() {
						for _, lp := range m.GetLabel() {
							if lp.GetName() == "worker" && lp.GetValue() != "fault" {
								report(errors.New(name + ": worker label " + lp.GetValue()))
							}
						}
					}
				}
			}
		}(i)
	}
	// Scrape until enough restarts and scrapes overlapped.
	restarts := func() int { return h.info("flap1").Restarts + h.info("flap2").Restarts }
	r0 := restarts()
	deadline := time.Now().Add(15 * time.Second * timeoutMult())
	poll := time.NewTicker(20 * time.Millisecond)
	for restarts()-r0 < 10 || scrapes.Load() < 20 {
		if time.Now().After(deadline) {
			t.Errorf("too little overlap: %d restarts, %d scrapes", restarts()-r0, scrapes.Load())
			break
		}
		<-poll.C
	}
	poll.Stop()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d scrapes during %d restarts", scrapes.Load(), restarts()-r0)
	// The last scrape reads the restarts the event log holds.
	_, body := httpDo(t, "GET", base+"/metrics")
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	found := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), `bgworker_worker_restarts_total{worker="fault"} `) {
			found = true
		}
	}
	if !found {
		t.Error(`no bgworker_worker_restarts_total{worker="fault"} in /metrics`)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// docKeys returns the backquoted names in the paragraph of path that
// begins with "`GET /workers` returns".
func docKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "`GET /workers` returns")
	if i < 0 {
		t.Fatalf("%s has no paragraph on GET /workers", path)
	}
	para := text[i:]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	keys := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(para, -1) {
		keys[m[1]] = true
	}
	return keys
}

// The keys of GET /workers, and of its exits, are the ones the README and
// docs/metrics.md list, no more and no fewer.
func TestWorkersKeysDocumented(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	_, pid := h.startFault("documented", "run", nil)
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitState("documented", Crashed)
	h.waitState("documented", Running)
	served := map[string]bool{}
	r := row(t, workersRows(t, "http://"+h.rt.Addr()), "documented")
	for k := range r {
		served[k] = true
	}
	for k := range r["last_exit"].(map[string]any) {
		served[k] = true
	}
	for _, doc := range []string{"../README.md", "../docs/metrics.md"} {
		documented := docKeys(t, doc)
		for k := range served {
			if !documented[k] {
				t.Errorf("%s: /workers serves %q, which it does not list", doc, k)
			}
		}
		for k := range documented {
			if !served[k] && k != "member" { // member: a cluster-scoped worker's, tested in runtime/cluster
				t.Errorf("%s lists %q, which /workers does not serve", doc, k)
			}
		}
	}
}
