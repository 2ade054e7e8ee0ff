package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
)

// shmBridge is the bridge side of the shm suite's queue-against-bridge
// comparison: a runtime without a warm pool and one bench-sink worker that
// counts 4 KiB tells.
type shmBridge struct {
	rt     *bgw.Runtime
	h      *bgw.Handle
	root   *actor.RootContext
	msg    any // the 4 KiB []byte, boxed once
	n      int // tells per trial
	sent   int // tells sent so far, warm-up included
	resets atomic.Int64
}

func newShmBridge(ctx context.Context, n int) (b *shmBridge, err error) {
	payload := make([]byte, shmMsgSize)
	for i := range payload {
		payload[i] = byte(i)
	}
	b = &shmBridge{msg: payload, n: n}
	b.rt, err = bgw.New(bgw.Config{Workers: []actors.Spec{}, WarmPool: -1, Logger: slog.New(bridgeResetFilter{
		Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}),
		n:       &b.resets,
	})})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.close(ctx)
		}
	}()
	if err := b.rt.Start(ctx); err != nil {
		return b, err
	}
	b.root = b.rt.System().Root
	if b.h, err = bridgeStart(ctx, b.rt, "bench-shm-sink", bridgeSinkCode); err != nil {
		return b, err
	}
	warm := max(1, n/10)
	if _, err := bridgeSendAndCount(b.root, b.h.PID(), b.msg, warm, warm); err != nil {
		return b, fmt.Errorf("warm-up: %w", err)
	}
	b.sent = warm
	return b, nil
}

// trial sends n 4 KiB tells and waits for the worker's count; it returns
// messages per second.
func (b *shmBridge) trial() (float64, error) {
	goruntime.GC()
	rate, err := bridgeSendAndCount(b.root, b.h.PID(), b.msg, b.n, b.sent+b.n)
	b.sent += b.n
	return rate, err
}

// close stops the worker and shuts the runtime down.
func (b *shmBridge) close(ctx context.Context) error {
	var err error
	if b.h != nil {
		err = stopWorker(ctx, b.h)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if serr := b.rt.Shutdown(sctx, phases.Fast); err == nil {
		err = serr
	}
	return err
}
