package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// sseReader reads one /events stream and hands each event's JSON object
// to a channel.
type sseReader struct {
	events chan map[string]any
	done   chan struct{} // closed when the stream ended
	err    error
}

// openEvents starts GET /events on base and returns once the server has
// subscribed (its opening comment has arrived).
func openEvents(t *testing.T, c context.Context, base string) (*sseReader, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(c, "GET", base+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("GET /events: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /events: %s", resp.Status)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the opening of /events: %v", err)
		}
		if line == ": bgworker events\n" {
			break
		}
	}
	r := &sseReader{events: make(chan map[string]any, 4096), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				r.err = err
				return
			}
			data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
			if !ok {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				r.err = err
				return
			}
			select {
			case r.events <- m:
			default:
				r.err = errors.New("test reader: too many unread events")
				return
			}
		}
	}()
	return r, resp
}

// next returns the next event for which match holds.
func (r *sseReader) next(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second * timeoutMult())
	for {
		select {
		case m := <-r.events:
			if match(m) {
				return m
			}
		case <-r.done:
			if len(r.events) > 0 {
				continue // read what came before the end
			}
			t.Fatalf("the stream ended (%v) before %s", r.err, what)
		case <-deadline:
			t.Fatalf("timed out waiting on /events for %s", what)
		}
	}
}

func workerTo(name, to string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == "worker" && m["worker"] == name && m["to"] == to }
}

// GET /events: worker, phase and group events as JSON objects with the
// documented keys, in order, on a text/event-stream.
func TestEventsStream(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0", GroupStopTimeout: 500 * time.Millisecond})
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	r, resp := openEvents(t, c, "http://"+h.rt.Addr())
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}

	_, pid := h.startFault("w", "run", func(s *actors.Spec) { s.Restart = actors.NeverRestart })
	running := r.next(t, "w running", workerTo("w", "running"))
	for _, k := range []string{"type", "at", "worker", "worker_type", "incarnation", "from", "to", "pid"} {
		if _, ok := running[k]; !ok {
			t.Errorf("worker event lacks %q: %v", k, running)
		}
	}
	if running["from"] != "starting" || running["pid"] != float64(pid) || running["worker_type"] != "fault" || running["incarnation"] != float64(1) {
		t.Errorf("running event = %v, want from starting, pid %d", running, pid)
	}
	at, _ := running["at"].(string)
	if ts, err := time.Parse(time.RFC3339Nano, at); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
		t.Errorf("at = %q (%v), want a recent RFC 3339 time", at, err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	crashed := r.next(t, "w crashed", workerTo("w", "crashed"))
	ex, _ := crashed["exit"].(map[string]any)
	if crashed["from"] != "running" || ex["reason"] != "signal:KILL" || ex["signal"] != "KILL" {
		t.Errorf("crashed event = %v, want from running with exit signal:KILL", crashed)
	}

	if err := h.rt.Advance(ctx(t), phases.ConsistentState); err != nil {
		t.Fatal(err)
	}
	ph := r.next(t, "phase event", func(m map[string]any) bool { return m["type"] == "phase" })
	if ph["phase"] != "consistent_state" || ph["reset"] != false || ph["at"] == nil {
		t.Errorf("phase event = %v", ph)
	}

	a := h.startShm("a", "run")
	seg := r.next(t, "segment event", func(m map[string]any) bool { return m["type"] == "segment" })
	if seg["generation"] != float64(1) || seg["reset"] != false || seg["bytes"] != float64(h.rt.Segment().Size()) {
		t.Errorf("segment event = %v", seg)
	}
	syscall.Kill(a, syscall.SIGKILL)
	gr := r.next(t, "group reset event", func(m map[string]any) bool { return m["type"] == "group_reset" })
	if gr["cause"] != "a" || gr["generation"] != float64(1) || gr["failed"] != false || gr["at"] == nil {
		t.Errorf("group_reset event = %v", gr)
	}
	seg = r.next(t, "second segment", func(m map[string]any) bool { return m["type"] == "segment" })
	if seg["generation"] != float64(2) || seg["reset"] != true {
		t.Errorf("segment event after the reset = %v", seg)
	}
	r.next(t, "a running again", workerTo("a", "running"))

	// The stream ends with the runtime: a shutdown event, then EOF.
	if err := h.rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatal(err)
	}
	r.next(t, "shutdown event", func(m map[string]any) bool { return m["type"] == "shutdown" && m["mode"] == "fast" })
	select {
	case <-r.done:
		if !errors.Is(r.err, io.EOF) && !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("stream ended with %v, want EOF", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Error("/events still open after Shutdown returned")
	}
}

