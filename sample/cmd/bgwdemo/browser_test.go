package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath returns Debian's chromium. Without it the test fails (it
// does not skip): .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found at /usr/bin/chromium or on PATH: install Debian's package with " +
		"`apt-get install -y chromium` (.ci/run does); the browser test skips only under -short")
	return ""
}

// pageRow is a worker's row as the browser shows it.
type pageRow struct {
	Name   string   `json:"name"`
	State  string   `json:"state"`
	PID    string   `json:"pid"`
	Exits  []string `json:"exits"`  // the strip's labels, oldest first
	ExitAt []string `json:"exitAt"` // their data-at
}

const readRows = `Array.from(document.querySelectorAll("#workers tbody tr[data-worker]")).map((tr) => ({
	name: tr.dataset.worker,
	state: tr.querySelector(".c-state").textContent.trim(),
	pid: tr.querySelector(".c-pid").textContent.trim(),
	exits: Array.from(tr.querySelectorAll(".c-exits button.exit")).map((b) => b.textContent),
	exitAt: Array.from(tr.querySelectorAll(".c-exits button.exit")).map((b) => b.dataset.at),
}))`

// TestStatusPageInBrowser loads the status page of a running demo in
// headless chromium: the rows agree with /workers; a worker killed from
// outside goes to crashed or pending and back to running, with a new exit
// in its strip; clicking that exit shows its output's tail; and the page
// is saved as a screenshot in the test's temp dir (and at
// $BGWDEMO_SCREENSHOT when set).
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the demo and chromium")
	}
	chrome := chromiumPath(t)
	bin := buildDemo(t)
	tag := newTag("BGWDEMO_TEST_TAG")
	p := startProcess(t, "bgwdemo", tag, bin, "-duration", "5m", "-crash", "1s", "-shm-crash", "1500ms", "-dynamic", "1", "-http", "127.0.0.1:0")
	base := p.httpBase(t, 30*time.Second)

	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1360, 900),
		chromedp.Env(tag), // its processes are found by the leftovers check
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // kills chromium and waits for it
	})
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	text := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		s, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
		return s
	}
	rows := func() []pageRow {
		t.Helper()
		rs, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageRow](readRows))
		if err != nil {
			t.Fatalf("browser: read the rows: %v", err)
		}
		return rs
	}
	byName := func(rs []pageRow, name string) (pageRow, bool) {
		i := slices.IndexFunc(rs, func(r pageRow) bool { return r.Name == name })
		if i < 0 {
			return pageRow{}, false
		}
		return rs[i], true
	}

	do("load the page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#workers tbody tr[data-worker]`)))
	// The script took over: the stream is open.
	var live string
	if err := poll(time.Now().Add(20*time.Second), p.exited, func() error {
		live = text("read the live marker", chromedp.Text(chromedp.ID("st-live")))
		if !strings.HasPrefix(live, "live") {
			return fmt.Errorf("live marker %q", live)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Every worker of /workers has a row with the same state. The
	// crasher keeps changing, so look until one reading of both agrees.
	var last string
	if err := poll(time.Now().Add(30*time.Second), p.exited, func() error {
		body, err := get(base + "/workers")
		if err != nil {
			return err
		}
		var ws []workerRow
		if err := json.Unmarshal(body, &ws); err != nil {
			return err
		}
		rs := rows()
		if len(rs) != len(ws) {
			last = fmt.Sprintf("%d rows on the page, %d in /workers", len(rs), len(ws))
			return errors.New(last)
		}
		for _, w := range ws {
			r, ok := byName(rs, w.Name)
			if !ok || r.State != w.State {
				last = fmt.Sprintf("%s: page %+v, /workers state %q", w.Name, r, w.State)
				return errors.New(last)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("page rows never matched /workers: %v", err)
	}

	// Kill the ticker from outside, once it has run long enough to have
	// written a tick.
	const victim = "ticker-1"
	var pid int
	if err := poll(time.Now().Add(30*time.Second), p.exited, func() error {
		body, err := get(base + "/workers")
		if err != nil {
			return err
		}
		var ws []struct {
			Name      string    `json:"name"`
			State     string    `json:"state"`
			PID       int       `json:"pid"`
			StartedAt time.Time `json:"started_at"`
		}
		if err := json.Unmarshal(body, &ws); err != nil {
			return err
		}
		for _, w := range ws {
			if w.Name == victim && w.State == "running" && time.Since(w.StartedAt) > 1500*time.Millisecond {
				pid = w.PID
				return nil
			}
		}
		return errors.New(victim + " not running for 1.5s yet")
	}); err != nil {
		t.Fatal(err)
	}
	before, ok := byName(rows(), victim)
	if !ok {
		t.Fatalf("no row for %s", victim)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var seen []string
	if err := poll(time.Now().Add(30*time.Second), p.exited, func() error {
		r, _ := byName(rows(), victim)
		if len(seen) == 0 || seen[len(seen)-1] != r.State {
			seen = append(seen, r.State)
		}
		down := slices.Contains(seen, "crashed") || slices.Contains(seen, "pending")
		if !down || r.State != "running" || r.PID == strconv.Itoa(pid) || len(r.Exits) != len(before.Exits)+1 {
			return fmt.Errorf("%s: states seen %v, now %+v", victim, seen, r)
		}
		if !strings.HasPrefix(r.Exits[len(r.Exits)-1], "signal:KILL") {
			return fmt.Errorf("%s's new exit is %q, want signal:KILL", victim, r.Exits[len(r.Exits)-1])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s went through %v", victim, seen)

	// Click that exit: its output's tail shows, with the ticks it wrote.
	sel := `#workers tr[data-worker="` + victim + `"] .c-exits button.exit:last-of-type`
	do("open the exit", chromedp.Click(chromedp.CSS(sel)), chromedp.WaitVisible(chromedp.ID("stderr")))
	title := text("read the exit's title", chromedp.Text(chromedp.ID("detail-title")))
	tailText := text("read the stderr tail", chromedp.Text(chromedp.ID("stderr")))
	if !strings.HasPrefix(title, victim+": signal:KILL") {
		t.Errorf("detail title %q, want %s: signal:KILL", title, victim)
	}
	if !strings.Contains(tailText, "ticker: tick") {
		t.Errorf("stderr tail of the killed ticker lacks its ticks:\n%s", tailText)
	}
	mono := text("read the tail's font", chromedp.Evaluate[string](`getComputedStyle(document.getElementById("stderr")).fontFamily`))
	if !strings.Contains(mono, "mono") {
		t.Errorf("the stderr block's font is %q, want a monospace one", mono)
	}

	// The state is never colour alone: each state badge has its name as
	// text (checked above) and a symbol drawn before it.
	symbols, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#workers .state")).map((e) => getComputedStyle(e, "::before").content)`))
	if err != nil {
		t.Fatalf("browser: read the state symbols: %v", err)
	}
	for _, s := range symbols {
		if s == "" || s == "none" || s == "normal" {
			t.Errorf("a state badge has no symbol: %q", symbols)
			break
		}
	}

	// For the picture, a moment with the crasher waiting for its restart,
	// when one comes within a few seconds.
	_ = poll(time.Now().Add(5*time.Second), p.exited, func() error {
		if r, _ := byName(rows(), "crasher"); r.State != "pending" {
			return errors.New("crasher " + r.State)
		}
		return nil
	})
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("browser: screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if out := os.Getenv("BGWDEMO_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cancelBrowser()
	cancelAlloc()
	p.stop(t, syscall.SIGINT, 30*time.Second)
	if err := poll(time.Now().Add(10*time.Second), nil, func() error {
		if pids := processesTagged(tag); len(pids) > 0 {
			return fmt.Errorf("processes of the demo or of chromium left: %v", pids)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
