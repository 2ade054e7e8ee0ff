package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/muesli/termenv"
	"github.com/rivo/uniseg"
	"golang.org/x/term"

	"github.com/bgworker/bgworker/runtime"
)

// The demo's two views. On a terminal, liveView redraws one screen in
// place, like top: a header line (phase, shared-memory generation, URL),
// one row per worker, the events of the last few seconds, and a footer;
// its logs go to a file whose path it prints, and with -v they are shown
// under the events too. Anywhere else (CI, a pipe, a file) plainView
// prints a table per change and logs to stderr.
//
// The terminal is handled by libraries: golang.org/x/term says whether
// stdout is a terminal and how large it is, and termenv writes the
// control sequences (alternate screen, cursor, erase, colours) and honours
// NO_COLOR.

// view shows the demo's state.
type view interface {
	// logs returns where the demo's log lines go, given stderr.
	logs(stderr io.Writer) io.Writer
	// announce tells where the HTTP endpoint listens ("" = none).
	announce(addr string)
	// loop draws until ctx is done.
	loop(ctx context.Context)
	// finish draws the last view from the runtime's final rows.
	finish(final []runtime.WorkerInfo)
}

// newView returns the live view when stdout is a terminal, else the plain
// one.
func newView(stdout io.Writer, b *board, verbose bool) (view, error) {
	f, ok := stdout.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &plainView{b: b, out: stdout}, nil
	}
	lf, err := os.CreateTemp("", "bgwdemo-*.log")
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	v := &liveView{b: b, tty: f, logFile: lf, verbose: verbose, tail: &lineRing{max: 200}, errs: &lineRing{max: 8},
		profile: termenv.NewOutput(f).EnvColorProfile()}
	fmt.Fprintf(f, "logs: %s\n", lf.Name())
	return v, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// plainView prints the table whenever a worker changes, as lines.
type plainView struct {
	b   *board
	out io.Writer
}

func (v *plainView) logs(stderr io.Writer) io.Writer { return stderr }

func (v *plainView) announce(addr string) {
	if addr == "" {
		fmt.Fprintln(v.out, "http: off")
		return
	}
	fmt.Fprintf(v.out, "http: http://%s\n", addr)
}

func (v *plainView) loop(ctx context.Context)          { v.b.loop(ctx, 200*time.Millisecond) }
func (v *plainView) finish(final []runtime.WorkerInfo) { v.b.printFinal(final) }

// liveView redraws the whole screen in place on the alternate screen.
type liveView struct {
	b       *board
	tty     *os.File
	profile termenv.Profile
	logFile *os.File
	verbose bool
	tail    *lineRing // the last log lines, shown with -v
	errs    *lineRing // the last error lines: printed at the end, on the terminal

	mu  sync.Mutex
	url string
	on  bool // the alternate screen is shown
}

// eventWindow is how far back the live view's events go.
const eventWindow = 10 * time.Second

func (v *liveView) logs(io.Writer) io.Writer {
	errs := errorLines{v.errs}
	if v.verbose {
		return io.MultiWriter(v.logFile, v.tail, errs)
	}
	return io.MultiWriter(v.logFile, errs)
}

// errorLines keeps the error records of the demo's text log, so that the
// reason the demo failed (a port in use, say) is on the terminal at the
// end and not only in the log file.
type errorLines struct{ r *lineRing }

func (e errorLines) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if strings.Contains(l, " level=ERROR ") {
			e.r.Write([]byte(l))
		}
	}
	return len(p), nil
}

func (v *liveView) announce(addr string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.url = "http off"
	if addr != "" {
		v.url = "http://" + addr
	}
}

func (v *liveView) loop(ctx context.Context) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	tick := time.NewTicker(500 * time.Millisecond) // ages, uptimes, countdowns
	defer tick.Stop()
	limit := time.NewTimer(0)
	defer limit.Stop()
	v.mu.Lock()
	o := termenv.NewOutput(v.tty, termenv.WithProfile(v.profile))
	o.AltScreen()
	o.HideCursor()
	o.ClearScreen()
	v.on = true
	v.mu.Unlock()
	for {
		v.draw(time.Now())
		// At most one redraw per 100 ms, however many changes come.
		limit.Reset(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-v.b.dirty:
		case <-winch:
		case <-tick.C:
		}
	}
}

