package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// The extension hooks: a route added before Start is served, a second
// one or one after Start is refused, decorated rows show in Workers and
// GET /workers, a member row without a process writes its pid as null,
// and a metric registered on Registerer is served at /metrics.
func TestExtensionHooks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rt, err := New(Config{HTTPAddr: "127.0.0.1:0", Workers: []actors.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) })
	if err := rt.HandleHTTP("/ext", hello); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ext", "/workers", "ext", "/a b"} {
		if err := rt.HandleHTTP(p, hello); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("HandleHTTP(%q) = %v, want ErrInvalidConfig", p, err)
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bgworker_ext_test", Help: "A test gauge."})
	rt.Registerer().MustRegister(g)
	g.Set(7)
	rt.DecorateWorkers(func(rows []WorkerInfo) []WorkerInfo {
		return append(rows, WorkerInfo{Name: "far", Type: "far", State: Running, Member: "m2"})
	})
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background(), phases.Fast)
	if err := rt.HandleHTTP("/late", hello); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("HandleHTTP after Start = %v, want ErrAlreadyStarted", err)
	}
	base := "http://" + rt.Addr()
	if code, body := httpDo(t, "GET", base+"/ext"); code != 200 || string(body) != "hello\n" {
		t.Errorf("GET /ext = %d %q", code, body)
	}
	if ws := rt.Workers(); len(ws) != 1 || ws[0].Member != "m2" {
		t.Errorf("Workers() = %+v, want the decorated row", ws)
	}
	code, body := httpDo(t, "GET", base+"/workers")
	var rows []map[string]any
	if err := json.Unmarshal(body, &rows); code != 200 || err != nil || len(rows) != 1 {
		t.Fatalf("GET /workers = %d %s (%v)", code, body, err)
	}
	if pid, ok := rows[0]["pid"]; !ok || pid != nil || rows[0]["member"] != "m2" {
		t.Errorf("member row = %v, want member m2 and pid null", rows[0])
	}
	if _, body := httpDo(t, "GET", base+"/metrics"); !strings.Contains(string(body), "bgworker_ext_test 7") {
		t.Errorf("/metrics lacks the extension's gauge")
	}
	rt.DecorateWorkers(nil)
	if ws := rt.Workers(); len(ws) != 0 {
		t.Errorf("Workers() after DecorateWorkers(nil) = %+v, want none", ws)
	}
	// A local row without a process has a null pid too.
	b, _ := json.Marshal(WorkerInfo{Name: "x"})
	if !strings.Contains(string(b), `"pid":null`) {
		t.Errorf("a row without a process = %s, want a null pid", b)
	}
}
