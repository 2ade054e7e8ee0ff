package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	bgw "github.com/bgworker/bgworker/runtime"
)

// Suite is one group of benchmarks. Run measures and returns its results.
// IDs lists, in order, every [Result.ID] Run may return; a result with an
// ID not listed is an error of the suite (see [RunSuite]), so that the list
// is the suite's contract with whoever reads the JSON output.
type Suite struct {
	Name string
	IDs  []string
	Run  func(ctx context.Context) ([]Result, error)
}

var (
	mu     sync.Mutex
	suites = map[string]Suite{}
	roles  = map[string]func() int{}
)

// RegisterSuite adds a suite; called from init in the file that defines it.
// It panics on a duplicate suite name or on an ID that is empty or declared
// twice (by this suite or another).
func RegisterSuite(s Suite) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := suites[s.Name]; dup {
		panic("bench: duplicate suite " + s.Name)
	}
	for _, id := range s.IDs {
		if id == "" {
			panic("bench: suite " + s.Name + " declares an empty result id")
		}
		for _, o := range suites {
			if slices.Contains(o.IDs, id) {
				panic("bench: result id " + id + " declared by suites " + o.Name + " and " + s.Name)
			}
		}
		if n := countOf(s.IDs, id); n > 1 {
			panic("bench: suite " + s.Name + " declares result id " + id + " twice")
		}
	}
	suites[s.Name] = s
}

func countOf(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}

// RunSuite runs s, stamps each result with the suite's name and returns
// the results in the order of s.IDs. A result whose ID s does not declare,
// or that repeats an ID of this run, is dropped from the results and
// reported in the error.
func RunSuite(ctx context.Context, s Suite) ([]Result, error) {
	rs, err := s.Run(ctx)
	var out []Result
	seen := map[string]bool{}
	bad := []error{err}
	for _, r := range rs {
		switch {
		case !slices.Contains(s.IDs, r.ID):
			bad = append(bad, fmt.Errorf("bench: suite %s: result %q has id %q, which the suite does not declare", s.Name, r.Name, r.ID))
		case seen[r.ID]:
			bad = append(bad, fmt.Errorf("bench: suite %s: result id %q returned twice", s.Name, r.ID))
		default:
			seen[r.ID] = true
			r.Suite = s.Name
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b Result) int {
		return slices.Index(s.IDs, a.ID) - slices.Index(s.IDs, b.ID)
	})
	return out, errors.Join(bad...)
}

// Suites returns the registered suites sorted by name.
func Suites() []Suite {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Suite, 0, len(suites))
	for _, s := range suites {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Suite) int { return strings.Compare(a.Name, b.Name) })
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
