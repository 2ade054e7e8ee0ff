package runtime

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"
)

// The status page at GET /: one self-contained HTML file (no external
// fonts, scripts or styles), rendered on the server with one table row per
// worker, so that it reads without its script; the script then keeps it
// live from /events, /workers and /status. It is read-only: it offers no
// action, and the endpoint serves GET only.

//go:embed statuspage.html
var statusPageHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{"hasActivity": hasActivity}).Parse(statusPageHTML))

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
// row's JSON (the same as GET /workers), so keys that WorkerInfo gains
// later, such as activity, show up here without a change.
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

// pageData is what the template renders.
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

func (d pageData) Bytes(n int) string {
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
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, d); err != nil {
		http.Error(w, "runtime: status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Nothing is loaded from elsewhere: the page's own inline style and
	// script, and requests to this endpoint only.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}
