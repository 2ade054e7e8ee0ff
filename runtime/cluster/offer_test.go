package cluster

import (
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/cluster/internal/wire"
)

// An offer is an ordinary grant made unasked: it needs a free lease and a
// token above every token granted before; its holder asking again under
// the offered token is granted (and the grant stops being an offer), and
// so is a renewal.
func TestGrantOffer(t *testing.T) {
	const L = time.Second
	t0 := time.Unix(1000, 0)
	a, b := memberRef{id: "a"}, memberRef{id: "b"}
	var g grant
	if !g.acquire(t0, a, 1, L) {
		t.Fatal("a acquires token 1")
	}
	if g.offer(t0.Add(L/2), b, 2, L) {
		t.Fatalf("offered a lease still held by a: %+v", g)
	}
	if g.offer(t0.Add(L), b, 1, L) {
		t.Fatalf("offered token 1 again: %+v", g)
	}
	if !g.offer(t0.Add(L), b, 2, L) || !g.offered || g.holder != b || g.max != 2 {
		t.Fatalf("offer of a lease run out: %+v", g)
	}
	if g.acquire(t0.Add(L+1), a, 3, L) {
		t.Fatalf("a took a lease offered to b: %+v", g)
	}
	if g.acquire(t0.Add(L+2), b, 1, L) || g.acquire(t0.Add(L+2), memberRef{id: "c"}, 2, L) {
		t.Fatalf("a lower token, or the offered token by another member, was granted: %+v", g)
	}
	at := t0.Add(L + 3)
	if !g.acquire(at, b, 2, L) || g.offered || !g.expires.Equal(at.Add(L)) {
		t.Fatalf("b asking under the offered token: %+v", g)
	}
	if !g.offer(t0.Add(3*L), a, 3, L) || !g.offered {
		t.Fatalf("second offer: %+v", g)
	}
	if !g.renew(t0.Add(3*L+1), a, 3, L) || g.offered {
		t.Fatalf("a renewing its offered grant: %+v", g)
	}
}

// testActor is a member actor of a three-member cluster (a, b, c) with one
// worker, for its pure decisions: what it offers to whom, when it takes a
// peer as down, and which token an acquire asks under.
func testActor(t *testing.T) (*memberActor, time.Time) {
	t.Helper()
	c := &Cluster{cfg: Config{Name: "a", Bind: "127.0.0.1:7001", Peers: []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}}}
	if err := c.cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	c.specs = []actors.Spec{{Name: "w", StopTimeout: 100 * time.Millisecond}}
	m := newMemberActor(c)
	m.self = memberRef{id: "a", name: "a", addr: "127.0.0.1:7001"}
	m.info = &wire.Member{Id: "a", Name: "a", Address: m.self.addr, Kinds: []string{workerKind}}
	now := time.Unix(2000, 0)
	for _, id := range []string{"b", "c"} {
		addr := map[string]string{"b": "127.0.0.1:7002", "c": "127.0.0.1:7003"}[id]
		p := m.peers[addr]
		p.info = &wire.Member{Id: id, Name: id, Address: addr, Kinds: []string{workerKind}}
		p.up, p.lastRecv, p.lastRound = true, now, 7
	}
	m.setMembers(m.self.id, "b", "c")
	return m, now
}

// setMembers sets the actor's topology to the members with the given ids.
func (m *memberActor) setMembers(ids ...string) {
	var ms []*pcluster.Member
	for _, id := range ids {
		info := m.info
		if id != m.self.id {
			info = m.peerByID(id).info
		}
		ms = append(ms, toMember(info))
	}
	m.topo = ms
	m.rdv.UpdateMembers(ms)
}

// ownerAmong is the rendezvous owner of w among the members with the
// given addresses.
func ownerAmong(addrs ...string) string {
	var ms []*pcluster.Member
	for i, a := range addrs {
		host, port, _ := splitHostPort(a)
		ms = append(ms, &pcluster.Member{Id: string(rune('x' + i)), Host: host, Port: int32(port), Kinds: []string{workerKind}})
	}
	r := pcluster.NewRendezvous()
	r.UpdateMembers(ms)
	return r.GetByClusterIdentity(&pcluster.ClusterIdentity{Identity: "w", Kind: workerKind})
}

// The next owner of a lease whose holder is gone: the owner in this view
// once the holder is down here; while it is still up, the owner among the
// others only once it has been silent for the lease less an interval; and
// nobody without a quorum.
func TestSuccessor(t *testing.T) {
	m, now := testActor(t)
	c := m.peerByID("c")
	if got := m.successor(now, "w", "c"); got != "" {
		t.Errorf("c heard just now: successor %q, want none", got)
	}
	c.lastRecv = now.Add(-m.lt.lease + m.c.cfg.Interval + time.Millisecond)
	if got := m.successor(now, "w", "c"); got != "" {
		t.Errorf("c silent for less than the lease less an interval: successor %q, want none", got)
	}
	c.lastRecv = now.Add(-m.lt.lease + m.c.cfg.Interval)
	want := ownerAmong("127.0.0.1:7001", "127.0.0.1:7002")
	if got := m.successor(now, "w", "c"); got != want {
		t.Errorf("c silent for the lease less an interval: successor %q, want %q", got, want)
	}
	c.lastAcked = now // its answer counts as much as its heartbeat
	if got := m.successor(now, "w", "c"); got != "" {
		t.Errorf("c answered just now: successor %q, want none", got)
	}
	m.setMembers("a", "b")
	if got := m.successor(now, "w", "c"); got != want {
		t.Errorf("c down: successor %q, want the owner %q", got, want)
	}
	m.setMembers("a")
	if got := m.successor(now, "w", "b"); got != "" {
		t.Errorf("without a quorum: successor %q, want none", got)
	}
}

