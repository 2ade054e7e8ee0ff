package bridge

import "fmt"

// Stage is where one side of the bridge is in the protocol: it decides
// which frames that side may receive. Both readers, the host's and the
// child's, check every frame against their stage (Stage.Check), so what
// is legal when is written once, in the table below.
//
//	host side                        child side
//	HostAwaitHello  ← Hello          ChildAwaitWelcome ← Welcome
//	HostAwaitIdle   ← Idle           ChildAwaitAssign  ← Assign, Terminate, Reattach
//	HostIdle        (waits for its   ChildAssigned     ← Tell, Request, Response,
//	                 Assign)                             Terminate, Reload, Reattach
//	HostAssigned    ← Ready, Activity, Goodbye,
//	                  Tell, Request, Response
//
// A Heartbeat is legal in every stage from the handshake's end on.
type Stage uint8

// The stages, in the order a side goes through them.
const (
	// HostAwaitHello: the child was spawned; its Hello comes first.
	HostAwaitHello Stage = iota + 1
	// HostAwaitIdle: the child was welcomed and builds its actor system.
	HostAwaitIdle
	// HostIdle: the child waits, idle, for its Assign.
	HostIdle
	// HostAssigned: the child was given its worker.
	HostAssigned
	// ChildAwaitWelcome: the child said hello and waits for the host.
	ChildAwaitWelcome
	// ChildAwaitAssign: the child is idle, waiting for its worker.
	ChildAwaitAssign
	// ChildAssigned: the child runs its worker.
	ChildAssigned
	stageMax = ChildAssigned
)

var stageNames = [...]string{"", "host awaiting hello", "host awaiting idle", "host with an idle child",
	"host with an assigned child", "child awaiting welcome", "child awaiting assign", "child assigned"}

func (s Stage) String() string {
	if s >= 1 && s <= stageMax {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", uint8(s))
}

// kindSet is a set of frame kinds.
type kindSet uint32

func kinds(ks ...Kind) kindSet {
	var s kindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

// legal is, for each stage, the frames that side may receive in it.
var legal = [stageMax + 1]kindSet{
	HostAwaitHello:    kinds(KindHello),
	HostAwaitIdle:     kinds(KindIdle, KindHeartbeat),
	HostIdle:          kinds(KindHeartbeat),
	HostAssigned:      kinds(KindHeartbeat, KindReady, KindActivity, KindGoodbye, KindTell, KindRequest, KindResponse),
	ChildAwaitWelcome: kinds(KindWelcome),
	ChildAwaitAssign:  kinds(KindAssign, KindTerminate, KindHeartbeat, KindReattach),
	ChildAssigned:     kinds(KindTell, KindRequest, KindResponse, KindTerminate, KindReload, KindHeartbeat, KindReattach),
}

// Allows reports whether a side in stage s may receive a frame of kind k.
func (s Stage) Allows(k Kind) bool {
	return s >= 1 && s <= stageMax && k < 32 && legal[s]&(1<<k) != 0
}

// Check returns nil when a frame of kind k is legal in stage s, and a
// *ProtocolError naming both otherwise.
func (s Stage) Check(k Kind) error {
	if s.Allows(k) {
		return nil
	}
	return violation(k, "not allowed to the %v", s)
}

// CheckVersion returns a *ProtocolError when the peer's protocol version,
// read from a frame of kind k (Hello or Welcome), is not this side's.
func CheckVersion(k Kind, peer uint16) error {
	if peer != Version {
		return violation(k, "peer speaks protocol version %d, this side %d", peer, Version)
	}
	return nil
}
