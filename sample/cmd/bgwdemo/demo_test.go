package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgworker/bgworker/runtime"
)

// workerRow is a row of GET /workers. runtime.WorkerInfo cannot be
// decoded from its own JSON (WorkerState and Phase marshal as text but
// have no UnmarshalText), so the test reads the fields it needs.
type workerRow struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	State    string `json:"state"`
	Dynamic  bool   `json:"dynamic"`
	Restarts int    `json:"restarts"`
	LastExit *struct {
		Reason string `json:"reason"`
		Code   int    `json:"code"`
	} `json:"last_exit"`
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// poll calls fn every 20ms until it returns nil, the deadline passes or
// stop is closed, and returns fn's last error in the latter cases.
func poll(deadline time.Time, stop <-chan struct{}, fn func() error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("deadline passed: %w", err)
		}
		select {
		case <-stop:
			return fmt.Errorf("the demo exited: %w", err)
		case <-tick.C:
		}
	}
}

func get(url string) ([]byte, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, err
}

// processesTagged returns the pids of live processes whose environment
// holds tag.
func processesTagged(tag string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err != nil {
			continue
		}
		if bytes.Contains(env, []byte(tag)) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			pids = append(pids, pid)
		}
	}
	return pids
}

// raceReports returns the race detector's reports in the demo's stderr,
// from the host and (logged through the host) from its children, one
// string per report.
func raceReports(stderr string) []string {
	var out []string
	blocks := map[string]*strings.Builder{}
	for _, line := range strings.Split(stderr, "\n") {
		key := "host"
		if m := childPid.FindStringSubmatch(line); m != nil {
			key = m[1]
		}
		if strings.Contains(line, "WARNING: DATA RACE") {
			blocks[key] = &strings.Builder{}
		}
		b := blocks[key]
		if b == nil {
			continue
		}
		b.WriteString(line + "\n")
		if strings.Contains(line, "==================") && b.Len() > len(line)+1 {
			out = append(out, b.String())
			delete(blocks, key)
		}
	}
	return out
}

// inSample reports whether a race report has a frame of this module's
// sample/ code (the demo's main package or a sample worker package),
// other than main.main, which calls runtime.Main.
func inSample(report string) bool {
	for _, m := range sampleFrame.FindAllStringSubmatch(report, -1) {
		if !strings.HasPrefix(m[1], "main.main(") {
			return true
		}
	}
	return false
}

var (
	childPid    = regexp.MustCompile(` pid=(\d+) .*source=child`)
	sampleFrame = regexp.MustCompile(`(?m)(?:^|")\s+(github\.com/bgworker/bgworker/sample/\S+|main\.\S+)`)
	addrLine    = regexp.MustCompile(`(?m)^http: (http://\S+)$`)
	restartLine = regexp.MustCompile(`(?m)^bgworker_worker_restarts_total\{worker="crasher"\} (\S+)$`)
	crashLine   = regexp.MustCompile(`(?m)^bgworker_worker_crashes_total\{[^}]*worker="crasher"[^}]*\} (\S+)$`)
)

