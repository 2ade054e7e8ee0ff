package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime"
)

// row is one line of the status table.
type row struct {
	name, typ string
	state     runtime.WorkerState
	pid       int
	restarts  int
	last      *runtime.Exit
	next      time.Time // a restart is scheduled then
	started   time.Time // the current or last run started then; zero = never
}

// eventLine is one line of the live view's recent events.
type eventLine struct {
	at   time.Time
	text string
	bad  bool // a crash, a failure or a reset
}

// recentEvents bounds the events the live view keeps.
const recentEvents = 64

// board keeps the status table up to date from the runtime's events, so it
// can be drawn even while the runtime is shutting down and its status
// requests are refused.
type board struct {
	out   io.Writer
	color bool // stdout is a terminal: colour the state column

	mu    sync.Mutex
	order []string
	rows  map[string]*row
	phase phases.Phase
	shut  phases.ShutdownMode
	dirty chan struct{}

	// footer, when set, returns a line printed under the table (the
	// shared-memory counters); called outside the lock.
	footer func() string
	resets int    // all-for-one resets seen
	gen    uint64 // current segment generation
	recent []eventLine
}

func newBoard(out io.Writer, color bool) *board {
	return &board{out: out, color: color, rows: map[string]*row{}, dirty: make(chan struct{}, 1)}
}

func (b *board) get(name string) *row {
	r := b.rows[name]
	if r == nil {
		r = &row{name: name}
		b.rows[name] = r
		b.order = append(b.order, name)
	}
	return r
}

// event is the runtime subscriber: it runs inside the postmaster's work,
// so it only updates the model and marks the table dirty.
func (b *board) event(e runtime.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.note(e)
	switch e := e.(type) {
	case runtime.PhaseEvent:
		b.phase = e.Phase
		return
	case runtime.ShutdownEvent:
		b.shut = e.Mode
		return
	case runtime.SegmentEvent:
		b.gen = e.Generation
		if e.Reset {
			b.resets++
		}
	case runtime.GroupResetEvent:
		// the rows' events tell the story; the SegmentEvent counts it
	case runtime.WorkerEvent:
		r := b.get(e.Name)
		r.typ, r.state, r.pid = e.Type, e.To, e.PID
		if !e.To.Alive() {
			r.pid = 0
		}
		if e.To == runtime.Starting {
			r.started = e.At
			if e.Incarnation > 1 {
				r.restarts++
			}
		}
		if e.Exit != nil {
			x := *e.Exit
			r.last = &x
		}
		r.next = time.Time{}
		if e.To == runtime.Pending && e.Backoff > 0 {
			r.next = e.At.Add(e.Backoff)
		}
	default:
		return
	}
	b.markDirty()
}

func (b *board) markDirty() {
	select {
	case b.dirty <- struct{}{}:
	default:
	}
}

// note keeps a line for the live view's recent events (under b.mu).
func (b *board) note(e runtime.Event) {
	var l eventLine
	switch e := e.(type) {
	case runtime.WorkerEvent:
		l = eventLine{at: e.At, text: e.Name + " " + e.From.String() + " → " + e.To.String(), bad: e.To == runtime.Crashed || e.To == runtime.Failed}
		if e.Exit != nil {
			l.text += " (" + e.Exit.Reason + ")"
		}
		if e.Backoff > 0 {
			l.text += ", restart in " + round(e.Backoff)
		}
	case runtime.PhaseEvent:
		l = eventLine{at: e.At, text: "phase " + e.Phase.String()}
		switch {
		case e.Reset:
			l.text += " re-entered after the reset"
		case e.Adopted:
			l.text += ", taken over from the previous image"
		}
	case runtime.SegmentEvent:
		l = eventLine{at: e.At, text: fmt.Sprintf("shared memory generation %d built", e.Generation)}
		if e.Adopted {
			l.text = fmt.Sprintf("shared memory generation %d taken over from the previous image", e.Generation)
		}
	case runtime.GroupResetEvent:
		l = eventLine{at: e.At, text: "all-for-one reset: " + e.Cause + " crashed", bad: true}
		if e.Failed {
			l.text = "shared-memory group failed"
		}
	case runtime.ShutdownEvent:
		l = eventLine{at: e.At, text: e.Mode.String() + " shutdown begun"}
		if e.Done {
			l.text = e.Mode.String() + " shutdown done"
		}
	default:
		return
	}
	if len(b.recent) == recentEvents {
		b.recent = append(b.recent[:0], b.recent[1:]...)
	}
	b.recent = append(b.recent, l)
}

