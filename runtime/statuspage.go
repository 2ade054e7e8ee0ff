package runtime

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The status page at GET /: one self-contained HTML file (no external
// fonts, scripts or styles), rendered on the server with one table row per
// worker, so that it reads without its script; the script then keeps it
// live from /events, /workers and /status. It is read-only: it offers no
// action, and the endpoint serves GET only.

//go:embed statuspage.html
var statusPageHTML string

// The page is statuspage.html with the parts the server renders marked by
// named slots, {{name}}, each filled by its function in pageSlots. The
// page is cut at its slots once. It is not a text/template: a template
// calls methods by name through reflection, and a binary that links that
// keeps every exported method of every type it has. Every worker's
// process is this binary re-executed, so that would make each one larger
// and slower to start.
var statusPage = splitPage(statusPageHTML)

// pageSlots fills each slot of the page; each writes HTML, escaping any
// text it takes from the data.
var pageSlots = map[string]func(*strings.Builder, *pageData){
	"state": func(b *strings.Builder, d *pageData) { writeText(b, d.Status.State) },
	"phase": func(b *strings.Builder, d *pageData) { writeText(b, d.Status.Phase.String()) },
	"segment": func(b *strings.Builder, d *pageData) {
		g := d.Status.Segment
		if g.Generation == 0 {
			b.WriteString("none")
			return
		}
		b.WriteString("generation " + strconv.FormatUint(g.Generation, 10) + " · " + pageBytes(g.Bytes))
	},
	"resets": func(b *strings.Builder, d *pageData) {
		b.WriteString(strconv.FormatUint(d.Status.Resets, 10))
		if d.Status.Resetting {
			b.WriteString(" · reset under way")
		}
		if d.Status.GroupFailed {
			b.WriteString(" · group failed")
		}
	},
	"pool": func(b *strings.Builder, d *pageData) {
		p := d.Status.Pool
		fmt.Fprintf(b, "%d idle · %d starting · target %d", p.Idle, p.Starting, p.Target)
	},
	"now": func(b *strings.Builder, d *pageData) { b.WriteString(d.Now.Format("15:04:05")) },
	"error": func(b *strings.Builder, d *pageData) {
		if d.Err != "" {
			b.WriteString(`<p class="err" id="error">`)
			writeText(b, d.Err)
			b.WriteString(`</p>`)
		}
	},
	"table-class": func(b *strings.Builder, d *pageData) {
		if !hasActivity(d.Rows) {
			b.WriteString("no-activity")
		}
	},
	"rows": writePageRows,
}

// pagePart is the page's text up to a slot, and the slot ("" at the end).
type pagePart struct{ text, slot string }

// splitPage cuts the page at its slots. A slot without a function in
// pageSlots is a fault of the embedded page, found when the package is
// initialised (and by its tests), never at serving time.
func splitPage(s string) []pagePart {
	var parts []pagePart
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			return append(parts, pagePart{text: s})
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			panic("runtime: status page: a slot opened at byte " + strconv.Itoa(i) + " is never closed")
		}
		slot := s[i+2 : i+j]
		if pageSlots[slot] == nil {
			panic("runtime: status page: no function fills the slot {{" + slot + "}}")
		}
		parts = append(parts, pagePart{text: s[:i], slot: slot})
		s = s[i+j+2:]
	}
}

// render writes the page for d.
func (d *pageData) render() string {
	var b strings.Builder
	b.Grow(len(statusPageHTML) + 512*len(d.Rows))
	for _, p := range statusPage {
		b.WriteString(p.text)
		if p.slot != "" {
			pageSlots[p.slot](&b, d)
		}
	}
	return b.String()
}

// writePageRows writes the table's body: a row per worker, each with its
// strip of recent exits, or one row that says there are none.
func writePageRows(b *strings.Builder, d *pageData) {
	if len(d.Rows) == 0 {
		b.WriteString("\n" + `<tr class="empty"><td colspan="10" class="none">no workers</td></tr>`)
		return
	}
	for _, r := range d.Rows {
		b.WriteString("\n" + `<tr data-worker="`)
		writeText(b, r.Name)
		b.WriteString(`"><td class="c-name">`)
		writeText(b, r.Name)
		b.WriteString(`</td><td class="c-type">`)
		writeText(b, r.Type)
		b.WriteString(`</td><td class="c-state"><span class="state s-`)
		writeText(b, r.State)
		b.WriteString(`">`)
		writeText(b, r.State)
		cells := [...]struct{ class, text string }{
			{"num c-pid", d.PIDText(r)},
			{"num c-uptime", d.Uptime(r)},
			{"num c-restarts", strconv.Itoa(r.Restarts)},
			{"c-backoff", d.Backoff(r)},
			{"c-activity", d.ActivityText(r)},
			{"c-last", d.LastExitText(r)},
		}
		b.WriteString(`</span></td>`)
		for _, c := range cells {
			b.WriteString(`<td class="` + c.class + `">`)
			writeText(b, c.text)
			b.WriteString(`</td>`)
		}
		b.WriteString(`<td class="c-exits">`)
		if len(r.Exits) == 0 {
			b.WriteString(`<span class="none">none</span>`)
		}
		for _, x := range r.Exits {
			b.WriteString(`<button type="button" class="exit`)
			if x.Crash {
				b.WriteString(` crash`)
			}
			b.WriteString(`" data-at="` + x.At.Format(time.RFC3339Nano) + `" title="`)
			writeText(b, d.ExitTitle(x))
			b.WriteString(`">`)
			writeText(b, d.ExitLabel(x))
			b.WriteString(`</button>`)
		}
		b.WriteString(`</td></tr>`)
	}
}

