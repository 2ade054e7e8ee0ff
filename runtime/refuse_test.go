package runtime

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/child"
)

// A binary started by hand in child mode refuses, with a message, and exits
// 64: the marker alone is not enough; fd 3 must be a bridge socket, the
// cookie well-formed, and the host must answer the handshake.
func TestChildModeRefusal(t *testing.T) {
	cookie := hex.EncodeToString(make([]byte, bridge.CookieLen))
	for _, tc := range []struct {
		name, marker string
		fd3          func(t *testing.T) *os.File
		want         string
	}{
		{"no fd 3", cookie, nil, "fd 3 is not a bridge socket"},
		{"fd 3 a pipe", cookie, func(t *testing.T) *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			return r
		}, "fd 3 is not a bridge socket"},
		{"bad cookie", "not-hex", nil, "not a valid handshake cookie"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/proc/self/exe", "-test.run=^$")
			cmd.Env = append(os.Environ(), bridge.EnvChild+"="+tc.marker)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if tc.fd3 != nil {
				cmd.ExtraFiles = []*os.File{tc.fd3(t)}
			}
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != bridge.ExitRefused {
				t.Fatalf("exit = %v, want code %d", err, bridge.ExitRefused)
			}
			if !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "refusing to run as a worker") {
				t.Fatalf("stderr = %q, want a refusal naming %q", stderr.String(), tc.want)
			}
		})
	}
	// A socket whose peer never welcomes it: the child waits for the
	// handshake and ends when the peer goes away, without running anything.
	t.Run("no welcome", func(t *testing.T) {
		parent, childEnd, err := bridge.Pair()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/proc/self/exe", "-test.run=^$")
		cmd.Env = append(os.Environ(), bridge.EnvChild+"="+cookie)
		cmd.ExtraFiles = []*os.File{childEnd}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		childEnd.Close()
		// Read its hello, then hang up.
		parent.SetReadDeadline(time.Now().Add(10 * time.Second * timeoutMult()))
		buf := make([]byte, 64)
		n, _ := parent.Read(buf)
		if n < bridge.HeaderLen || bridge.Kind(buf[4]) != bridge.KindHello {
			t.Fatalf("first bytes %x, want a hello frame", buf[:n])
		}
		parent.Close()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("exit = %v, want non-zero", err)
		}
	})
	// A peer that stays connected but never welcomes: the child gives up
	// after its handshake timeout with a refusal, instead of waiting forever.
	t.Run("peer silent", func(t *testing.T) {
		parent, childEnd, err := bridge.Pair()
		if err != nil {
			t.Fatal(err)
		}
		defer parent.Close()
		cmd := exec.Command("/proc/self/exe", "-test.run=^$")
		cmd.Env = append(os.Environ(), bridge.EnvChild+"="+cookie)
		cmd.ExtraFiles = []*os.File{childEnd}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		childEnd.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(child.HandshakeTimeout + 5*time.Second*timeoutMult()):
			cmd.Process.Kill()
			<-done
			t.Fatalf("child still waiting for a welcome after %v", time.Since(start))
		}
		if took := time.Since(start); took < child.HandshakeTimeout {
			t.Errorf("child gave up after %v, before its handshake timeout %v", took, child.HandshakeTimeout)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != bridge.ExitRefused {
			t.Fatalf("exit = %v, want code %d", err, bridge.ExitRefused)
		}
		if !strings.Contains(stderr.String(), "no welcome from the host") {
			t.Fatalf("stderr = %q, want it to say no welcome came", stderr.String())
		}
	})
}