// snapshot is the board as the live view draws it.
type snapshot struct {
	rows   []row
	phase  phases.Phase
	shut   phases.ShutdownMode
	gen    uint64
	resets int
	recent []eventLine
}

func (b *board) snapshot() snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := snapshot{phase: b.phase, shut: b.shut, gen: b.gen, resets: b.resets, recent: append([]eventLine(nil), b.recent...)}
	for _, n := range b.order {
		s.rows = append(s.rows, *b.rows[n])
	}
	return s
}

// seed adds the workers that have had no event yet (those still waiting
// for their start phase).
func (b *board) seed(ws []runtime.WorkerInfo) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, w := range ws {
		if _, ok := b.rows[w.Name]; ok {
			continue
		}
		*b.get(w.Name) = fromInfo(w)
	}
	b.markDirty()
}

func fromInfo(w runtime.WorkerInfo) row {
	return row{name: w.Name, typ: w.Type, state: w.State, pid: w.PID, restarts: w.Restarts, last: w.LastExit, next: w.NextStart, started: w.StartedAt}
}

// loop redraws the table when it is dirty, at most once per every.
func (b *board) loop(ctx context.Context, every time.Duration) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.dirty:
		}
		if wait := every - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		b.mu.Lock()
		rows := make([]row, 0, len(b.order))
		for _, n := range b.order {
			rows = append(rows, *b.rows[n])
		}
		title := "phase " + b.phase.String()
		if b.shut != 0 {
			title += ", " + b.shut.String() + " shutdown"
		}
		b.mu.Unlock()
		last = time.Now()
		b.print(title, rows, last)
	}
}

// printFinal prints the table from the runtime's final rows.
func (b *board) printFinal(ws []runtime.WorkerInfo) {
	rows := make([]row, len(ws))
	for i, w := range ws {
		rows[i] = fromInfo(w)
	}
	b.print("final", rows, time.Now())
}

var columns = []string{"NAME", "TYPE", "STATE", "PID", "RESTARTS", "LAST EXIT"}

func (b *board) print(title string, rows []row, now time.Time) {
	cells := make([][]string, 0, len(rows)+1)
	cells = append(cells, columns)
	for _, r := range rows {
		state := r.state.String()
		if r.state == runtime.Pending && !r.next.IsZero() {
			state += " (restart in " + until(r.next, now) + ")"
		}
		pid := "-"
		if r.pid != 0 {
			pid = strconv.Itoa(r.pid)
		}
		last := "-"
		if x := r.last; x != nil {
			last = x.Reason
			if x.Reason == runtime.ReasonExitOther {
				last += "(" + strconv.Itoa(x.Code) + ")"
			}
			last += ", " + ago(x.At, now) + " ago"
		}
		cells = append(cells, []string{r.name, r.typ, state, pid, strconv.Itoa(r.restarts), last})
	}
	width := make([]int, len(columns))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len(s))
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s  %s ---\n", now.Format("15:04:05.000"), title)
	for n, c := range cells {
		for i, s := range c {
			pad := strings.Repeat(" ", width[i]-len(s))
			if i == len(c)-1 {
				pad = ""
			} else {
				pad += "  "
			}
			if b.color && n > 0 && i == 2 {
				s = paint(rows[n-1].state, s)
			}
			sb.WriteString(s + pad)
		}
		sb.WriteByte('\n')
	}
	if b.footer != nil {
		b.mu.Lock()
		gen, resets := b.gen, b.resets
		b.mu.Unlock()
		if gen > 0 {
			fmt.Fprintf(&sb, "shared memory: generation %d, %d all-for-one resets; %s\n", gen, resets, b.footer())
		}
	}
	io.WriteString(b.out, sb.String())
}

// paint colours a state for a terminal.
func paint(s runtime.WorkerState, text string) string {
	code := ""
	switch s {
	case runtime.Running:
		code = "32" // green
	case runtime.Pending, runtime.Starting, runtime.Stopping:
		code = "33" // yellow
	case runtime.Crashed, runtime.Failed:
		code = "1;31" // bold red
	default:
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func until(t, now time.Time) string { return round(t.Sub(now)) }
func ago(t, now time.Time) string   { return round(now.Sub(t)) }

func round(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