// writeText writes s escaped for HTML text and for a quoted attribute.
func writeText(b *strings.Builder, s string) { b.WriteString(html.EscapeString(s)) }

// hasActivity reports whether any row has an activity to show; without
// one the page hides the column.
func hasActivity(rows []pageRow) bool {
	for _, r := range rows {
		if r.Activity != "" {
			return true
		}
	}
	return false
}

// pageExit is one exit in a worker's strip.
type pageExit struct {
	Reason string        `json:"reason"`
	Code   int           `json:"code"`
	Signal string        `json:"signal"`
	At     time.Time     `json:"at"`
	Uptime time.Duration `json:"uptime_ns"`
	Crash  bool          `json:"crash"`
	Stderr string        `json:"stderr"`
}

// pageRow is a worker's row as the page shows it. It is decoded from the
// row's JSON (the same as GET /workers), so that the page shows exactly
// what /workers serves.
type pageRow struct {
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	State      string     `json:"state"`
	PID        int        `json:"pid"`
	Restarts   int        `json:"restarts"`
	StartedAt  *time.Time `json:"started_at"`
	NextStart  *time.Time `json:"next_start"`
	Activity   string     `json:"activity"`
	ActivityAt *time.Time `json:"activity_at"`
	LastExit   *pageExit  `json:"last_exit"`
	Exits      []pageExit `json:"exits"`
}

// pageData is what the page renders.
type pageData struct {
	Status Status
	Rows   []pageRow
	Now    time.Time
	Err    string
}

func (d pageData) PIDText(r pageRow) string {
	if r.PID == 0 {
		return "–"
	}
	return strconv.Itoa(r.PID)
}

func (d pageData) Uptime(r pageRow) string {
	switch r.State {
	case "starting", "running", "stopping":
		if r.StartedAt != nil {
			return pageDuration(d.Now.Sub(*r.StartedAt))
		}
	}
	return "–"
}

func (d pageData) Backoff(r pageRow) string {
	if r.NextStart == nil {
		return "–"
	}
	return "in " + pageDuration(r.NextStart.Sub(d.Now))
}

func (d pageData) ActivityText(r pageRow) string {
	if r.Activity == "" {
		return ""
	}
	if r.ActivityAt != nil {
		return r.Activity + " (" + pageDuration(d.Now.Sub(*r.ActivityAt)) + " ago)"
	}
	return r.Activity
}

func (d pageData) LastExitText(r pageRow) string {
	if r.LastExit == nil {
		return "–"
	}
	return exitLabel(*r.LastExit) + " · " + pageDuration(d.Now.Sub(r.LastExit.At)) + " ago"
}

func (d pageData) ExitLabel(x pageExit) string {
	return exitLabel(x) + " · " + pageDuration(x.Uptime)
}

func (d pageData) ExitTitle(x pageExit) string {
	return exitTitle(x)
}

// pageBytes writes a size as the page does: 512 B, 4.0 KiB, 32.0 MiB.
func pageBytes(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return strconv.Itoa(n) + " B"
}

// exitLabel names an exit: its reason, with the code where the reason does
// not say it. The page's script has the same rules.
func exitLabel(x pageExit) string {
	if x.Reason == ReasonExitOther {
		return x.Reason + "(" + strconv.Itoa(x.Code) + ")"
	}
	return x.Reason
}

func exitTitle(x pageExit) string {
	s := x.Reason + ", code " + strconv.Itoa(x.Code)
	if x.Signal != "" {
		s += ", signal " + x.Signal
	}
	return s + ", ran " + pageDuration(x.Uptime) + ", at " + x.At.Format("15:04:05.000")
}

// pageDuration writes a duration as the page does: 340ms, 12.3s, 4m05s,
// 2h03m.
func pageDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(float64(d/(100*time.Millisecond))/10, 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, (d%time.Minute)/time.Second)
	}
	return fmt.Sprintf("%dh%02dm", d/time.Hour, (d%time.Hour)/time.Minute)
}

// pageRows turns the worker rows into the page's rows, through their JSON.
func pageRows(ws []WorkerInfo) ([]pageRow, error) {
	b, err := json.Marshal(ws)
	if err != nil {
		return nil, err
	}
	var rows []pageRow
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// serveStatusPage renders the page from the rows of Workers and Status;
// neither waits for the postmaster.
func (rt *Runtime) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	d := pageData{Status: rt.Status(), Now: time.Now()}
	ws, err := rt.WorkersContext(r.Context())
	if err == nil {
		d.Rows, err = pageRows(ws)
	}
	if err != nil {
		d.Err = err.Error()
	}
	page := d.render()
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Nothing is loaded from elsewhere: the page's own inline style and
	// script, and requests to this endpoint only.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = io.WriteString(w, page)
}