func (v *liveView) finish(final []runtime.WorkerInfo) {
	v.mu.Lock()
	if v.on {
		o := termenv.NewOutput(v.tty, termenv.WithProfile(v.profile))
		o.ShowCursor()
		o.ExitAltScreen()
		v.on = false
	}
	v.mu.Unlock()
	v.b.printFinal(final)
	for _, l := range v.errs.lines() {
		fmt.Fprintln(v.tty, l)
	}
	fmt.Fprintf(v.tty, "logs: %s\n", v.logFile.Name())
	v.logFile.Close()
}

// size returns the terminal's columns and rows.
func (v *liveView) size() (int, int) {
	w, h, err := term.GetSize(int(v.tty.Fd()))
	if err != nil || w <= 0 || h <= 0 {
		return 80, 24
	}
	return w, h
}

// draw writes one frame: every row of the screen is positioned, written
// and erased to its end, so nothing scrolls and nothing of the last frame
// is left.
func (v *liveView) draw(now time.Time) {
	w, h := v.size()
	v.mu.Lock()
	url := v.url
	v.mu.Unlock()
	snap := v.b.snapshot()
	footer := ""
	if v.b.footer != nil && snap.gen > 0 {
		footer = v.b.footer()
	}
	var logs []string
	if v.verbose {
		logs = v.tail.lines()
	}
	lines := frame(snap, url, v.logFile.Name(), footer, logs, now, w, h, v.profile)
	var buf bytes.Buffer
	o := termenv.NewOutput(&buf, termenv.WithProfile(v.profile))
	for i := range h {
		o.MoveCursor(i+1, 1)
		if i < len(lines) {
			buf.WriteString(lines[i])
		}
		o.ClearLineRight()
	}
	v.mu.Lock()
	if v.on {
		_, _ = v.tty.Write(buf.Bytes())
	}
	v.mu.Unlock()
}

// seg is a piece of a line with its style.
type seg struct {
	text  string
	style termenv.Style // the zero Style draws plain text
}

// line writes segs cut to width columns.
func line(width int, segs ...seg) string {
	var sb strings.Builder
	left := width
	for _, s := range segs {
		if left <= 0 {
			break
		}
		t := s.text
		if uniseg.StringWidth(t) > left {
			t = cut(t, left)
		}
		left -= uniseg.StringWidth(t)
		if t == "" {
			continue
		}
		sb.WriteString(s.style.Styled(t))
	}
	return sb.String()
}

// cut returns the longest prefix of s, whole graphemes, at most width
// columns wide.
func cut(s string, width int) string {
	g := uniseg.NewGraphemes(s)
	n, end := 0, 0
	for g.Next() {
		w := g.Width()
		if n+w > width {
			break
		}
		n += w
		_, end = g.Positions()
	}
	return s[:end]
}

