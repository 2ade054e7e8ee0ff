package bench

import (
	"context"
	"fmt"
	bgw "github.com/bgworker/bgworker/runtime"
	"io"
	"os"
	"os/exec"
	"sort"
	"sync"
	"time"
)

// Result is one measured line of the comparison table: a measurement, the
// baseline measured beside it in the same run, and their ratio.
type Result struct {
	Name          string  // what was measured, e.g. "cold start p50"
	Value         float64 // the measurement
	Baseline      string  // what it is compared with, e.g. "raw child p50"
	BaselineValue float64 // the baseline, measured in the same run
	Unit          string  // unit of Value and BaselineValue, e.g. "ms", "msg/s"
	Target        string  // the target, e.g. "ratio <= 1.2" or "p50 <= 0.3 ms"; empty for none
	Met           *bool   // whether the target was met; nil when there is no target
}

// Ratio returns Value / BaselineValue, or 0 when there is no baseline.
func (r Result) Ratio() float64 {
	if r.BaselineValue == 0 {
		return 0
	}
	return r.Value / r.BaselineValue
}

// Suite is one group of benchmarks. Run measures and returns its results.
type Suite struct {
	Name string
	Run  func(ctx context.Context) ([]Result, error)
}

var (
	mu     sync.Mutex
	suites = map[string]Suite{}
	roles  = map[string]func() int{}
)

// RegisterSuite adds a suite; called from init in the file that defines it.
func RegisterSuite(s Suite) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := suites[s.Name]; dup {
		panic("bench: duplicate suite " + s.Name)
	}
	suites[s.Name] = s
}

// Suites returns the registered suites sorted by name.
func Suites() []Suite {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Suite, 0, len(suites))
	for _, s := range suites {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// RoleEnv names the environment variable that makes the bench binary run a
// child role (a baseline process) instead of the benchmark command.
const RoleEnv = "BGWBENCH_ROLE"

// RegisterRole adds a child role: when the bench binary is re-executed with
// RoleEnv=name, ChildMain runs fn and exits with its result.
func RegisterRole(name string, fn func() int) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := roles[name]; dup {
		panic("bench: duplicate role " + name)
	}
	roles[name] = fn
}

// ChildMain runs the child role named in RoleEnv, if any, and exits. It
// returns at once in the benchmark command itself. Call it first in main.
func ChildMain() {
	name := os.Getenv(RoleEnv)
	if name == "" {
		return
	}
	mu.Lock()
	fn := roles[name]
	mu.Unlock()
	if fn == nil {
		fmt.Fprintf(os.Stderr, "bench: unknown role %q\n", name)
		os.Exit(2)
	}
	os.Exit(fn())
}

// Print writes results as an aligned table.
func Print(w io.Writer, suite string, rs []Result) {
	for _, r := range rs {
		met := ""
		if r.Met != nil {
			met = "MISSED"
			if *r.Met {
				met = "met"
			}
		}
		ratio := ""
		if r.BaselineValue != 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio())
		}
		fmt.Fprintf(w, "%-10s %-44s %12.4g %-6s | %-34s %12.4g | %8s | %-22s %s\n",
			suite, r.Name, r.Value, r.Unit, r.Baseline, r.BaselineValue, ratio, r.Target, met)
	}
}

// Bool returns a pointer to b, for Result.Met.
func Bool(b bool) *bool { return &b }

// timeChildByte re-executes this binary in the given role with a pipe on
// fd 3, and times exec → the first byte the child writes there. The child
// is reaped untimed (killed if it lingers past 5 s).
func timeChildByte(role string) (time.Duration, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), RoleEnv+"="+role)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, err
	}
	var b [1]byte
	_, rerr := io.ReadFull(r, b[:])
	d := time.Since(t0)
	t := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
	werr := cmd.Wait()
	t.Stop()
	if rerr != nil {
		return 0, fmt.Errorf("child in role %s sent no byte: %w (exit: %v)", role, rerr, werr)
	}
	return d, werr
}

// stopWorker terminates a worker and waits until it has stopped; a stop
// that ends in a crash is an error. An exit 0 recorded as protocol_error is
// let through: runtimes before the ECONNRESET fix reported clean stops so.
func stopWorker(ctx context.Context, h *bgw.Handle) error {
	if err := h.Terminate(ctx); err != nil {
		return err
	}
	ex, err := h.WaitStopped(ctx)
	if err != nil {
		return err
	}
	if ex != nil && ex.Crash && !(ex.Code == 0 && ex.Reason == bgw.ReasonProtocol) {
		return fmt.Errorf("worker %s crashed on stop: %+v", h.Name(), ex)
	}
	return nil
}
