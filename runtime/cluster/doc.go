// Package cluster joins runtimes on several machines into one cluster, on
// protoactor-go's remote and cluster packages: one postmaster per machine
// is one member. It adds cluster-scoped workers, which run on exactly one
// live member at a time, move to another member when theirs dies or
// leaves, and are reached by name from any member.
//
// Everything local stays local: shared memory, all-for-one, the bridge and
// the warm pool belong to each member's runtime. Only hosts that import
// this package link grpc (and so do only their children); the runtime
// itself never imports it.
//
// # Use
//
//	func init() {
//		cluster.MustRegister(actors.Spec{Name: "scheduler", Props: ...}) // on every member
//	}
//
//	rt, _ := runtime.New(runtime.Config{HTTPAddr: "127.0.0.1:9464"})
//	cl, _ := cluster.New(rt, cluster.Config{Name: "m1", Bind: "10.0.0.1:7100",
//		Peers: []string{"10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"}})
//	_ = rt.Start(ctx)
//	_ = rt.Advance(ctx, phases.RecoveryFinished)
//	_ = cl.Start(ctx)
//	reply, err := cl.Request(ctx, "scheduler", msg) // from any member
//	...
//	_ = cl.Shutdown(ctx) // first: its workers move at once
//	_ = rt.Shutdown(ctx, phases.Fast)
//
// A cluster-scoped worker is started on its member as a dynamic worker of
// that member's runtime (runtime.Runtime.StartWorker), in a child process,
// under its spec's restart policy. Inside, [Token] gives its fencing token
// and [Arg] its spec's Arg. Messages are protobuf messages, which the
// bridge's codec and protoactor's remote both carry by their full name, so
// one message type crosses the bridge and the network alike.
//
// # Placement
//
// The owner of a worker is the member that protoactor's rendezvous hash
// (the one disthash uses for grains) picks for the worker's name among the
// live members. On every change of the topology each member starts what
// it now owns and stops what it no longer owns; nothing waits for a
// request, unlike protoactor's grains, which are activated lazily. While
// fewer than a quorum of members are live, no member owns anything.
//
// # Fencing
//
// Owning a worker is not enough to run it: its owner must hold its lease.
// Every member grants leases. To run a worker, its owner asks every live
// member for the lease under a token above every token it has heard of;
// a member grants it when the token is above any it granted before and the
// lease is free (never granted, released, or not renewed for
// Config.Lease), or when it is that member's already under that token (it
// was offered, see "Failover"). The owner starts the worker once a quorum
// (Config.Quorum, by default a majority of the peers) has granted, and
// renews the grants with every heartbeat. Since any two quorums share a member, and a member
// grants a lease to one holder at a time, two members never hold a
// worker's lease at once. A member grants nothing for one Config.Lease
// after it starts: a member that restarted has forgotten what its last
// process granted, and only once all of that has run out may its grants
// count toward a quorum again. The holder counts its lease from the moment it
// sent the request that a quorum renewed, which is before any grantor
// counted it, less a tenth for clock-rate drift, and begins to stop the
// worker early enough for its grace period and the reaping; a holder that
// loses its quorum therefore has its worker reaped before any grant runs
// out. A worker that moves is stopped and reaped first, and its lease
// released, so the new owner starts it at once. Tokens only grow, one per
// placement: a restart of the worker under the same placement keeps its
// token. A worker that ends for good on its holder (it returned nil, or
// exceeded its restart intensity) stays down while that placement lasts;
// it starts again, fresh, where it is placed next.
//
// # Failover
//
// With Peers, a member is taken as down once no heartbeat or timely answer
// has come from it for Config.Lease, and no grant it asked for still runs
// (a grant made on a lease request, or deferred until an earlier grant ran
// out, can outlast its latest heartbeat by up to an interval): taken as
// down, it holds nothing it asked for. Each grantor then offers the leases
// it held to their new owners, unasked: an offer is an ordinary grant (the
// lease is free there, the token above any granted there), made before the
// owner asks. The owner counts it from the send time of its own heartbeat
// that the grantor had received last, which is before the grant, and
// keeps it for its next acquire, for at most a lease. A grantor whose
// grant to a holder runs out while that holder, still up in its view, has
// been silent (no heartbeat, no answer) for all of the lease but an
// interval offers it then already, to the owner among the others: such a
// member has all but certainly stopped. A new owner that holds offers from
// a quorum places the worker as soon as it takes the old owner as down
// itself, with no round trip. A SIGKILLed member's worker therefore runs
// elsewhere after the lease and a warm start; when the grant that runs out
// last is another member's, add the one-way trip of its offer (or of its
// answer to the new owner's request). The new owner starts the worker
// before it updates protoactor's member list (which grains and the
// remote's endpoints use): that follows once the worker runs, at most
// Config.Timeout later, and its MemberEvent goes out at once.
//
// An offer, like any grant, moves its grantor's token on: the old holder,
// should it be alive after all (cut off from that grantor for the lease),
// is refused there from then on, and keeps its worker only while a quorum
// without that grantor renews its lease.
//
// # What is guaranteed during a partition
//
//   - At most one member holds a worker's lease at any moment, whatever the
//     partition, message loss or delay: the side with a quorum may run it,
//     the others do not. A member cut off from a quorum stops its workers
//     before its lease runs out in its own view.
//   - A side without a quorum runs no cluster-scoped worker at all; with
//     two members, losing one stops them (use three, or an odd number).
//   - The guarantee rests on time in one place: a holder that is paused
//     (SIGSTOP, a stalled VM) for longer than the margin left in its lease
//     cannot stop its worker in time, and clocks must not run more than a
//     few percent apart in rate. Against that, the token: a worker should
//     pass its token with what it writes, and the resource should refuse a
//     token lower than one it has seen ([Fence]). A stale owner's messages
//     carry its older token.
//   - Requests by name go to the holder in the sender's view; during a
//     failover they get dead letters, which [Cluster.Request] retries
//     until its context ends. A request lost with a dying member is not
//     retried (it may have been delivered): at most once.
//   - As in protoactor-go, a member taken as down is not let back in under
//     the same member id (protoactor-go#1133): after a cut longer than the
//     lease it stays apart, running nothing, until its process restarts.
//
// # Membership
//
// [StaticPeers] (Config.Peers) is the provider for tests and small fleets:
// the same full list of addresses on every member. It binds nothing but
// the member's remote, on Config.Bind, keeps no package state, and its
// health checks (the member heartbeats) have the fixed timeout
// Config.Timeout. For production fleets pass protoactor-go's own providers
// in Config.Provider, with Config.Quorum set to a majority of the fleet:
// for example k8s.New() from cluster/clusterproviders/k8s, etcd.New() from
// cluster/clusterproviders/etcd, or consul.New() from
// cluster/clusterproviders/consul. Those are not exercised by this
// package's tests.
//
// # Status
//
// GET /cluster on the runtime's HTTP endpoint returns {"members": [{"id",
// "name", "address", "alive", "since"}], "placements": [{"worker",
// "member", "member_id", "address", "token", "state"}]}. Every member's
// GET /workers (and Runtime.Workers) has a row for each cluster-scoped
// worker with "member" set to its holder; only on the holder does the row
// carry a pid, elsewhere it is null and the state is the holder's, as its
// heartbeats report it. Metrics: bgworker_cluster_members,
// bgworker_cluster_placements, bgworker_cluster_failovers_total,
// bgworker_cluster_placement_changes_total and
// bgworker_cluster_lease_losses_total.
package cluster
