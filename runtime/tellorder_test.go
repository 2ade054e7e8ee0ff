package runtime

import (
	"strconv"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
)

func init() {
	// tellcount: counts []byte tells, keeps the count it had when the
	// reload notice came, answers the request "at reload" with it ("none"
	// before any), and stops on the terminate notice.
	actors.MustDefine(actors.Spec{Name: "tellcount", Props: func(actors.Worker) *actor.Props {
		count, atReload := 0, "none"
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case []byte:
				count++
			case *actors.Reload:
				atReload = strconv.Itoa(count)
			case string:
				if m == "at reload" {
					ctx.Respond(atReload)
				}
			case *actors.Terminate:
				ctx.Stop(ctx.Self())
			}
		})
	}})
}

// The child's reader posts the tells of a read batch to the worker's
// mailbox in one go at the batch's end; a reload notice that follows them
// on the wire must still reach the worker after every one of them, and a
// request after the notice after it.
func TestTellsBeforeReloadNotice(t *testing.T) {
	h := newHarness(t, Config{})
	const n = 20000
	hd, _ := h.start("tellcount1", "tellcount", "", nil)
	root := h.rt.System().Root
	msg := make([]byte, 64)
	for range n {
		root.Send(hd.PID(), msg)
	}
	if told, err := h.rt.Reload(ctx(t)); err != nil || told != 1 {
		t.Fatalf("Reload = %d, %v; want 1 worker told", told, err)
	}
	r, err := root.RequestFuture(hd.PID(), "at reload", 10*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if r != strconv.Itoa(n) {
		t.Fatalf("the worker had %v tells when the reload notice came, want all %d before it", r, n)
	}
	if err := hd.Terminate(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := hd.WaitStopped(ctx(t)); err != nil {
		t.Fatal(err)
	}
}
