package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bgProcess is a process the test started and must stop and reap.
type bgProcess struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	exited         chan struct{}
	waitErr        error
}

func startProcess(t *testing.T, name, tag string, bin string, args ...string) *bgProcess {
	t.Helper()
	p := &bgProcess{name: name, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), tag)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		// Reached with the process still running only when the test failed
		// early: kill and reap it.
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stdout (tail):\n%s\n%s stderr (tail):\n%s", name, tail(p.stdout.String(), 30), name, tail(p.stderr.String(), 30))
		}
	})
	return p
}

// httpBase waits for the demo's "http: URL" line and returns the URL.
func (p *bgProcess) httpBase(t *testing.T, within time.Duration) string {
	t.Helper()
	var base string
	if err := poll(time.Now().Add(within), p.exited, func() error {
		m := addrLine.FindStringSubmatch(p.stdout.String())
		if m == nil {
			return errors.New(`no "http: http://ADDR" line on stdout`)
		}
		base = m[1]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return base
}

// stop sends sig and waits for the process to exit by itself.
func (p *bgProcess) stop(t *testing.T, sig os.Signal, within time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		select {
		case <-p.exited:
		default:
			t.Errorf("signal %s: %v", p.name, err)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v of %v", p.name, within, sig)
	}
	if p.waitErr != nil {
		t.Errorf("%s exited with %v", p.name, p.waitErr)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// promQuery asks Prometheus for an instant vector and returns the values
// of its samples.
func promQuery(base, query string) ([]float64, error) {
	body, err := get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", body, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: status %s, type %s: %s", query, r.Status, r.Data.ResultType, r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("sample %v: %w", s.Value, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// TestPrometheusScrapesDemo runs a real Prometheus server (Debian's
// prometheus package) scraping the demo and checks through Prometheus'
// query API that the crasher's restart got there. Both processes are
// stopped by signal and reaped; nothing is left behind.
func TestPrometheusScrapesDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the demo and runs a Prometheus server")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not on PATH (Debian: apt-get install prometheus); end-to-end scrape test not run")
	}
	bin := buildDemo(t)
	dir := t.TempDir()
	tag := newTag("BGWDEMO_PROM_TAG")
	begin := time.Now()

	demo := startProcess(t, "bgwdemo", tag, bin, "-http", "127.0.0.1:0", "-crash", "1s", "-duration", "20s", "-dynamic", "0")
	var demoAddr string
	if err := poll(time.Now().Add(20*time.Second), demo.exited, func() error {
		m := addrLine.FindStringSubmatch(demo.stdout.String())
		if m == nil {
			return errors.New(`no "http: http://ADDR" line on stdout`)
		}
		demoAddr = strings.TrimPrefix(m[1], "http://")
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	promAddr := freePort(t)
	promBase := "http://" + promAddr
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: bgwdemo
    static_configs:
      - targets: [%q]
`, demoAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := startProcess(t, "prometheus", tag, promBin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn",
	)
	if err := poll(time.Now().Add(20*time.Second), prom.exited, func() error {
		_, err := get(promBase + "/-/ready")
		return err
	}); err != nil {
		t.Fatalf("prometheus not ready: %v", err)
	}

	// The crasher panicked (exit2) and was restarted: the demo says so.
	if err := poll(time.Now().Add(15*time.Second), demo.exited, func() error {
		body, err := get("http://" + demoAddr + "/workers")
		if err != nil {
			return err
		}
		var rows []workerRow
		if err := json.Unmarshal(body, &rows); err != nil {
			return err
		}
		for _, w := range rows {
			if w.Name == "crasher" && w.Restarts >= 1 {
				return nil
			}
		}
		return errors.New("crasher not restarted yet")
	}); err != nil {
		t.Fatal(err)
	}

	// And Prometheus scraped it.
	var got []float64
	if err := poll(time.Now().Add(15*time.Second), prom.exited, func() error {
		var err error
		got, err = promQuery(promBase, `bgworker_worker_restarts_total{job="bgwdemo",worker="crasher"}`)
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0] < 1 {
			return fmt.Errorf("bgworker_worker_restarts_total{worker=\"crasher\"} = %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	up, err := promQuery(promBase, `up{job="bgwdemo"}`)
	if err != nil || len(up) != 1 || up[0] != 1 {
		t.Errorf(`up{job="bgwdemo"} = %v, %v; want 1`, up, err)
	}
	crashes, err := promQuery(promBase, `sum(bgworker_worker_crashes_total{job="bgwdemo",worker="crasher",reason="exit2"})`)
	if err != nil || len(crashes) != 1 || crashes[0] < 1 {
		t.Errorf(`crasher exit2 crashes in Prometheus = %v, %v; want >= 1`, crashes, err)
	}
	t.Logf("Prometheus has bgworker_worker_restarts_total{worker=\"crasher\"} = %v after %v", got[0], time.Since(begin).Round(time.Millisecond))

	// Stop both cleanly: SIGINT is the demo's fast shutdown; SIGTERM
	// Prometheus' graceful one. Both exit 0 and are reaped.
	demo.stop(t, syscall.SIGINT, 30*time.Second)
	prom.stop(t, syscall.SIGTERM, 20*time.Second)
	if pids := processesTagged(tag); len(pids) > 0 {
		t.Errorf("processes left after both exited: %v", pids)
	}
	if d := time.Since(begin); d > 40*time.Second {
		t.Errorf("the end-to-end run took %v, want under 40s", d)
	}
}
