package child

// Cold-start helpers of Run (child.go).
//
// Where a cold child's time goes (WarmPool off, StartWorker → WaitStarted,
// 2 vCPU VM with load average 15–70, p50s; timestamps written by Run
// relative to StartWorker, and GODEBUG=inittrace=1):
//
//   - StartWorker → Run: 7.3–9.4 ms loaded (~4 ms idle).
//     fork/exec, the Go runtime's start, page faults of the large binary
//     and package inits: ~2.6 ms of init clock in all (loaded), the largest
//     go.opentelemetry.io/otel/baggage, x/text bidirule, prometheus/procfs,
//     net/netip, prometheus/client_golang, shmactor's crc32 table
//     (0.2–0.6 ms each, loaded). Fixed by what the host binary links;
//     nothing Run can remove. No GC cycle runs in a cold child
//     (GODEBUG=gctrace=1 prints nothing; inits allocate ~375 KiB).
//   - actor.NewActorSystem: ~3 ms idle, 6.5–8 ms loaded, ~67,000
//     allocations, almost all of it newSliceMap (1,024 concurrent maps of
//     32 shards each) for a process that hosts one actor. It ran while the
//     handshake was in flight but is far longer than the round trip, so it
//     sat on the critical path. newChildActorSystem builds the same system
//     with a small registry in ~0.1 ms.
//   - Run → WaitStarted returns, after the change: ~1.5–1.9 ms loaded:
//     Hello → Welcome round trip ~0.6 ms, assign → Ready seen by the host
//     ~0.5 ms, the rest (signal.Notify, FileConn, system) ~0.1–0.2 ms each.
//
// Measured in one process alternating two runtimes (paired, n=30–40):
// StartWorker → WaitStarted p50 19.2 → 10.0 ms with newChildActorSystem
// (faster in 29 of 30 pairs). Tried and not kept, no effect beyond noise:
// debug.SetGCPercent(-1) until Idle (10.46 vs 10.52 ms; no GC runs anyway),
// Hello and Idle by Conn.SendUrgent instead of the writer goroutine
// (9.36 vs 9.25 ms), Hello written raw on fd 3 before FileConn and
// signal.Notify (11.33 vs 10.99, then 11.43 vs 11.15 ms).
//
// newChildActorSystem is protoactor's NewActorSystemWithConfig
// (actor_system.go, v0.0.0-20240822202345-3c0e61ca19c9) step for step,
// except that the process registry has childRegistryBuckets buckets. Two
// fields of ActorSystem are unexported (logger, stopper); they are set by
// reflection, after checking that the struct is the one this was written
// against. A mismatch (another protoactor version) falls back to
// actor.NewActorSystemWithConfig, so an upgrade costs speed, not
// correctness; after an upgrade, compare NewActorSystemWithConfig with
// newChildActorSystem.

import (
	"log/slog"
	"reflect"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/extensions"
	"github.com/lithammer/shortuuid/v4"
	cmap "github.com/orcaman/concurrent-map"
)

// childRegistryBuckets is the child's process registry size: 4 buckets of
// 32 shards (128 locked maps) instead of 1,024 × 32. A child hosts one
// worker actor (and whatever few it spawns) on a handful of threads.
const childRegistryBuckets = 4

// childSystemFields is the layout of actor.ActorSystem that
// newChildActorSystem fills in: every field, in order, with its type.
var childSystemFields = []struct {
	name string
	typ  reflect.Type
}{
	{"ProcessRegistry", reflect.TypeFor[*actor.ProcessRegistryValue]()},
	{"Root", reflect.TypeFor[*actor.RootContext]()},
	{"EventStream", reflect.TypeFor[*eventstream.EventStream]()},
	{"Guardians", reflect.TypeOf(actor.NewGuardians).Out(0)},
	{"DeadLetter", reflect.TypeOf(actor.NewDeadLetter).Out(0)},
	{"Extensions", reflect.TypeFor[*extensions.Extensions]()},
	{"Config", reflect.TypeFor[*actor.Config]()},
	{"ID", reflect.TypeFor[string]()},
	{"stopper", reflect.TypeFor[chan struct{}]()},
	{"logger", reflect.TypeFor[*slog.Logger]()},
}

// childSystemLayoutOK reports whether actor.ActorSystem is exactly the
// struct newChildActorSystem knows how to build. (The module version is not
// checked through debug.ReadBuildInfo: test binaries carry no dependency
// list, so the tests' children would never take the fast path.)
func childSystemLayoutOK() bool {
	// ProcessRegistryValue is built as a literal: SequenceID, ActorSystem,
	// Address, LocalPIDs, RemoteHandlers and nothing else to initialise.
	if reflect.TypeFor[actor.ProcessRegistryValue]().NumField() != 5 {
		return false
	}
	t := reflect.TypeFor[actor.ActorSystem]()
	if t.NumField() != len(childSystemFields) {
		return false
	}
	for i, want := range childSystemFields {
		f := t.Field(i)
		if f.Name != want.name || f.Type != want.typ {
			return false
		}
	}
	return true
}

// setUnexported sets the unexported field name of *sys to v.
func setUnexported(sys *actor.ActorSystem, name string, v any) {
	f := reflect.ValueOf(sys).Elem().FieldByName(name)
	reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem().Set(reflect.ValueOf(v))
}

// newChildActorSystem builds the child's actor system like
// actor.NewActorSystemWithConfig, with a small process registry.
func newChildActorSystem(config *actor.Config) *actor.ActorSystem {
	if !childSystemLayoutOK() {
		return actor.NewActorSystemWithConfig(config)
	}
	system := &actor.ActorSystem{}
	system.ID = shortuuid.New()
	system.Config = config
	setUnexported(system, "logger", config.LoggerFactory(system))
	pids := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, childRegistryBuckets)}
	for i := range pids.LocalPIDs {
		pids.LocalPIDs[i] = cmap.New()
	}
	// NewProcessRegistry with its own SliceMap; "nonhost" is protoactor's
	// localAddress, which Get compares against.
	system.ProcessRegistry = &actor.ProcessRegistryValue{ActorSystem: system, Address: "nonhost", LocalPIDs: pids}
	system.Root = actor.NewRootContext(system, actor.EmptyMessageHeader)
	system.Guardians = actor.NewGuardians(system)
	system.EventStream = eventstream.NewEventStream()
	system.DeadLetter = actor.NewDeadLetter(system)
	system.Extensions = extensions.NewExtensions()
	actor.SubscribeSupervision(system)
	system.Extensions.Register(actor.NewMetrics(system, config.MetricsProvider))
	system.ProcessRegistry.Add(actor.NewEventStreamProcess(system), "eventstream")
	setUnexported(system, "stopper", make(chan struct{}))
	system.Logger().Info("actor system started", slog.String("id", system.ID))
	return system
}
