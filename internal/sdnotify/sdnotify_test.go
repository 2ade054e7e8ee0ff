package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// listen opens a unixgram socket at addr ("@name" for abstract) that the
// test reads notifications from.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads one datagram, failing the test if none arrives in time.
func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	return string(buf[:n])
}

// exercise sends every kind of notification through n and checks that l
// receives exactly the expected datagrams, in order.
func exercise(t *testing.T, n *Notifier, l *net.UnixConn) {
	t.Helper()
	steps := []struct {
		send func() error
		want string
	}{
		{n.Ready, "READY=1"},
		{func() error { return n.Status("serving 3 jobs") }, "STATUS=serving 3 jobs"},
		{n.Watchdog, "WATCHDOG=1"},
		{func() error { return n.Send("RELOADING=1\nMONOTONIC_USEC=42") }, "RELOADING=1\nMONOTONIC_USEC=42"},
		{func() error { return n.Status("") }, "STATUS="},
		{n.Stopping, "STOPPING=1"},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatalf("send %q: %v", s.want, err)
		}
		if got := recv(t, l); got != s.want {
			t.Fatalf("datagram = %q, want %q", got, s.want)
		}
	}
}

func TestFromEnvPathSocket(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify.sock")
	l := listen(t, addr)
	t.Setenv(EnvSocket, addr)
	n, err := FromEnv()
	if err != nil || n == nil {
		t.Fatalf("FromEnv() = %v, %v; want notifier", n, err)
	}
	exercise(t, n, l)
}

func TestFromEnvAbstractSocket(t *testing.T) {
	addr := fmt.Sprintf("@bgworker-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	l := listen(t, addr)
	t.Setenv(EnvSocket, addr)
	n, err := FromEnv()
	if err != nil || n == nil {
		t.Fatalf("FromEnv() = %v, %v; want notifier", n, err)
	}
	exercise(t, n, l)

	// The '@' must have become a NUL: nothing may exist on disk under
	// that name relative to the working directory.
	if _, err := os.Stat(addr); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("abstract socket leaked into the file system: stat %q: %v", addr, err)
	}
}

func TestNewSendsToPath(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "n.sock")
	exercise(t, New(addr), listen(t, addr))
}

func TestFromEnvUnsetOrInvalid(t *testing.T) {
	t.Setenv(EnvSocket, "")
	if n, err := FromEnv(); n != nil || err != nil {
		t.Errorf("empty: FromEnv() = %v, %v; want nil, nil", n, err)
	}
	os.Unsetenv(EnvSocket) // t.Setenv restores it afterwards
	if n, err := FromEnv(); n != nil || err != nil {
		t.Errorf("unset: FromEnv() = %v, %v; want nil, nil", n, err)
	}
	for _, bad := range []string{"relative/notify", "@", "vsock:2:1234"} {
		t.Setenv(EnvSocket, bad)
		n, err := FromEnv()
		if n != nil || err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") {
			t.Errorf("%q: FromEnv() = %v, %v; want nil and an sdnotify error", bad, n, err)
		}
	}
}

func TestNilNotifierIsNoop(t *testing.T) {
	var n *Notifier
	for name, f := range map[string]func() error{
		"Ready":    n.Ready,
		"Stopping": n.Stopping,
		"Watchdog": n.Watchdog,
		"Status":   func() error { return n.Status("x\ny") },
		"Send":     func() error { return n.Send("") },
	} {
		if err := f(); err != nil {
			t.Errorf("nil.%s() = %v, want nil", name, err)
		}
	}
	// Must return at once even though ctx never ends.
	n.RunWatchdog(context.Background(), time.Second, nil)
}

func TestSendErrors(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "n.sock")
	l := listen(t, addr)
	n := New(addr)

	if err := n.Send(""); err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") {
		t.Errorf(`Send("") = %v, want sdnotify error`, err)
	}
	if err := n.Status("two\nlines"); err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") {
		t.Errorf("Status with newline = %v, want sdnotify error", err)
	}
	// Neither rejected message may have reached the socket.
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, l); got != "READY=1" {
		t.Errorf("first datagram = %q, want READY=1", got)
	}

	missing := New(filepath.Join(t.TempDir(), "absent.sock"))
	err := missing.Ready()
	if err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Ready to missing socket = %v, want sdnotify error wrapping ENOENT", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	const unset = "<unset>" // sentinel: variable absent, not empty
	tests := []struct {
		name      string
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"unset", unset, unset, 0, false},
		{"unset usec with pid", unset, self, 0, false},
		{"empty", "", unset, 0, false},
		{"garbage", "soon", unset, 0, false},
		{"negative", "-30000000", unset, 0, false},
		{"zero", "0", unset, 0, false},
		{"overflow", "18446744073709551615", unset, 0, false},
		{"wrong pid", "30000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"garbage pid", "30000000", "me", 0, false},
		{"empty pid", "30000000", "", 0, false},
		{"valid no pid", "30000000", unset, 15 * time.Second, true},
		{"valid own pid", "30000000", self, 15 * time.Second, true},
		{"valid small", "3", self, 1500 * time.Nanosecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range map[string]string{EnvWatchdogUsec: tt.usec, EnvWatchdogPID: tt.pid} {
				t.Setenv(k, v)
				if v == unset {
					os.Unsetenv(k)
				}
			}
			got, ok := WatchdogInterval()
			if got != tt.want || ok != tt.ok {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestRunWatchdogSchedule checks the ticker logic on synctest's fake clock.
// Real socket I/O is not durably blocking inside a bubble, so the datagrams
// go to an in-memory hook instead.
func TestRunWatchdogSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var sent []time.Duration
		n := &Notifier{send: func(msg []byte) error {
			if string(msg) != "WATCHDOG=1" {
				t.Errorf("datagram = %q, want WATCHDOG=1", msg)
			}
			sent = append(sent, time.Since(start))
			return errors.New("delivery failed") // must not stop the loop
		}}
		checks := 0
		healthy := func() bool {
			checks++
			return checks != 3 // unhealthy at the third tick: skip it
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5500*time.Millisecond)
		defer cancel()

		n.RunWatchdog(ctx, time.Second, healthy)

		if d := time.Since(start); d != 5500*time.Millisecond {
			t.Errorf("RunWatchdog returned after %v, want 5.5s (when ctx ended)", d)
		}
		want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
		if fmt.Sprint(sent) != fmt.Sprint(want) {
			t.Errorf("pings at %v, want %v", sent, want)
		}
		if checks != 5 {
			t.Errorf("healthy called %d times, want 5", checks)
		}
	})
}

func TestRunWatchdogNonPositiveInterval(t *testing.T) {
	n := &Notifier{send: func([]byte) error { t.Error("unexpected ping"); return nil }}
	n.RunWatchdog(context.Background(), 0, nil) // must return at once
	n.RunWatchdog(context.Background(), -time.Second, nil)
}

// TestRunWatchdogRealSocket runs the loop against a real socket, outside
// synctest, and checks that it stops and leaves no goroutine behind.
func TestRunWatchdogRealSocket(t *testing.T) {
	defer goleak.VerifyNone(t)
	addr := filepath.Join(t.TempDir(), "wd.sock")
	l := listen(t, addr)
	n := New(addr)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, 5*time.Millisecond, func() bool { return true })
	}()
	for range 3 {
		if got := recv(t, l); got != "WATCHDOG=1" {
			t.Fatalf("datagram = %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}
