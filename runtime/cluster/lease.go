package cluster

import "time"

// grant is one member's record, as a grantor, of one worker's lease. Every
// member is a grantor for every cluster-scoped worker; a holder runs the
// worker only while a quorum of grantors has granted it the lease under
// its token (see the package doc, "Fencing"). The zero value is a worker
// never granted.
type grant struct {
	holder  memberRef // zero = free (never granted, or released)
	token   uint64    // the token of the current (or last) grant
	max     uint64    // the highest token ever granted here; tokens only grow
	expires time.Time // the grant is void from this instant on
	offered bool      // granted unasked (offer), and not asked for or renewed by its holder since
}

// memberRef names a member: its id (new for each process) with the name
// and address shown in status.
type memberRef struct {
	id, name, addr string
}

// held reports whether the grant is held by someone at now.
func (g *grant) held(now time.Time) bool { return g.holder.id != "" && now.Before(g.expires) }

// remaining returns how long the grant is still held, zero when free.
func (g *grant) remaining(now time.Time) time.Duration {
	if !g.held(now) {
		return 0
	}
	return g.expires.Sub(now)
}

// acquire decides an Acquire of token by h at now: it is granted when the
// token is above every token granted before and the lease is free or
// already h's, or when h holds it under that very token already (it was
// offered to h, see Offer in the wire messages). A granted lease lasts
// lease from now.
func (g *grant) acquire(now time.Time, h memberRef, token uint64, lease time.Duration) bool {
	if g.held(now) && g.holder.id == h.id && g.token == token {
		g.expires, g.offered = now.Add(lease), false
		return true
	}
	if token <= g.max || (g.held(now) && g.holder.id != h.id) {
		return false
	}
	g.holder, g.token, g.max, g.expires, g.offered = h, token, token, now.Add(lease), false
	return true
}

// offer grants the lease to h unasked under token, as acquire would
// grant it to h's request: when the token is above every token granted
// before and the lease is free.
func (g *grant) offer(now time.Time, h memberRef, token uint64, lease time.Duration) bool {
	if token <= g.max || g.held(now) {
		return false
	}
	g.holder, g.token, g.max, g.expires, g.offered = h, token, token, now.Add(lease), true
	return true
}

// renew decides a heartbeat's renewal of (h, token) at now. The lease h
// holds under token is extended to lease from now. A lease that is free
// here (expired, released, or never seen, as after this member restarted)
// is granted again to h when no higher token was granted meanwhile:
// another holder could only have got a quorum with a higher token, and
// every quorum shares a grantor with h's.
func (g *grant) renew(now time.Time, h memberRef, token uint64, lease time.Duration) bool {
	switch {
	case g.held(now) && g.holder.id == h.id && g.token == token:
	case !g.held(now) && token >= g.max:
		g.holder, g.token, g.max = h, token, token
	default:
		return false
	}
	g.expires, g.offered = now.Add(lease), false
	return true
}

// release frees the lease if (h, token) holds it: its worker has been
// reaped, so a new holder need not wait for the lease to run out.
func (g *grant) release(h string, token uint64) bool {
	if g.holder.id != h || g.token != token {
		return false
	}
	g.holder, g.expires = memberRef{}, time.Time{}
	return true
}

// leaseTimes are the durations derived from Config.Lease. The holder
// counts its lease from the moment it sent the request that a quorum
// granted, which is before any grantor received it, and ends it early by
// margin for clock-rate drift; it begins stopping its worker stopBy before
// that end, which leaves the worker's grace period and the reaping.
type leaseTimes struct {
	lease    time.Duration // a grant lasts this long after its last renewal
	margin   time.Duration // the holder ends its own view this much earlier
	interval time.Duration // heartbeats (renewals) are this far apart
}

// holderDeadline is when a holder's lease ends in its own view, for a
// quorum granted to a request sent at sent.
func (lt leaseTimes) holderDeadline(sent time.Time) time.Time {
	return sent.Add(lt.lease - lt.margin)
}

// stopAt is when a holder whose lease ends at deadline must begin to stop
// a worker with the given grace period, so that it is reaped in time: one
// interval early, since deadlines are checked at heartbeats.
func (lt leaseTimes) stopAt(deadline time.Time, grace time.Duration) time.Time {
	return deadline.Add(-grace - lt.interval - lt.margin)
}
