package chaos

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestReasonFits(t *testing.T) {
	for _, tc := range []struct {
		kind, reason, name string
		want               bool
	}{
		{"worker SIGKILL", "signal:KILL", "plain-1", true},
		{"worker SIGKILL", "heartbeat_timeout", "plain-1", false},
		{"worker SIGKILL", "exit_other", "plain-1", false},
		{"worker SIGKILL", "group_reset", "shm-0", true},
		{"worker SIGKILL", "shutdown", "plain-1", true},
		{"worker SIGKILL", "exit1", "leaver", true},
		{"worker SIGKILL", "exit1", "plain-1", false},
		{"worker long SIGSTOP", "heartbeat_timeout", "plain-1", true},
		{"worker long SIGSTOP", "signal:KILL", "plain-1", false},
	} {
		if got := reasonFits(tc.kind, tc.reason, tc.name); got != tc.want {
			t.Errorf("reasonFits(%q, %q, %q) = %v, want %v", tc.kind, tc.reason, tc.name, got, tc.want)
		}
	}
}

func TestRootOf(t *testing.T) {
	// host 10 (parent 1, the soak, not of the run) → worker 20 → grandchild 30;
	// orphan 40 (parent 1).
	ps := map[int]proc{10: {pid: 10, ppid: 5}, 20: {pid: 20, ppid: 10}, 30: {pid: 30, ppid: 20}, 40: {pid: 40, ppid: 1}}
	for pid, want := range map[int]int{10: 10, 20: 10, 30: 10, 40: 40, 99: 99} {
		if got := rootOf(ps, pid); got != want {
			t.Errorf("rootOf(%d) = %d, want %d", pid, got, want)
		}
	}
	// A cycle (a recycled pid read mid-change) ends the walk.
	cyc := map[int]proc{1: {pid: 1, ppid: 2}, 2: {pid: 2, ppid: 1}}
	rootOf(cyc, 1)
}

func TestMetricSum(t *testing.T) {
	text := `# TYPE bgworker_worker_exits_total counter
bgworker_worker_exits_total{worker="a",reason="signal:KILL"} 3
bgworker_worker_exits_total{worker="a",reason="exit1"} 2
bgworker_worker_exits_total{worker="b",reason="signal:KILL"} 4
# TYPE go_goroutines gauge
go_goroutines 54
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"bgworker_worker_exits_total", nil, 9},
		{"bgworker_worker_exits_total", []string{"reason", "signal:KILL"}, 7},
		{"bgworker_worker_exits_total", []string{"worker", "a", "reason", "exit1"}, 2},
		{"go_goroutines", nil, 54},
		{"absent", nil, 0},
	} {
		if got := metricSum(mf, tc.name, tc.match...); got != tc.want {
			t.Errorf("metricSum(%s, %v) = %v, want %v", tc.name, tc.match, got, tc.want)
		}
	}
}

func TestReadProc(t *testing.T) {
	p, ok := readProc(1)
	if !ok || p.pid != 1 || p.state == "" || p.comm == "" {
		t.Fatalf("readProc(1) = %+v, %v", p, ok)
	}
	if _, ok := readProc(-1); ok {
		t.Fatal("readProc(-1) succeeded")
	}
}
