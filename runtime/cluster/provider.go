package cluster

import (
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// StaticPeers is the membership provider for tests and small fleets: the
// members are the fixed list in Config.Peers, and a member is up while its
// heartbeats arrive. It is what New uses when Config.Peers is set; it
// implements protoactor-go's ClusterProvider, and it keeps no state
// outside its Cluster.
//
// Its health checks are the member heartbeats: every Config.Interval each
// member sends each peer a heartbeat over protoactor's remote, and an
// answer later than Config.Timeout does not count. A peer is up from its
// first heartbeat or timely answer, and down once neither has come for
// Config.Lease (or at once, when it says it is leaving). Unlike
// protoactor's automanaged provider it binds nothing of its own: only the
// member's remote listens, on Config.Bind.
//
// protoactor's remote waits 2 s before it retries a connection that was
// refused, so members started one after another may see each other up to
// about 2 s apart; placements begin once a quorum sees each other.
//
// As in every protoactor provider, a member that was taken as down is not
// let back in under the same id (protoactor-go#1133): after a network cut
// longer than the lease it stays apart, holding no worker, until its
// process restarts.
type StaticPeers struct{}

// StartMember implements pcluster.ClusterProvider: the member actor,
// started by Cluster.Start, reports the topology.
func (*StaticPeers) StartMember(*pcluster.Cluster) error { return nil }

// StartClient implements pcluster.ClusterProvider.
func (*StaticPeers) StartClient(*pcluster.Cluster) error { return nil }

// Shutdown implements pcluster.ClusterProvider.
func (*StaticPeers) Shutdown(bool) error { return nil }
