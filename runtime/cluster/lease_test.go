package cluster

import (
	"testing"
	"time"
)

// The grant state machine, step by step with an explicit clock: a holder
// keeps a lease by renewing it, a rival waits until it runs out, a lower
// or equal token never wins, a release frees it at once, and a grantor
// that lost its record (a restart) grants the renewal of the holder again.
func TestGrant(t *testing.T) {
	const L = time.Second
	t0 := time.Unix(1000, 0)
	a, b := memberRef{id: "a", name: "A"}, memberRef{id: "b", name: "B"}
	var g grant
	steps := []struct {
		what string
		at   time.Duration
		do   func(now time.Time) bool
		want bool
	}{
		{"a acquires token 1", 0, func(n time.Time) bool { return g.acquire(n, a, 1, L) }, true},
		{"b cannot take it while held", 100 * time.Millisecond, func(n time.Time) bool { return g.acquire(n, b, 2, L) }, false},
		{"a renews", 900 * time.Millisecond, func(n time.Time) bool { return g.renew(n, a, 1, L) }, true},
		{"still held past the first second", 1500 * time.Millisecond, func(n time.Time) bool { return g.acquire(n, b, 2, L) }, false},
		{"b renewing a's token is refused", 1500 * time.Millisecond, func(n time.Time) bool { return g.renew(n, b, 1, L) }, false},
		{"run out: b acquires token 2", 1900 * time.Millisecond, func(n time.Time) bool { return g.acquire(n, b, 2, L) }, true},
		{"a's late renewal is refused", 1950 * time.Millisecond, func(n time.Time) bool { return g.renew(n, a, 1, L) }, false},
		{"a stale release is ignored", 1950 * time.Millisecond, func(n time.Time) bool { return g.release("a", 1) }, false},
		{"b releases", 2 * time.Second, func(n time.Time) bool { return g.release("b", 2) }, true},
		{"a cannot reuse token 2", 2 * time.Second, func(n time.Time) bool { return g.acquire(n, a, 2, L) }, false},
		{"a acquires token 3 at once", 2 * time.Second, func(n time.Time) bool { return g.acquire(n, a, 3, L) }, true},
		{"a re-asks with a higher token", 2100 * time.Millisecond, func(n time.Time) bool { return g.acquire(n, a, 4, L) }, true},
	}
	for _, s := range steps {
		if got := s.do(t0.Add(s.at)); got != s.want {
			t.Fatalf("%s at %v: got %t, want %t (grant %+v)", s.what, s.at, got, s.want, g)
		}
	}
	if g.max != 4 || !g.held(t0.Add(3*time.Second)) || g.held(t0.Add(3100*time.Millisecond+time.Nanosecond)) {
		t.Errorf("after the steps: %+v", g)
	}
	// A grantor with no record (restarted) grants a renewal again; one that
	// granted a higher token since does not.
	var fresh grant
	if !fresh.renew(t0, a, 7, L) || fresh.holder != a || fresh.max != 7 {
		t.Errorf("renewal on a fresh grantor: %+v", fresh)
	}
	if fresh.renew(t0.Add(2*L), b, 6, L) {
		t.Errorf("renewal of a lower token on an expired grant was granted: %+v", fresh)
	}
}

// The holder's own view ends before any grantor's, and it begins to stop
// its worker early enough for the grace period.
func TestLeaseTimes(t *testing.T) {
	lt := leaseTimes{lease: time.Second, margin: 100 * time.Millisecond, interval: 100 * time.Millisecond}
	sent := time.Unix(0, 0)
	if d := lt.holderDeadline(sent); d != sent.Add(900*time.Millisecond) {
		t.Errorf("holderDeadline = %v", d.Sub(sent))
	}
	if s := lt.stopAt(lt.holderDeadline(sent), 250*time.Millisecond); s != sent.Add(450*time.Millisecond) {
		t.Errorf("stopAt = %v, want 450ms", s.Sub(sent))
	}
}

// The Arg of a placed worker carries its token and member, and gives the
// spec's own Arg back.
func TestArg(t *testing.T) {
	b := encodeArg(42, "m2", []byte("user"))
	tok, m, arg, ok := decodeArg(b)
	if !ok || tok != 42 || m != "m2" || string(arg) != "user" {
		t.Errorf("decodeArg = %d %q %q %t", tok, m, arg, ok)
	}
	if _, _, arg, ok := decodeArg([]byte("plain")); ok || string(arg) != "plain" {
		t.Errorf("decodeArg of a plain Arg = %q %t", arg, ok)
	}
	var f Fence
	for _, c := range []struct {
		tok uint64
		ok  bool
	}{{1, true}, {3, true}, {3, true}, {2, false}, {4, true}} {
		if err := f.Check(c.tok); (err == nil) != c.ok {
			t.Errorf("Fence.Check(%d) = %v, want ok %t", c.tok, err, c.ok)
		}
	}
}
