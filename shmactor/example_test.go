package shmactor_test

import (
	"context"
	"fmt"
	"log"

	"github.com/bgworker/bgworker/shmactor"
)

// A segment with a counter and a queue. Here both ends of the queue are in
// one process; in a runtime the host passes seg.File() to a worker, which
// maps it with Open and attaches to the other end.
func Example() {
	seg, err := shmactor.Build(1, []shmactor.Region{
		{Name: "stats", Size: 64},
		{Name: "jobs", Size: shmactor.QueueSize(4096), Init: func(mem []byte) {
			if err := shmactor.InitQueue(mem); err != nil {
				panic(err)
			}
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()

	stats, _ := seg.Region("stats")
	shmactor.Uint64At(stats, 0).Add(1)

	jobs, _ := seg.Region("jobs")
	s, err := shmactor.AttachSender(jobs)
	if err != nil {
		log.Fatal(err)
	}
	r, err := shmactor.AttachReceiver(jobs)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	s.Send(ctx, []byte("vacuum t1"))
	s.Detach()
	for {
		msg, err := r.Receive(ctx, nil)
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Printf("job %q\n", msg)
	}
	r.Detach()
	fmt.Println("jobs seen:", shmactor.Uint64At(stats, 0).Load())
	// Output:
	// job "vacuum t1"
	// shmactor: queue peer detached
	// jobs seen: 1
}

func ExampleMutexAt() {
	seg, err := shmactor.Build(1, []shmactor.Region{{Name: "shared", Size: 64}})
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	mem, _ := seg.Region("shared")
	mu := shmactor.MutexAt(mem, 0) // a zeroed word is an unlocked Mutex
	mu.Lock()
	mem[8]++ // guarded by mu, in every process that maps the segment
	mu.Unlock()
	fmt.Println(mem[8])
	// Output: 1
}
