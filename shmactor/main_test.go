package shmactor

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The tests run real processes: the test binary re-executes itself with
// roleEnv naming a helper from helpers, passing the segment's memfd as fd 3.
// A helper reports failure by exiting non-zero with a message on stderr, and
// talks to the test, where it must, in lines on stdout.
const roleEnv = "SHMTEST_ROLE"

var helpers = map[string]func() error{}

var (
	helpersMu   sync.Mutex
	helpersUsed = map[string]bool{}
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		fn := helpers[role]
		if fn == nil {
			fmt.Fprintf(os.Stderr, "shmactor test: unknown helper %q\n", role)
			os.Exit(2)
		}
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "shmactor test helper %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Start the runtime's network poller (an epoll fd and an eventfd, held
	// for the life of the process) before any test counts its fds.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == "" {
		var unused []string
		for name := range helpers {
			if !helpersUsed[name] {
				unused = append(unused, name)
			}
		}
		if len(unused) > 0 {
			sort.Strings(unused)
			fmt.Fprintf(os.Stderr, "shmactor test: helpers never used: %v\n", unused)
			code = 1
		}
	}
	os.Exit(code)
}

// checkLeaks records the process's open fds and, when t ends, checks that
// their number is back to it and that no goroutine was leaked. Call it first,
// so that its check runs after every other cleanup.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	t.Cleanup(func() {
		goleak.VerifyNone(t)
		if after := openFDs(t); after != before {
			t.Errorf("open fds: %d after the test, %d before", after, before)
		}
	})
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// testContext returns a context that ends somewhat before the test's
// deadline, and at most a minute from now.
func testContext(t *testing.T) context.Context {
	deadline := time.Now().Add(time.Minute)
	if d, ok := t.Deadline(); ok && d.Add(-2*time.Second).Before(deadline) {
		deadline = d.Add(-2 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// child is a helper process.
type child struct {
	t      *testing.T
	role   string
	ctx    context.Context
	cmd    *exec.Cmd
	out    *os.File // read end of its stdout
	lines  *bufio.Reader
	stderr bytes.Buffer
	waited bool
	err    error
}

// startChild runs helper role with seg's memfd as fd 3 and env added to its
// environment. The child is killed when ctx ends, and killed and reaped when
// the test ends if the test did not wait for it.
func startChild(ctx context.Context, t *testing.T, role string, seg *Segment, env ...string) *child {
	t.Helper()
	if helpers[role] == nil {
		t.Fatalf("no helper %q", role)
	}
	helpersMu.Lock()
	helpersUsed[role] = true
	helpersMu.Unlock()
	c := &child{t: t, role: role, ctx: ctx}
	c.cmd = exec.CommandContext(ctx, os.Args[0])
	// With -race, a child would sleep a second at exit waiting for late
	// race reports (GORACE atexit_sleep_ms defaults to 1000).
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	c.cmd.Env = append(append(os.Environ(), roleEnv+"="+role, "GORACE="+gorace), env...)
	c.cmd.ExtraFiles = []*os.File{seg.File()}
	c.cmd.Stderr = &c.stderr
	c.cmd.WaitDelay = 5 * time.Second
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.out, c.lines = r, bufio.NewReader(r)
	c.cmd.Stdout = w
	// Stdin is a pipe we never write to: helpers that must outlive their
	// work block reading it, and get EOF if the test process dies.
	if _, err := c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	err = c.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.waited {
			c.cmd.Process.Kill()
			c.wait()
		}
		c.out.Close()
	})
	return c
}

// expectLine reads the next line the child writes and fails the test unless
// it is want.
func (c *child) expectLine(want string) {
	c.t.Helper()
	if dl, ok := c.ctx.Deadline(); ok {
		c.out.SetReadDeadline(dl)
	}
	line, err := c.lines.ReadString('\n')
	if err != nil {
		c.kill()
		c.t.Fatalf("reading from helper %s: %v (wait: %v)", c.role, err, c.wait())
	}
	if got := strings.TrimSuffix(line, "\n"); got != want {
		c.t.Fatalf("helper %s said %q, want %q", c.role, got, want)
	}
}

func (c *child) kill() {
	if err := c.cmd.Process.Signal(os.Kill); err != nil {
		c.t.Errorf("kill helper: %v", err)
	}
}

// wait reaps the child and returns its exit error, with its stderr.
func (c *child) wait() error {
	if c.waited {
		return c.err
	}
	c.waited = true
	if err := c.cmd.Wait(); err != nil {
		c.err = fmt.Errorf("%v; stderr: %s", err, bytes.TrimSpace(c.stderr.Bytes()))
	}
	return c.err
}

// mustSucceed reaps the child and fails the test if it failed.
func (c *child) mustSucceed() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Fatalf("helper %s failed: %v", c.role, err)
	}
}

// helperSegment opens the segment the test passed as fd 3.
func helperSegment() (*Segment, error) {
	f := os.NewFile(3, "shm")
	seg, err := Open(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

func helperContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		panic(fmt.Sprintf("env %s: %v", name, err))
	}
	return n
}

// say writes a line to the test.
func say(line string) { fmt.Fprintln(os.Stdout, line) }

// blockUntilKilled waits for the test to kill us (or to die: stdin EOF).
func blockUntilKilled() { io.Copy(io.Discard, os.Stdin) }

// barrier counts this process in at word and waits until n processes or
// goroutines have done so, so that they start their work together.
func barrier(ctx context.Context, word *atomic.Uint32, n uint32) error {
	word.Add(1)
	for i := 0; word.Load() < n; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("barrier: %d of %d arrived: %w", word.Load(), n, err)
			}
		}
		runtime.Gosched()
	}
	return nil
}
