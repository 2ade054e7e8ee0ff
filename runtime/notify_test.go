package runtime

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgworker/bgworker/phases"
)

// Under systemd with Type=notify: READY=1 once RecoveryFinished is entered,
// WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 at shutdown; children do
// not inherit the notify variables.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // after the harness's fd check
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // ping every 50 ms
	t.Setenv("WATCHDOG_PID", itoa(os.Getpid()))
	got := make(chan string, 256)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	next := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second * timeoutMult())
		for {
			select {
			case m := <-got:
				if m == want {
					return
				}
				if m != "WATCHDOG=1" {
					t.Fatalf("got %q while waiting for %q", m, want)
				}
			case <-deadline:
				t.Fatalf("no %q", want)
			}
		}
	}
	h := newHarness(t, Config{})
	next("WATCHDOG=1")
	_, pid := h.startFault("w", "run", nil)
	env, _ := os.ReadFile("/proc/" + itoa(pid) + "/environ")
	if strings.Contains(string(env), "NOTIFY_SOCKET=") || strings.Contains(string(env), "WATCHDOG_USEC=") {
		t.Fatal("child inherited the systemd notify variables")
	}
	if err := h.rt.Advance(ctx(t), phases.RecoveryFinished); err != nil {
		t.Fatal(err)
	}
	next("READY=1")
	if err := h.rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1")
}
