package shmq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// Names of the workers and regions.
const (
	Producer    = "shm_producer"
	Consumer    = "shm_consumer"
	QueueRegion = "shmq_queue"
	StatsRegion = "shmq_stats"
	crashPrefix = "crash-after="
)

// Offsets of the counters in the stats region.
const (
	OffProduced = 0  // messages sent by the producer
	OffConsumed = 64 // messages received by the consumer (own cache line)
	OffBytes    = 128
)

// msgSize is the size of each message, and interval the pause between them.
const (
	msgSize  = 1024
	interval = 10 * time.Millisecond
)

var regions = []shmactor.Region{
	{Name: QueueRegion, Size: shmactor.QueueSize(64 << 10), Init: func(mem []byte) {
		if err := shmactor.InitQueue(mem); err != nil {
			panic(err)
		}
	}},
	{Name: StatsRegion, Size: 192},
}

// CrashArg is the producer's Arg that makes it panic d after it starts, in
// the segment's first generation only: one all-for-one reset, then calm.
func CrashArg(d time.Duration) []byte { return []byte(crashPrefix + d.String()) }

func init() {
	restart := actors.Exponential{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}
	actors.MustRegister(actors.Spec{Name: Producer, StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: regions, Restart: restart, Run: produce})
	actors.MustRegister(actors.Spec{Name: Consumer, StartAt: phases.ConsistentState, SharedMemory: true,
		Regions: regions, Restart: restart, Run: consume})
}

func mem(w actors.Worker, name string) []byte {
	b, err := w.Segment().Region(name)
	if err != nil {
		panic(err)
	}
	return b
}

func produce(ctx context.Context, w actors.Worker) error {
	var crash <-chan time.Time
	if d, ok := strings.CutPrefix(string(w.Arg()), crashPrefix); ok && w.Segment().Generation() == 1 {
		after, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("shmq: Arg %q: %w", w.Arg(), err)
		}
		crash = time.After(after)
	}
	q, err := shmactor.AttachSender(mem(w, QueueRegion))
	if err != nil {
		return err
	}
	defer q.Detach()
	stats := mem(w, StatsRegion)
	produced := shmactor.Uint64At(stats, OffProduced)
	msg := make([]byte, msgSize)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-crash:
			panic("shmq: producer crashing mid-stream, as asked")
		case <-tick.C:
		}
		n := produced.Load() + 1
		binary.LittleEndian.PutUint64(msg, n)
		if err := q.Send(ctx, msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("shmq: send: %w", err)
		}
		produced.Store(n)
	}
}

func consume(ctx context.Context, w actors.Worker) error {
	q, err := shmactor.AttachReceiver(mem(w, QueueRegion))
	if err != nil {
		return err
	}
	defer q.Detach()
	stats := mem(w, StatsRegion)
	consumed, bytes := shmactor.Uint64At(stats, OffConsumed), shmactor.Uint64At(stats, OffBytes)
	buf := make([]byte, msgSize)
	var want uint64 = 1
	for {
		m, err := q.Receive(ctx, buf)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, shmactor.ErrDetached):
			// The producer went away cleanly; wait to be stopped or reset.
			<-ctx.Done()
			return nil
		case err != nil:
			return fmt.Errorf("shmq: receive: %w", err)
		}
		if got := binary.LittleEndian.Uint64(m); got != want {
			return fmt.Errorf("shmq: message %d arrived, want %d", got, want)
		}
		want++
		consumed.Add(1)
		bytes.Add(uint64(len(m)))
	}
}

// Counters reads the shared counters from the host's view of a segment.
func Counters(seg *shmactor.Segment) (produced, consumed uint64, ok bool) {
	if seg == nil {
		return 0, 0, false
	}
	b, err := seg.Region(StatsRegion)
	if err != nil {
		return 0, 0, false
	}
	return shmactor.Uint64At(b, OffProduced).Load(), shmactor.Uint64At(b, OffConsumed).Load(), true
}
