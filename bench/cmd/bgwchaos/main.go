// Command bgwchaos is the runtime's chaos soak: it runs a host (this binary
// re-executed, on a LockFile) with plain, escaping, leaving and
// shared-memory workers and a warm pool, SIGKILLs and SIGSTOPs its
// workers, pool children, escaped grandchildren and the host itself at
// random, and checks the invariants the whole time. It prints the figures
// at the end and exits 1 on any violation, naming it. See package
// github.com/bgworker/bgworker/bench/chaos.
//
//	go run ./bench/cmd/bgwchaos -duration 10m
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/bench/chaos"
	bgw "github.com/bgworker/bgworker/runtime"
)

func main() {
	bgw.Main() // a worker child runs its worker and exits
	if os.Getenv(chaos.RoleEnv) == "host" {
		os.Exit(chaos.HostMain())
	}
	duration := flag.Duration("duration", time.Minute, "how long to inject faults")
	seed := flag.Uint64("seed", 0, "seed of the fault schedule (0 = random; printed)")
	noCgroups := flag.Bool("nocgroups", false, "run the host with process groups only (Config.NoCgroups)")
	keep := flag.Bool("keep", false, "keep the host logs and journal even when nothing was violated")
	quiet := flag.Bool("q", false, "no progress lines on stderr")
	flag.Parse()
	if flag.NArg() > 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "usage: bgwchaos [-duration 10m] [-seed N] [-nocgroups] [-keep] [-q]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var log io.Writer = os.Stderr
	if *quiet {
		log = nil
	}
	rep, err := chaos.Run(ctx, chaos.Options{Duration: *duration, Seed: *seed, NoCgroups: *noCgroups, Keep: *keep, Log: log})
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgwchaos:", err)
		os.Exit(2)
	}
	if rep.Failed() {
		os.Exit(1)
	}
}