// TestDemo builds the demo and runs it for a few seconds with a crash
// injected: the crasher must crash (exit2) and be restarted, which the
// HTTP endpoint must show, and the demo must end by itself with exit code
// 0 and leave no process behind.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildDemo(t)
	tag := newTag("BGWDEMO_TEST_TAG")
	var stdout, stderr syncBuffer
	cmd := exec.Command(bin, "-duration", "6s", "-crash", "1s", "-shm-crash", "1500ms", "-dynamic", "1", "-http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), tag)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr (tail):\n%s", tail(stdout.String(), 40), tail(stderr.String(), 40))
		}
	}()

	var base string
	if err := poll(time.Now().Add(20*time.Second), exited, func() error {
		m := addrLine.FindStringSubmatch(stdout.String())
		if m == nil {
			return errors.New(`no "http: http://ADDR" line on stdout`)
		}
		base = m[1]
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// /workers: the crasher crashed with a panic (exit2) and was restarted.
	var rows []workerRow
	if err := poll(time.Now().Add(20*time.Second), exited, func() error {
		body, err := get(base + "/workers")
		if err != nil {
			return err
		}
		rows = nil
		if err := json.Unmarshal(body, &rows); err != nil {
			return fmt.Errorf("decode /workers: %w: %s", err, body)
		}
		for _, w := range rows {
			if w.Name == "crasher" {
				if w.Restarts >= 1 && w.LastExit != nil && w.LastExit.Reason == runtime.ReasonExit2 {
					return nil
				}
				return fmt.Errorf("crasher: restarts %d, last exit %+v", w.Restarts, w.LastExit)
			}
		}
		return fmt.Errorf("no crasher in /workers: %s", body)
	}); err != nil {
		t.Fatal(err)
	}
	names := map[string]workerRow{}
	for _, w := range rows {
		names[w.Name] = w
	}
	if w, ok := names["spi_counter"]; !ok || w.Restarts != 0 {
		t.Errorf("spi_counter missing or restarted: %+v", w)
	}
	if w, ok := names["ticker-1"]; !ok || !w.Dynamic || w.Type != "ticker" {
		t.Errorf("dynamic ticker-1 missing or wrong: %+v", w)
	}

	// The shared-memory producer crashed once: an all-for-one reset took
	// the consumer down with it and both run on generation 2.
	if err := poll(time.Now().Add(20*time.Second), exited, func() error {
		body, err := get(base + "/workers")
		if err != nil {
			return err
		}
		var rs []workerRow
		if err := json.Unmarshal(body, &rs); err != nil {
			return err
		}
		for _, w := range rs {
			if w.Name == "shm_consumer" {
				if w.LastExit != nil && w.LastExit.Reason == runtime.ReasonGroupReset && w.State == runtime.Running.String() {
					return nil
				}
				return fmt.Errorf("shm_consumer: %+v", w)
			}
		}
		return fmt.Errorf("no shm_consumer in /workers")
	}); err != nil {
		t.Fatal(err)
	}

	// /metrics: the restart, the crash and the reset are counted.
	body, err := get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if m := restartLine.FindSubmatch(body); m == nil {
		t.Errorf("no bgworker_worker_restarts_total for the crasher in /metrics")
	} else if v, err := strconv.ParseFloat(string(m[1]), 64); err != nil || v < 1 {
		t.Errorf("bgworker_worker_restarts_total{worker=\"crasher\"} = %s, want >= 1", m[1])
	}
	if crashLine.Find(body) == nil {
		t.Errorf("no bgworker_worker_crashes_total for the crasher in /metrics")
	}
	if m := regexp.MustCompile(`(?m)^bgworker_shmem_resets_total (\S+)$`).FindSubmatch(body); m == nil || string(m[1]) == "0" {
		t.Errorf("bgworker_shmem_resets_total missing or zero: %q", m)
	}

	// The demo ends by itself after -duration, with a final table.
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not exit after -duration")
	}
	if waitErr != nil {
		t.Fatalf("the demo exited with %v", waitErr)
	}
	out := stdout.String()
	final := strings.LastIndex(out, "  final ---")
	if final < 0 {
		t.Fatal("no final table on stdout")
	}
	for _, name := range []string{"crasher", "spi_counter", "ticker-1"} {
		if !regexp.MustCompile(`(?m)^` + name + ` +\S+ +stopped `).MatchString(out[final:]) {
			t.Errorf("final table lacks %s as stopped", name)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("terminal control codes on a stdout that is not a terminal")
	}
	// Under -race the demo is race-built too. A race in sample/ code fails
	// the test; one only in the runtime is reported for its owners.
	for _, r := range raceReports(stderr.String()) {
		if inSample(r) {
			t.Errorf("data race in sample code:\n%s", r)
		} else {
			t.Logf("data race outside sample/ (in the runtime), not failed here:\n%s", r)
		}
	}
	if pids := processesTagged(tag); len(pids) > 0 {
		t.Errorf("processes of the demo left after it exited: %v", pids)
	}
}

func TestRaceReports(t *testing.T) {
	child := func(pid, s string) string {
		return `time=x level=INFO msg="` + s + `" worker=w pid=` + pid + ` truncated=false source=child` + "\n"
	}
	stderr := child("7", "WARNING: DATA RACE") + child("8", "unrelated") +
		child("7", "  github.com/bgworker/bgworker/runtime.(*child).run()") +
		child("7", "  main.main()") + child("7", "==================") +
		"WARNING: DATA RACE\n  main.(*board).event(...)\n==================\n"
	rs := raceReports(stderr)
	if len(rs) != 2 || inSample(rs[0]) || !inSample(rs[1]) || strings.Contains(rs[0], "unrelated") {
		t.Fatalf("reports %q", rs)
	}
}

// buildDemo builds the demo into the test's temp dir (race-built when the
// test is) and returns its path; it skips when no go tool is found.
func buildDemo(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool:", err)
	}
	bin := filepath.Join(t.TempDir(), "bgwdemo")
	args := []string{"build", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	if out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// newTag returns NAME=random, an environment entry that marks the processes
// of one test so that the leftovers scan finds them.
func newTag(name string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return name + "=" + hex.EncodeToString(b)
}