func pad(s string, n int) string {
	if w := uniseg.StringWidth(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}

// frame lays out one screen of at most h lines, each at most w-1 columns
// wide (the last column stays empty, so no terminal wraps or scrolls).
// The header, the column titles and the footer always show; the rows get
// the space they need; the events (and the logs, with -v) get the rest.
func frame(s snapshot, url, logPath, footer string, logs []string, now time.Time, w, h int, p termenv.Profile) []string {
	width := max(w-1, 1)
	bold := p.String().Bold()
	faint := p.String().Faint()
	red := p.String().Foreground(p.Color("1")).Bold()

	var out []string
	add := func(segs ...seg) {
		if len(out) < h {
			out = append(out, line(width, segs...))
		}
	}

	// Header.
	shm := "no shared memory yet"
	if s.gen > 0 {
		shm = fmt.Sprintf("shm generation %d (%d resets)", s.gen, s.resets)
	}
	title := "phase " + s.phase.String()
	if s.shut != 0 {
		title += ", " + s.shut.String() + " shutdown"
	}
	if url == "" {
		url = "http starting"
	}
	add(seg{"bgwdemo " + now.Format("15:04:05") + "  ", bold}, seg{title, bold}, seg{"  " + shm + "  " + url, termenv.Style{}})
	if h < 3 {
		return out
	}

	// The table.
	cols := []string{"NAME", "TYPE", "STATE", "PID", "UPTIME", "RESTARTS", "BACKOFF", "LAST EXIT"}
	cells := make([][]string, len(s.rows))
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = len(c)
	}
	for i, r := range s.rows {
		pid, up, backoff, last := "-", "-", "-", "-"
		if r.pid != 0 {
			pid = strconv.Itoa(r.pid)
		}
		if r.state.Alive() && !r.started.IsZero() {
			up = ago(r.started, now)
		}
		if r.state == runtime.Pending && !r.next.IsZero() {
			backoff = "in " + until(r.next, now)
		}
		if x := r.last; x != nil {
			last = x.Reason
			if x.Reason == runtime.ReasonExitOther {
				last += "(" + strconv.Itoa(x.Code) + ")"
			}
			last += ", " + ago(x.At, now) + " ago"
		}
		cells[i] = []string{r.name, r.typ, r.state.String(), pid, up, strconv.Itoa(r.restarts), backoff, last}
		for j, c := range cells[i] {
			widths[j] = max(widths[j], uniseg.StringWidth(c))
		}
	}
	var hdr []seg
	for i, c := range cols {
		hdr = append(hdr, seg{pad(c, widths[i]+2), faint})
	}
	add(hdr...)
	room := h - len(out) - 1 // the footer's line stays free
	shown := len(s.rows)
	if shown > room {
		shown = max(room-1, 0) // and one line says how many are left out
	}
	for i := range shown {
		var segs []seg
		for j, c := range cells[i] {
			st := termenv.Style{}
			if j == 2 {
				st = stateStyle(p, s.rows[i].state)
			}
			segs = append(segs, seg{pad(c, widths[j]), st}, seg{"  ", termenv.Style{}})
		}
		add(segs...)
	}
	if shown < len(s.rows) && room > 0 {
		add(seg{fmt.Sprintf("… and %d more workers (the terminal is too small)", len(s.rows)-shown), faint})
	}

	// Events of the last few seconds, newest first; then the logs.
	room = h - len(out) - 1
	if room >= 3 {
		evRoom := room - 2
		if len(logs) > 0 && room >= 8 {
			evRoom = (room - 4) / 2
		}
		add()
		add(seg{fmt.Sprintf("events (last %v)", eventWindow), bold})
		n := 0
		for i := len(s.recent) - 1; i >= 0 && n < evRoom; i-- {
			e := s.recent[i]
			if now.Sub(e.at) > eventWindow {
				break
			}
			st := termenv.Style{}
			if e.bad {
				st = red
			}
			add(seg{e.at.Format("15:04:05.000") + "  ", faint}, seg{e.text, st})
			n++
		}
		if n == 0 {
			add(seg{"none", faint})
		}
		room = h - len(out) - 1
		if len(logs) > 0 && room >= 3 {
			add()
			add(seg{"log (-v)", bold})
			k := room - 2
			if k > len(logs) {
				k = len(logs)
			}
			for _, l := range logs[len(logs)-k:] {
				add(seg{l, faint})
			}
		}
	}

	// Footer, on the last line.
	for len(out) < h-1 {
		out = append(out, "")
	}
	foot := "logs: " + logPath
	if footer != "" {
		foot += "  " + footer
	}
	add(seg{foot + "  ·  Ctrl-C stops", faint})
	return out
}

func stateStyle(p termenv.Profile, s runtime.WorkerState) termenv.Style {
	switch s {
	case runtime.Running:
		return p.String().Foreground(p.Color("2"))
	case runtime.Pending, runtime.Starting, runtime.Stopping:
		return p.String().Foreground(p.Color("3"))
	case runtime.Crashed, runtime.Failed:
		return p.String().Foreground(p.Color("1")).Bold()
	}
	return termenv.Style{}
}

// lineRing keeps the last max lines written to it.
type lineRing struct {
	mu  sync.Mutex
	max int
	buf []string
}

func (r *lineRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if len(r.buf) == r.max {
			r.buf = append(r.buf[:0], r.buf[1:]...)
		}
		r.buf = append(r.buf, l)
	}
	return len(p), nil
}

func (r *lineRing) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.buf...)
}
