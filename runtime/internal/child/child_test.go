package child

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

func TestPropsHaveMailbox(t *testing.T) {
	plain := actor.PropsFromFunc(func(actor.Context) {})
	if propsHave(plain, "mailboxProducer") {
		t.Error("plain Props reported with a mailbox")
	}
	if !propsHave(plain.Configure(actor.WithMailbox(actor.Unbounded())), "mailboxProducer") {
		t.Error("Props with WithMailbox reported without one")
	}
}

// The fast actor system of a child is built against protoactor's
// ActorSystem as it is at the version in go.mod. A change of that struct
// makes the child fall back to the stock constructor (correct, but ~3 ms
// slower per cold start): this test says so loudly instead.
func TestChildActorSystemLayout(t *testing.T) {
	if !childSystemLayoutOK() {
		t.Fatal("protoactor's ActorSystem or ProcessRegistryValue changed layout: newChildActorSystem falls back to " +
			"actor.NewActorSystemWithConfig; update childSystemFields in fast.go for the new version")
	}
	sys := newChildActorSystem(actor.Configure())
	defer sys.Shutdown()
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(string); ok {
			ctx.Respond("pong")
		}
	}))
	r, err := sys.Root.RequestFuture(pid, "ping", 5e9).Result()
	if err != nil || r != "pong" {
		t.Fatalf("request on the fast system = %v, %v; want pong", r, err)
	}
}

// The prewarm of a pool child leaves no actor behind: its throwaway actor
// is stopped and gone from the registry before the child reports idle
// (the crash guardian it creates is the one the worker's start uses).
func TestPrewarmLeavesNothing(t *testing.T) {
	sys := newChildActorSystem(actor.Configure())
	defer sys.Shutdown()
	c := &child{system: sys}
	count := func() int {
		n := 0
		for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
			n += m.Count()
		}
		return n
	}
	c.prewarm()
	if _, ok := sys.ProcessRegistry.GetLocal("prewarm"); ok {
		t.Fatal("the prewarm actor is still registered")
	}
	before := count()
	c.prewarm()
	if after := count(); after != before {
		t.Fatalf("registry holds %d processes after a second prewarm, %d after the first", after, before)
	}
}
