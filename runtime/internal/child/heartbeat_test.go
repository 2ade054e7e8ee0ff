package child

import (
	"net"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/runtime/bridge"
)

// received drains, without waiting, what the peer end of a bridge holds and
// returns the kinds of the whole frames in it.
func received(t *testing.T, fd int) []bridge.Kind {
	t.Helper()
	var buf []byte
	b := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, b, unix.MSG_DONTWAIT)
		if n <= 0 || err != nil {
			break
		}
		buf = append(buf, b[:n]...)
	}
	var ks []bridge.Kind
	for len(buf) > 0 {
		k, _, n, err := bridge.SplitFrame(buf, bridge.DefaultMaxFrame)
		if err != nil || n == 0 {
			t.Fatalf("bytes from the child's side are not whole frames: %v", err)
		}
		ks = append(ks, k)
		buf = buf[n:]
	}
	return ks
}

// A quiet child heartbeats once per interval, and not at all in an
// interval in which it sent something else. In virtual time, on a real
// socket.
func TestHeartbeatOncePerQuietInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, childEnd, err := bridge.Pair()
		if err != nil {
			t.Fatal(err)
		}
		defer parent.Close()
		nc, err := net.FileConn(childEnd)
		childEnd.Close()
		if err != nil {
			t.Fatal(err)
		}
		conn := bridge.NewConn(nc.(*net.UnixConn), 0)
		defer conn.Close()
		c := &child{cfg: Config{LoanLimit: time.Second}, conn: conn}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { c.heartbeat(time.Second, stop); close(done) }()
		defer func() { close(stop); <-done }()
		pfd := int(parent.Fd())

		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if ks := received(t, pfd); len(ks) != 10 {
			t.Fatalf("a quiet child sent %d frames in 10 intervals (%v), want 10 heartbeats", len(ks), ks)
		}
		// Traffic in an interval stands in for that interval's heartbeat,
		// whether written at once or queued for the writer.
		for i := range 4 {
			frame := func(b []byte) []byte { return bridge.AppendEmpty(b, bridge.KindIdle) }
			if i%2 == 0 {
				err = conn.Send(frame)
			} else {
				err = conn.SendUrgent(frame)
			}
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		ks := received(t, pfd)
		for _, k := range ks {
			if k != bridge.KindIdle {
				t.Fatalf("frames in 4 busy intervals: %v, want only the 4 sent (no heartbeat)", ks)
			}
		}
		if len(ks) != 4 {
			t.Fatalf("frames in 4 busy intervals: %v, want the 4 sent", ks)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if ks := received(t, pfd); len(ks) != 2 || ks[0] != bridge.KindHeartbeat || ks[1] != bridge.KindHeartbeat {
			t.Fatalf("frames in 2 quiet intervals after traffic: %v, want 2 heartbeats", ks)
		}
	})
}
