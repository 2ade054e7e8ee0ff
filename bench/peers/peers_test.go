package peers

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain serves the echo plugin when go-plugin re-executes the test
// binary as the plugin, and checks for leaked goroutines otherwise.
func TestMain(m *testing.M) {
	ServePlugin()
	goleak.VerifyTestMain(m)
}

// children returns the pids of this process's children, live or zombie,
// from the parent pid in each /proc/PID/stat.
func children(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	self := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // not a process, or gone
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == self {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

func TestDrive(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("children before Drive: %v", c)
	}
	in := strings.Join([]string{
		"start netrpc", "rtt netrpc 10 5", "kill netrpc",
		"start grpc", "rtt grpc 10 5", "kill grpc",
		"start grpc", // left open: quit must kill it
		"start grpc", // a second client of one kind is refused
		"start udp", "rtt netrpc", "rtt netrpc 0 0", "kill netrpc", "bogus", "",
		"quit", "start netrpc", // after quit: not read
	}, "\n")
	var out strings.Builder
	if err := NewDriver(exe).Drive(strings.NewReader(in), &out); err != nil {
		t.Fatalf("Drive: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []struct {
		prefix string
		nums   int // durations after "ok"; -1 for an error line
	}{
		{"ok", 1}, {"ok", 5}, {"ok", 1},
		{"ok", 1}, {"ok", 5}, {"ok", 1},
		{"ok", 1},
		{"err peers: start grpc: a grpc client is open", -1},
		{`err peers: command "start udp": unknown kind "udp"`, -1},
		{`err peers: command "rtt netrpc": want`, -1},
		{`err peers: command "rtt netrpc 0 0": want rtt KIND WARM N`, -1},
		{"err peers: kill netrpc: no netrpc client open", -1},
		{`err peers: command "bogus": want`, -1},
		{"ok", 0},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d answer lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w.prefix) {
			t.Errorf("answer %d = %q, want prefix %q", i, lines[i], w.prefix)
			continue
		}
		if w.nums < 0 {
			continue
		}
		f := strings.Fields(lines[i])[1:]
		if len(f) != w.nums {
			t.Errorf("answer %d = %q: %d durations, want %d", i, lines[i], len(f), w.nums)
		}
		for _, s := range f {
			if ns, err := strconv.ParseInt(s, 10, 64); err != nil || ns <= 0 {
				t.Errorf("answer %d = %q: duration %q is not a positive integer", i, lines[i], s)
			}
		}
	}
	if c := children(t); len(c) != 0 {
		t.Errorf("children left after Drive: %v", c)
	}
}