// A member is taken as down a lease after it was last heard from, or once
// a grant it asked for runs out, whichever is later; a grant offered to it
// does not hold its detection back.
func TestDownAt(t *testing.T) {
	m, now := testActor(t)
	b := m.peerByID("b")
	w := m.workers["w"]
	if got, want := m.downAt(b), now.Add(m.lt.lease); !got.Equal(want) {
		t.Errorf("downAt = %v, want the lease after its heartbeat %v", got, want)
	}
	later := now.Add(30 * time.Millisecond)
	if !w.g.acquire(later, m.ref(b.info), 5, m.lt.lease) {
		t.Fatal("acquire")
	}
	if got, want := m.downAt(b), later.Add(m.lt.lease); !got.Equal(want) {
		t.Errorf("with a grant asked for after its heartbeat: downAt = %v, want %v", got, want)
	}
	w.g = grant{}
	if !w.g.offer(later, m.ref(b.info), 5, m.lt.lease) {
		t.Fatal("offer")
	}
	if got, want := m.downAt(b), now.Add(m.lt.lease); !got.Equal(want) {
		t.Errorf("with a grant offered to it: downAt = %v, want %v", got, want)
	}
	w.g = grant{}
	if !w.g.acquire(later, m.ref(m.peerByID("c").info), 5, m.lt.lease) {
		t.Fatal("acquire by c")
	}
	if got, want := m.downAt(b), now.Add(m.lt.lease); !got.Equal(want) {
		t.Errorf("with another member's grant: downAt = %v, want %v", got, want)
	}
}

// An acquire asks under a good offer's token, and otherwise under a token
// above every token granted here and heard of; an offer counts as its
// grantor's grant only while a holder counting from it has a heartbeat
// left to renew it.
func TestAcquireToken(t *testing.T) {
	m, now := testActor(t)
	w := m.workers["w"]
	w.g.max, w.known = 4, 6
	good := offer{from: "b", token: 7, counted: now.Add(-10 * time.Millisecond), at: now.Add(-time.Millisecond)}
	for _, c := range []struct {
		what  string
		of    offer
		token uint64
		use   bool
	}{
		{"no offer", offer{}, 7, false},
		{"a good offer", good, 7, true},
		{"an offer above the next token", offer{from: "b", token: 9, counted: good.counted, at: good.at}, 9, true},
		{"an offer no higher than a token heard of", offer{from: "b", token: 5, counted: good.counted, at: good.at}, 7, false},
		{"an offer no higher than a token granted here", offer{from: "b", token: 4, counted: good.counted, at: good.at}, 7, false},
		{"an offer from a lease ago", offer{from: "b", token: 7, counted: good.counted, at: now.Add(-m.lt.lease + m.lt.margin)}, 7, false},
	} {
		w.offer = c.of
		token, of := m.acquireToken(now, w)
		if token != c.token || (of.token != 0) != c.use {
			t.Errorf("%s: token %d, offer used %t; want %d, %t", c.what, token, of.token != 0, c.token, c.use)
		}
	}
	if !m.countable(now, w, good.counted) {
		t.Error("a grant counted from 10 ms ago is not countable")
	}
	if m.countable(now, w, time.Time{}) {
		t.Error("a grant counted from an unknown round is countable")
	}
	// The stop would begin at counted + lease - 2 margins - interval - grace:
	// with no heartbeat left before it, the offer does not count.
	old := now.Add(-m.lt.lease + 2*m.lt.margin + 2*m.c.cfg.Interval + w.spec.GracePeriod())
	if m.countable(now, w, old) {
		t.Errorf("a grant counted from %v ago, with no heartbeat left before the stop, is countable", now.Sub(old))
	}
	if !m.countable(now, w, old.Add(time.Millisecond)) {
		t.Errorf("a grant counted from %v ago is not countable", now.Sub(old.Add(time.Millisecond)))
	}
}

// A member grants nothing for one lease after it started: a restarted
// member has forgotten what its last process granted, and a grant of its
// own could otherwise make a second quorum beside a holder's that is still
// live. After that lease, every grant of its last process has run out.
func TestRestartedGrantorIsQuiet(t *testing.T) {
	m, now := testActor(t)
	m.grantsFrom = now.Add(m.lt.lease)
	w := m.workers["w"]
	b := m.peers["127.0.0.1:7002"].info
	req := &wire.Acquire{Worker: "w", Token: 5, Holder: b}
	m.onAcquire(now, req, nil)
	if w.g.held(now) {
		t.Fatalf("granted %+v within the quiet lease after start", w.g)
	}
	after := m.grantsFrom
	m.onAcquire(after, req, nil)
	if !w.g.held(after) || w.g.holder.id != b.Id || w.g.token != 5 {
		t.Fatalf("not granted once the quiet lease was over: %+v", w.g)
	}
}
