package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite testdata/ids.golden from the registered suites")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// allIDs returns every registered suite's IDs, suites sorted by name.
func allIDs() []string {
	var ids []string
	for _, s := range Suites() {
		ids = append(ids, s.IDs...)
	}
	return ids
}

// TestIDsStable checks the result IDs every suite declares against
// testdata/ids.golden: IDs are what JSON readers key on, so a change must
// be deliberate (go test ./bench -run TestIDsStable -update).
func TestIDsStable(t *testing.T) {
	got := strings.Join(allIDs(), "\n") + "\n"
	const golden = "testdata/ids.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("declared result IDs differ from %s:\ngot:\n%swant:\n%s", golden, got, want)
	}
}

func TestIDsUniqueAndDotted(t *testing.T) {
	seen := map[string]string{}
	for _, s := range Suites() {
		if len(s.IDs) == 0 {
			t.Errorf("suite %s declares no result IDs", s.Name)
		}
		for _, id := range s.IDs {
			if prev, dup := seen[id]; dup {
				t.Errorf("id %q declared by %s and %s", id, prev, s.Name)
			}
			seen[id] = s.Name
			parts := strings.Split(id, ".")
			if len(parts) < 2 || slices.Contains(parts, "") {
				t.Errorf("id %q of %s is not a dotted name of two or more parts", id, s.Name)
			}
			if id != strings.ToLower(id) || strings.ContainsAny(id, " /") {
				t.Errorf("id %q of %s: want lower case, no spaces or slashes", id, s.Name)
			}
			if !strings.HasPrefix(id, s.Name+".") && !strings.HasPrefix(id, "peer.") {
				t.Errorf("id %q of %s starts with neither the suite's name nor peer.", id, s.Name)
			}
		}
	}
	for _, id := range []string{"bridge.tell", "bridge.request.p50", "pool.warm.p50", "postmaster.storm", "peer.goplugin.netrpc.request.p50"} {
		if _, ok := seen[id]; !ok {
			t.Errorf("id %q is not declared", id)
		}
	}
}

func TestRegisterSuiteRejectsBadIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  []string
		want string
	}{
		{"test-empty", []string{""}, "empty result id"},
		{"test-twice", []string{"test-twice.a", "test-twice.a"}, "twice"},
		{"test-other", []string{"bridge.tell"}, "declared by suites bridge and test-other"},
	} {
		func() {
			defer func() {
				r := recover()
				if s, _ := r.(string); !strings.Contains(s, tc.want) {
					t.Errorf("RegisterSuite(%s, %q) panicked with %v, want %q", tc.name, tc.ids, r, tc.want)
				}
			}()
			RegisterSuite(Suite{Name: tc.name, IDs: tc.ids})
		}()
	}
	for _, s := range Suites() {
		if strings.HasPrefix(s.Name, "test-") {
			t.Errorf("suite %s was registered despite its bad IDs", s.Name)
		}
	}
}

func TestRunSuiteChecksIDs(t *testing.T) {
	s := Suite{Name: "t", IDs: []string{"t.a", "t.b", "t.c"}, Run: func(context.Context) ([]Result, error) {
		return []Result{{ID: "t.c", Value: 3}, {ID: "t.x"}, {ID: "t.a", Value: 1}, {ID: "t.c"}}, errors.New("boom")
	}}
	rs, err := RunSuite(context.Background(), s)
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
		if r.Suite != "t" {
			t.Errorf("result %s: Suite = %q, want t", r.ID, r.Suite)
		}
	}
	if want := []string{"t.a", "t.c"}; !slices.Equal(ids, want) {
		t.Errorf("RunSuite returned ids %q, want %q (declared order, undeclared and repeated ones dropped)", ids, want)
	}
	if rs[1].Value != 3 {
		t.Errorf("t.c kept the repeat, not the first: %+v", rs[1])
	}
	for _, want := range []string{"boom", `id "t.x", which the suite does not declare`, `result id "t.c" returned twice`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RunSuite error = %v, want it to contain %q", err, want)
		}
	}
}

