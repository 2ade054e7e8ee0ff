package runtime

import (
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// GET /: one self-contained page under 100 KiB whose HTML, as served and
// before any script runs, has a table row per worker with its name and
// state as text, its exits (with their stderr reachable by the script),
// and the runtime's summary.
func TestStatusPage(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	base := "http://" + h.rt.Addr()
	h.startFault("steady", "run", nil)
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "boom", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	h.eventually("boom waits for its restart", func() bool { return h.info("boom").State == Pending && h.info("boom").LastExit != nil })

	ct, code, body := h.getPage(base + "/")
	if code != 200 {
		t.Fatalf("GET /: %d %s", code, body)
	}
	page := string(body)
	if !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
	if n := len(body); n >= 100<<10 {
		t.Errorf("page is %d bytes, want under 100 KiB", n)
	}
	t.Logf("status page: %d bytes", len(body))
	// Self-contained: nothing loaded from elsewhere.
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<(script|link|img|iframe)[^>]*\s(src|href)=`),
		regexp.MustCompile(`(?i)@import|url\(`),
		regexp.MustCompile(`(?i)https?://`),
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("the page refers to something outside itself: %q", m)
		}
	}
	// No control actions: no form, nothing but GETs of its own endpoint.
	for _, bad := range []string{"<form", `method: "POST"`, "method:'POST'", "DELETE"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q; it is read-only", bad)
		}
	}
	for _, w := range h.rt.Workers() {
		m := regexp.MustCompile(`<tr data-worker="` + regexp.QuoteMeta(w.Name) + `">(.*?)</tr>`).FindStringSubmatch(page)
		if m == nil {
			t.Errorf("no row for %s in the served HTML", w.Name)
			continue
		}
		r := m[1]
		if !strings.Contains(r, `<td class="c-name">`+w.Name+`</td>`) {
			t.Errorf("row %s lacks its name as text: %s", w.Name, r)
		}
		if !strings.Contains(r, `<span class="state s-`+w.State.String()+`">`+w.State.String()+`</span>`) {
			t.Errorf("row %s lacks its state %s as text: %s", w.Name, w.State, r)
		}
	}
	boom := regexp.MustCompile(`<tr data-worker="boom">(.*?)</tr>`).FindStringSubmatch(page)
	if boom == nil || !strings.Contains(boom[1], `class="exit crash"`) || !strings.Contains(boom[1], ">exit2 · ") ||
		!regexp.MustCompile(`<td class="c-backoff">in \d`).MatchString(boom[1]) {
		t.Errorf("boom's row lacks its crash, its backoff: %v", boom)
	}
	// The summary, server-rendered too.
	for _, want := range []string{`<dd id="st-state">running</dd>`, `<dd id="st-phase">postmaster_start</dd>`, `<dd id="st-pool">`, `<dd id="st-segment">none</dd>`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	// No worker has an activity: the column is hidden.
	if !strings.Contains(page, `<table id="workers" class="no-activity">`) {
		t.Error("the activity column is shown with no activity to show")
	}
}

func (h *harness) getPage(url string) (contentType string, code int, body []byte) {
	h.t.Helper()
	resp, err := testHTTPClient.Get(url)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	if _, err := io.Copy(&sb, resp.Body); err != nil {
		h.t.Fatal(err)
	}
	return resp.Header.Get("Content-Type"), resp.StatusCode, []byte(sb.String())
}

// The page's rows come from the rows' JSON: an activity is shown, with its
// age, when a row has one, and nothing when it has none.
func TestStatusPageActivity(t *testing.T) {
	at := time.Now().Add(-3 * time.Second)
	rows, err := pageRows([]WorkerInfo{{Name: "w", State: Running}})
	if err != nil || len(rows) != 1 || rows[0].Activity != "" {
		t.Fatalf("pageRows = %+v, %v", rows, err)
	}
	d := pageData{Now: at.Add(3 * time.Second)}
	if got := d.ActivityText(rows[0]); got != "" {
		t.Errorf("ActivityText without activity = %q, want empty", got)
	}
	r := pageRow{Name: "w", State: "running", Activity: "copying batch 7", ActivityAt: &at}
	if got, want := d.ActivityText(r), "copying batch 7 (3.0s ago)"; got != want {
		t.Errorf("ActivityText = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "0ms"}, {340 * time.Millisecond, "340ms"}, {12345 * time.Millisecond, "12.3s"}, {4*time.Minute + 5*time.Second, "4m05s"}, {2*time.Hour + 3*time.Minute, "2h03m"}} {
		if got := pageDuration(tc.d); got != tc.want {
			t.Errorf("pageDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// Everything the page takes from the rows is escaped: a worker name, type,
// activity or error with markup in it is text on the page, in its cells
// and in its attributes.
func TestStatusPageEscapes(t *testing.T) {
	now := time.Now()
	bad := `<script>alert("x")</script>&'`
	d := pageData{Now: now, Err: bad, Rows: []pageRow{{Name: bad, Type: bad, State: "running", Activity: bad, ActivityAt: &now,
		Exits: []pageExit{{Reason: bad, At: now}}}}}
	page := d.render()
	if strings.Contains(page, bad) || strings.Contains(page, `<script>alert`) {
		t.Fatalf("markup from the rows is on the page unescaped:\n%s", page)
	}
	esc := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#39;`
	for _, want := range []string{`<tr data-worker="` + esc + `">`, `<td class="c-name">` + esc + `</td>`, `<td class="c-type">` + esc + `</td>`,
		`<p class="err" id="error">` + esc + `</p>`, `title="` + esc + `, code 0`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
}
