package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muesli/termenv"
	"github.com/rivo/uniseg"

	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
)

// tmuxServer is a tmux server of the test's own (its own socket), with
// the test's tag in its environment, so the panes' processes carry it.
type tmuxServer struct {
	t    *testing.T
	bin  string
	sock string
	tag  string
}

func newTmux(t *testing.T, tag string) *tmuxServer {
	t.Helper()
	bin, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal("tmux not found on PATH: install Debian's package with `apt-get install -y tmux` (.ci/run does); " +
			"the terminal test skips only under -short")
	}
	s := &tmuxServer{t: t, bin: bin, sock: filepath.Join(t.TempDir(), "tmux.sock"), tag: tag}
	t.Cleanup(func() { _, _ = s.try("kill-server") })
	return s
}

func (s *tmuxServer) try(args ...string) (string, error) {
	cmd := exec.Command(s.bin, append([]string{"-S", s.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = append(os.Environ(), s.tag)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := s.try(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// screen is one capture of a pane.
type screen struct {
	lines     []string // the visible lines, as many as the pane has rows
	joined    int      // lines once tmux joins wrapped ones (-J)
	alternate bool     // the program's alternate screen is shown
	history   int      // lines scrolled off the top
	w, h      int
}

func (s *tmuxServer) capture(target string) screen {
	s.t.Helper()
	var sc screen
	info := strings.Fields(s.run("display-message", "-p", "-t", target, "#{alternate_on} #{history_size} #{pane_width} #{pane_height}"))
	if len(info) != 4 {
		s.t.Fatalf("tmux display-message: %q", info)
	}
	sc.alternate = info[0] == "1"
	sc.history, _ = strconv.Atoi(info[1])
	sc.w, _ = strconv.Atoi(info[2])
	sc.h, _ = strconv.Atoi(info[3])
	sc.lines = strings.Split(strings.TrimSuffix(s.run("capture-pane", "-p", "-t", target), "\n"), "\n")
	sc.joined = len(strings.Split(strings.TrimSuffix(s.run("capture-pane", "-p", "-J", "-t", target), "\n"), "\n"))
	return sc
}

func (sc screen) String() string { return strings.Join(sc.lines, "\n") }

var (
	liveHeader = regexp.MustCompile(`^bgwdemo \d\d:\d\d:\d\d  phase `)
	liveFooter = regexp.MustCompile(`^logs: \S+/bgwdemo-\d+\.log`)
	logsLine   = regexp.MustCompile(`(?m)^logs: (\S+/bgwdemo-\d+\.log)$`)
)

// checkLive checks one capture of the live view: header on the first
// line, footer on the last, no line wrapped or wider than the pane,
// nothing scrolled, and the row of each worker at the line it had before
// (rowAt, filled on first sight).
func checkLive(t *testing.T, sc screen, rowAt map[string]int) {
	t.Helper()
	if len(sc.lines) > sc.h || sc.joined != len(sc.lines) || sc.history != 0 {
		t.Fatalf("the screen is longer than the %dx%d terminal (%d lines, %d once joined, %d scrolled off):\n%s", sc.w, sc.h, len(sc.lines), sc.joined, sc.history, sc)
	}
	if !liveHeader.MatchString(sc.lines[0]) {
		t.Fatalf("first line is not the header:\n%s", sc)
	}
	if !liveFooter.MatchString(strings.TrimRight(sc.lines[sc.h-1], " ")) {
		t.Fatalf("last line (%d) is not the footer:\n%s", sc.h, sc)
	}
	if !strings.HasPrefix(sc.lines[1], "NAME ") {
		t.Fatalf("second line is not the column titles:\n%s", sc)
	}
	for i, l := range sc.lines {
		if w := uniseg.StringWidth(l); w >= sc.w {
			t.Fatalf("line %d is %d columns wide in a %d-column terminal: %q", i+1, w, sc.w, l)
		}
		if strings.Contains(l, "level=") {
			t.Fatalf("a log line on the screen without -v (line %d): %q", i+1, l)
		}
	}
	for name, at := range rowAt {
		if at < len(sc.lines) && !strings.HasPrefix(sc.lines[at], name+" ") {
			t.Fatalf("%s's row moved from line %d:\n%s", name, at+1, sc)
		}
	}
	for i, l := range sc.lines[2:] {
		name, _, _ := strings.Cut(l, " ")
		if _, ok := rowAt[name]; !ok && slices.Contains(demoWorkers, name) {
			rowAt[name] = i + 2
		}
	}
}

var demoWorkers = []string{"spi_counter", "crasher", "shm_producer", "shm_consumer", "ticker-1"}

// TestLiveView runs the demo in a tmux pane (a real pseudo-terminal) and
// reads the screen as it runs: the table is redrawn in place on the
// alternate screen (header first, footer last, each row at its line,
// the content changing), never longer or wider than the terminal, also
// after the terminal shrinks; the logs go to the file whose path it
// printed; at the end the final table is on the normal screen. With -v
// the log lines are shown on the screen as well.
func TestLiveView(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the demo and runs it under tmux")
	}
	bin := buildDemo(t)
	tag := newTag("BGWDEMO_TEST_TAG")
	tm := newTmux(t, tag)
	const w, h = 100, 16
	cmd := bin + " -duration 7s -http 127.0.0.1:0 -crash 1s -shm-crash 1500ms; echo bgwdemo exited $?"
	tm.run("new-session", "-d", "-x", strconv.Itoa(w), "-y", strconv.Itoa(h), "-s", "demo", "sh", "-c", cmd,
		";", "set-option", "-t", "demo", "remain-on-exit", "on")

	rowAt := map[string]int{}
	var frames []string
	var exited screen
	resized, settled := false, false
	var resizedBy time.Time
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		sc := tm.capture("demo")
		text := sc.String()
		if strings.Contains(text, "bgwdemo exited") {
			exited = sc
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not end:\n%s", text)
		}
		if !sc.alternate { // not yet, or no longer, on the live view
			settled = false
			<-tick.C
			continue
		}
		// A frame is whole once its footer is on the last line: the first
		// one may be read half-written, and after a resize the old frame
		// stays until the demo has redrawn.
		whole := liveHeader.MatchString(sc.lines[0]) && liveFooter.MatchString(sc.lines[len(sc.lines)-1])
		if !settled && whole {
			settled = true
		}
		if settled {
			checkLive(t, sc, rowAt)
			if len(frames) == 0 || frames[len(frames)-1] != text {
				frames = append(frames, text)
			}
			// Once every worker has shown up, shrink the terminal: the
			// view must follow.
			if !resized && len(rowAt) == len(demoWorkers) && len(frames) >= 5 {
				tm.run("resize-window", "-t", "demo", "-x", "72", "-y", "11")
				resized, settled = true, false
				resizedBy = time.Now().Add(10 * time.Second)
				clear(rowAt) // rows may move once the layout changes
			}
		} else if resized && time.Now().After(resizedBy) {
			t.Fatalf("the view was not redrawn for the smaller terminal:\n%s", text)
		}
		<-tick.C
	}
	if len(frames) < 5 {
		t.Fatalf("saw %d distinct frames of the live view, want it redrawn as things change:\n%s", len(frames), strings.Join(frames, "\n-----\n"))
	}
	if !resized {
		t.Fatal("never saw every worker on the live view")
	}
	last := frames[len(frames)-1]
	if got := len(strings.Split(last, "\n")); got != 11 {
		t.Errorf("after the resize the view has %d lines, want 11:\n%s", got, last)
	}
	t.Logf("%d frames; the last live one:\n%s", len(frames), last)

	// After the end: the normal screen, with the final table and the log
	// file's path, and the demo's exit code (reading the lines that the
	// smaller terminal scrolled off too).
	out := tm.run("capture-pane", "-p", "-S", "-", "-t", "demo")
	if exited.alternate {
		t.Errorf("still on the alternate screen after the demo ended:\n%s", out)
	}
	if !strings.Contains(out, "bgwdemo exited 0") {
		t.Errorf("the demo did not exit 0:\n%s", out)
	}
	final := strings.Index(out, "  final ---")
	if final < 0 {
		t.Fatalf("no final table after the live view:\n%s", out)
	}
	for _, name := range demoWorkers {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +\S+ +stopped `).MatchString(out[final:]) {
			t.Errorf("final table lacks %s as stopped:\n%s", name, out)
		}
	}
	m := logsLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no log file named on the screen:\n%s", out)
	}
	t.Cleanup(func() { os.Remove(m[1]) })
	logs, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), `msg="runtime: worker state"`) || !strings.Contains(string(logs), "bgwdemo: -duration elapsed") {
		t.Errorf("the log file lacks the runtime's lines:\n%s", tail(string(logs), 20))
	}

	// -v: the log lines are on the screen too.
	tm.run("new-session", "-d", "-x", "120", "-y", "40", "-s", "verbose", "sh", "-c", bin+" -v -duration 3s -http 127.0.0.1:0; echo bgwdemo exited $?",
		";", "set-option", "-t", "verbose", "remain-on-exit", "on")
	if err := poll(time.Now().Add(30*time.Second), nil, func() error {
		sc := tm.capture("verbose")
		if !sc.alternate {
			return errors.New("not on the live view yet")
		}
		if !slices.ContainsFunc(sc.lines, func(l string) bool { return strings.HasPrefix(l, "log (-v)") }) ||
			!slices.ContainsFunc(sc.lines, func(l string) bool { return strings.Contains(l, "level=INFO") }) {
			return fmt.Errorf("no log lines on the screen:\n%s", sc)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := poll(time.Now().Add(30*time.Second), nil, func() error {
		if out := tm.capture("verbose").String(); !strings.Contains(out, "bgwdemo exited 0") {
			return fmt.Errorf("the -v demo has not exited 0:\n%s", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if m := logsLine.FindStringSubmatch(tm.capture("verbose").String()); m != nil {
		os.Remove(m[1])
	}

	tm.run("kill-server")
	if err := poll(time.Now().Add(10*time.Second), nil, func() error {
		if pids := processesTagged(tag); len(pids) > 0 {
			return fmt.Errorf("processes of the demo or of tmux left: %v", pids)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

// frame never returns more lines than the terminal has, nor a line as
// wide as it, whatever the size; and a terminal too small for every row
// says how many are left out.
func TestFrameFits(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := snapshot{phase: phases.RecoveryFinished, gen: 2, resets: 1}
	for i := range 12 {
		s.rows = append(s.rows, row{name: "worker-" + strconv.Itoa(i), typ: "ticker", state: runtime.WorkerState(1 + i%8), pid: 1000 + i,
			restarts: i, started: now.Add(-time.Minute), last: &runtime.Exit{Reason: runtime.ReasonExitOther, Code: 7, At: now.Add(-time.Second)}})
		s.recent = append(s.recent, eventLine{at: now.Add(-time.Duration(i) * time.Second), text: "worker-" + strconv.Itoa(i) + " running → crashed (exit2)", bad: true})
	}
	logs := []string{"time=x level=INFO msg=one", "time=x level=INFO msg=two"}
	for _, p := range []termenv.Profile{termenv.Ascii, termenv.ANSI} {
		for _, size := range [][2]int{{1, 1}, {10, 2}, {20, 3}, {40, 5}, {80, 10}, {80, 24}, {200, 60}} {
			w, h := size[0], size[1]
			lines := frame(s, "http://127.0.0.1:9464", "/tmp/bgwdemo-1.log", "queue: 1 produced, 1 consumed", logs, now, w, h, p)
			if len(lines) > h {
				t.Errorf("%dx%d: %d lines", w, h, len(lines))
			}
			for i, l := range lines {
				plain := sgr.ReplaceAllString(l, "")
				lines[i] = plain
				if uw := uniseg.StringWidth(plain); uw >= w && w > 1 || uw > 1 && w == 1 {
					t.Errorf("%dx%d: line %d is %d columns: %q", w, h, i, uw, plain)
				}
			}
			if h == 10 && w == 80 {
				if !strings.HasPrefix(lines[len(lines)-2], "… and ") || !strings.HasPrefix(lines[len(lines)-1], "logs: ") {
					t.Errorf("80x10: want a left-out note and the footer at the bottom:\n%s", strings.Join(lines, "\n"))
				}
			}
		}
	}
}

// On a terminal the demo's log goes to a file; a failure that ends it is
// still shown on the screen: with its HTTP port taken, the demo says why
// it could not start.
func TestLiveViewShowsWhyItFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the demo and runs it under tmux")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bin := buildDemo(t)
	tag := newTag("BGWDEMO_TEST_TAG")
	tm := newTmux(t, tag)
	cmd := bin + " -duration 5s -http " + taken.Addr().String() + "; echo bgwdemo exited $?"
	tm.run("new-session", "-d", "-x", "160", "-y", "24", "-s", "demo", "sh", "-c", cmd,
		";", "set-option", "-t", "demo", "remain-on-exit", "on")
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		text := tm.capture("demo").String()
		if strings.Contains(text, "bgwdemo exited") {
			if !strings.Contains(text, "bgwdemo exited 1") || !strings.Contains(text, "level=ERROR") ||
				!strings.Contains(text, "address already in use") {
				t.Fatalf("the screen after a failed start does not say why:\n%s", text)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not end:\n%s", text)
		}
	}
}