// dialNoRead connects to addr with a small receive buffer, sends
// GET /events and never reads.
func dialNoRead(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// /events under a client that never reads: its queue overflows and it is
// dropped, while the postmaster goes on at its own pace (a worker keeps
// crashing and restarting, another client keeps receiving), and the
// dropped connection is closed. The hub is the runtime's, served on a
// listener with small socket buffers and a short queue so that the drop
// comes after a few events. Then a client that never reads on the
// runtime's own endpoint does not hold up Shutdown, and no goroutine is
// left (the harness checks).
func TestEventsSlowClient(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	hub := newEventHub(h.rt, 16)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hub, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	var closeOnce sync.Once
	closeTestServer := func() {
		closeOnce.Do(func() {
			hub.close()
			srv.Close()
			<-served
		})
	}
	t.Cleanup(closeTestServer)

	slow := dialNoRead(t, ln.Addr().String())
	defer slow.Close()
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	fast, resp := openEvents(t, c, "http://"+ln.Addr().String())
	defer resp.Body.Close()
	h.eventually("both clients subscribed", func() bool {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		return len(hub.clients) == 2
	})

	// A crash loop: each run panics (a stack trace in the exit's stderr)
	// and is restarted at once.
	if _, err := h.rt.StartWorker(ctx(t), actors.Spec{Name: "p", Type: "fault", Arg: []byte("panic"), StartAt: phases.PostmasterStart,
		Restart: actors.Fixed(0), Intensity: actors.Intensity{MaxRestarts: -1}}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the slow client dropped", func() bool { return hub.dropped.Load() >= 1 })
	// The postmaster did not wait for it: the loop goes on, and the
	// reading client hears of it.
	base := len(h.workerEvents("p"))
	for i := 0; i < 3; i++ {
		fast.next(t, "p running after the drop", workerTo("p", "running"))
	}
	h.eventually("p restarted after the drop", func() bool {
		n := 0
		for _, e := range h.workerEvents("p")[base:] {
			if e.To == Running {
				n++
			}
		}
		return n >= 3
	})
	if n := hub.dropped.Load(); n != 1 {
		t.Errorf("%d clients dropped, want only the one that never reads", n)
	}
	if err := h.rt.Stop(ctx(t), "p"); err != nil {
		t.Fatal(err)
	}
	// The dropped stream is closed by the server: reading it now ends in
	// EOF.
	slow.SetReadDeadline(time.Now().Add(20 * time.Second * timeoutMult()))
	got, err := io.ReadAll(slow)
	if err != nil {
		t.Fatalf("reading the dropped stream: %v after %d bytes, want EOF", err, len(got))
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 200 OK\r\n") || !strings.Contains(string(got), "data: {") {
		t.Errorf("dropped stream: %.300q", got)
	}
	cancel()
	closeTestServer()

	// On the runtime's own endpoint: a client that never reads while
	// Shutdown runs.
	stuck := dialNoRead(t, h.rt.Addr())
	defer stuck.Close()
	h.eventually("subscribed", func() bool {
		h.rt.http.events.mu.Lock()
		defer h.rt.http.events.mu.Unlock()
		return len(h.rt.http.events.clients) == 1
	})
	h.startFault("q", "run", nil)
	if err := h.rt.Shutdown(ctx(t), phases.Fast); err != nil {
		t.Fatal(err)
	}
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(stuck); err != nil {
		t.Errorf("the stuck stream after Shutdown: %v, want EOF", err)
	}
}