func TestTarget(t *testing.T) {
	r := Result{Value: 2, Baseline: "b", BaselineValue: 4, Unit: "ms"}
	for _, tc := range []struct {
		conds []Cond
		text  string
		met   bool
	}{
		{[]Cond{RatioAtMost(0.5)}, "ratio <= 0.5", true},
		{[]Cond{RatioAtMost(0.49)}, "ratio <= 0.49", false},
		{[]Cond{RatioAtLeast(0.5)}, "ratio >= 0.5", true},
		{[]Cond{RatioAtLeast(0.6)}, "ratio >= 0.6", false},
		{[]Cond{AtMost(2)}, "<= 2 ms", true},
		{[]Cond{AtMost(1.9)}, "<= 1.9 ms", false},
		{[]Cond{AtLeast(5e6)}, ">= 5e+06 ms", false},
		{[]Cond{AtMost(0.15), RatioAtMost(0.05)}, "<= 0.15 ms and ratio <= 0.05", false},
		{[]Cond{AtMost(20), RatioAtMost(0.5)}, "<= 20 ms and ratio <= 0.5", true},
	} {
		r.Target = tc.conds
		if got := r.TargetText(); got != tc.text {
			t.Errorf("TargetText(%v) = %q, want %q", tc.conds, got, tc.text)
		}
		if met, ok := r.Met(); !ok || met != tc.met {
			t.Errorf("Met(%v) = %v, %v; want %v, true", tc.conds, met, ok, tc.met)
		}
	}
	r.Target = nil
	if _, ok := r.Met(); ok {
		t.Error("Met of a result without target: ok = true")
	}
	noBase := Result{Value: 1, Target: []Cond{RatioAtMost(100)}}
	if met, ok := noBase.Met(); !ok || met {
		t.Errorf("a ratio target without a baseline: Met = %v, %v; want false, true", met, ok)
	}
	nan := Result{Value: math.NaN(), Target: []Cond{AtMost(1)}}
	if met, _ := nan.Met(); met {
		t.Error("a NaN value met a target")
	}
}

// jsonFields are the keys of every object of the JSON output, in order.
var jsonFields = []string{"id", "suite", "name", "value", "unit", "baseline_name", "baseline", "ratio", "target", "met"}

