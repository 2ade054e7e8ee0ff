package runtime

import (
	"bytes"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime/bridge"
)

func init() {
	// procs: answers the request "procs" with its GOMAXPROCS and the
	// GOMAXPROCS of its environment, as "<n> <quoted env>".
	actors.MustDefine(actors.Spec{Name: "procs", Props: func(actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch ctx.Message().(type) {
			case string:
				ctx.Respond(fmt.Sprintf("%d %q", goruntime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS")))
			case *actors.Terminate:
				ctx.Stop(ctx.Self())
			}
		})
	}})
}

// spawnEnv reads the environment a process was started with.
func spawnEnv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		env = append(env, string(kv))
	}
	return env
}

func hasKV(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

// A child starts on one P (GOMAXPROCS=1 in its environment) and takes the
// Go runtime's default once its worker runs; its environment no longer
// says 1, so the worker's own children do not start on one P. A host
// whose children's environment sets GOMAXPROCS keeps it.
func TestChildRaisesGOMAXPROCS(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("the test process itself runs with GOMAXPROCS set")
	}
	want := goruntime.GOMAXPROCS(0) // this process's default: the same machine and limits
	h := newHarness(t, Config{})
	hd, pid := h.start("procs1", "procs", "", nil)
	env := spawnEnv(t, pid)
	if !hasKV(env, "GOMAXPROCS=1") || !hasKV(env, bridge.EnvProcs+"="+bridge.ProcsRaise) {
		t.Fatalf("child started without GOMAXPROCS=1 and %s=%s: %q", bridge.EnvProcs, bridge.ProcsRaise, env)
	}
	r, err := h.rt.System().Root.RequestFuture(hd.PID(), "procs", 10*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(r); got != fmt.Sprintf("%d %q", want, "") {
		t.Fatalf("running worker: GOMAXPROCS and its env = %s, want %d and none", got, want)
	}
}

func TestChildKeepsGOMAXPROCSOfTheEnvironment(t *testing.T) {
	h := newHarness(t, Config{ChildEnv: append(pmtChildEnv(), "GOMAXPROCS=3")})
	hd, pid := h.start("procs2", "procs", "", nil)
	if env := spawnEnv(t, pid); !hasKV(env, "GOMAXPROCS=3") || hasKV(env, "GOMAXPROCS=1") || hasKV(env, bridge.EnvProcs+"="+bridge.ProcsRaise) {
		t.Fatalf("child's environment %q: want the configured GOMAXPROCS=3 only", env)
	}
	r, err := h.rt.System().Root.RequestFuture(hd.PID(), "procs", 10*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(r); got != `3 "3"` {
		t.Fatalf("running worker: GOMAXPROCS and its env = %s, want 3 and \"3\"", got)
	}
}