func TestWriteJSONShape(t *testing.T) {
	rs := []Result{
		{ID: "bridge.request.p50", Suite: "bridge", Name: "request p50", Value: 30, Unit: "µs",
			Baseline: "raw ping-pong p50", BaselineValue: 20, Target: []Cond{RatioAtMost(1.3)}},
		{ID: "peer.goplugin.netrpc.request.p50", Suite: "bridge", Name: "request p50", Value: 30, Unit: "µs",
			Baseline: "go-plugin net/rpc", BaselineValue: 100, Target: []Cond{RatioAtMost(peerRequestRatio)}},
		{ID: "postmaster.cold.p50", Suite: "postmaster", Name: "cold p50", Value: 3.5, Unit: "ms"},
		{ID: "postmaster.storm.host_rss_per_worker", Suite: "postmaster", Name: "rss", Value: 37, Unit: "KiB",
			Target: []Cond{AtMost(64)}},
		{ID: "shm.queue", Suite: "shm", Name: "zero baseline", Value: 1, Unit: "B/s", Baseline: "copy", BaselineValue: 0},
		{ID: "shm.atomic", Suite: "shm", Name: "nan", Value: math.NaN(), Unit: "ops/s", Baseline: "x", BaselineValue: 2,
			Target: []Cond{RatioAtLeast(0.9)}},
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, rs); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, buf.String())
	}
	if len(raw) != len(rs) {
		t.Fatalf("%d objects, want %d", len(raw), len(rs))
	}
	for i, m := range raw {
		// Keys in order, each present (null or not).
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.Token() // {
		var keys []string
		for dec.More() {
			k, _ := dec.Token()
			keys = append(keys, k.(string))
			var skip json.RawMessage
			dec.Decode(&skip)
		}
		if !slices.Equal(keys, jsonFields) {
			t.Errorf("object %d keys = %q, want %q", i, keys, jsonFields)
		}
	}
	var got []JSONResult
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	f := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	// 0: a measured baseline and a ratio target.
	g := got[0]
	if g.ID != "bridge.request.p50" || g.Suite != "bridge" || g.Name != "request p50" || g.Unit != "µs" ||
		f(g.Value) != 30.0 || g.BaselineName == nil || *g.BaselineName != "raw ping-pong p50" || f(g.Baseline) != 20.0 {
		t.Errorf("object 0 = %+v", g)
	}
	for i, g := range got {
		if g.Value != nil && g.Baseline != nil && *g.Baseline != 0 {
			if g.Ratio == nil || math.Abs(*g.Ratio - *g.Value / *g.Baseline) > 1e-12 {
				t.Errorf("object %d (%s): ratio = %v, want value ÷ baseline = %v", i, g.ID, f(g.Ratio), *g.Value / *g.Baseline)
			}
		} else if g.Ratio != nil {
			t.Errorf("object %d (%s): ratio %v without a value and a non-zero baseline", i, g.ID, *g.Ratio)
		}
		if (g.Target == nil) != (g.Met == nil) {
			t.Errorf("object %d (%s): target %v and met %v: both or neither", i, g.ID, g.Target, g.Met)
		}
	}
	if *got[0].Target != "ratio <= 1.3" || *got[0].Met {
		t.Errorf("object 0: target %q met %v, want ratio <= 1.3, false (1.5)", *got[0].Target, *got[0].Met)
	}
	if *got[1].Target != "ratio <= 0.33" || !*got[1].Met || *got[1].Ratio != 0.3 {
		t.Errorf("object 1: target %q met %v ratio %v, want ratio <= 0.33, true, 0.3", *got[1].Target, *got[1].Met, *got[1].Ratio)
	}
	// 2: no baseline, no target: all null.
	if g := got[2]; g.BaselineName != nil || g.Baseline != nil || g.Ratio != nil || g.Target != nil || g.Met != nil {
		t.Errorf("object 2 (no baseline, no target) = %+v, want nulls", g)
	}
	// 3: a target on the value, no baseline.
	if g := got[3]; g.Target == nil || *g.Target != "<= 64 KiB" || !*g.Met || g.Ratio != nil {
		t.Errorf("object 3 = %+v, want target <= 64 KiB met, no ratio", g)
	}
	// 4: a zero baseline has no ratio.
	if g := got[4]; g.Baseline == nil || *g.Baseline != 0 || g.Ratio != nil {
		t.Errorf("object 4 (zero baseline) = %+v, want baseline 0, ratio null", g)
	}
	// 5: a NaN value is null, not an encoding error, and misses its target.
	if g := got[5]; g.Value != nil || g.Ratio != nil || g.Met == nil || *g.Met {
		t.Errorf("object 5 (NaN) = %+v, want value and ratio null, met false", g)
	}
}

func TestPrintTable(t *testing.T) {
	var buf bytes.Buffer
	PrintHeader(&buf)
	Print(&buf, []Result{{ID: "pool.warm.p50", Name: "warm p50", Value: 0.2, Unit: "ms", Baseline: "cold", BaselineValue: 4,
		Target: []Cond{AtMost(0.15), RatioAtMost(0.05)}}})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"pool.warm.p50", "warm p50", "0.05x", "<= 0.15 ms and ratio <= 0.05", "MISSED"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
}

func TestParsePeerAnswer(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []time.Duration
		err  string
	}{
		{"ok 5331553\n", []time.Duration{5331553}, ""},
		{"ok 1 2 3\n", []time.Duration{1, 2, 3}, ""},
		{"ok\n", []time.Duration{}, ""},
		{"err peers: start netrpc: boom\n", nil, "bgwpeers: peers: start netrpc: boom"},
		{"\n", nil, "empty answer"},
		{"hello 1\n", nil, "neither ok nor err"},
		{"ok 12x\n", nil, `"12x" is not a duration`},
		{"ok -5\n", nil, `"-5" is not a duration`},
	} {
		got, err := parsePeerAnswer(tc.line)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parsePeerAnswer(%q) error = %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parsePeerAnswer(%q) = %v, %v; want %v", tc.line, got, err, tc.want)
		}
	}
}

func TestPeerStderrDropsYamuxNoise(t *testing.T) {
	var out bytes.Buffer
	p := &peerStderr{w: &out}
	for _, chunk := range []string{"first li", "ne\n2026/12/01 " + peerYamuxNoise + ": broken pipe\nlast", " line\n"} {
		if n, err := p.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if got, want := out.String(), "first line\nlast line\n"; got != want || p.dropped != 1 {
		t.Errorf("passed %q, dropped %d; want %q, 1", got, p.dropped, want)
	}
}
