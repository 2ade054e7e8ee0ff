// Command bgwbench runs the benchmark suites of package bench and prints
// each measurement beside the baseline measured in the same run.
//
//	go run ./bench/cmd/bgwbench [-suite bridge,...] [-n scale] [-cpuprofile file]
//
// It exits 1 when a suite fails to run; a missed target is reported in the
// table, not an error. Workers and baseline children are this same binary
// re-executed, so build it once (bench/run.sh does) rather than comparing
// binaries.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/bgworker/bgworker/bench"
	bgw "github.com/bgworker/bgworker/runtime"
)

func main() {
	bgw.Main()        // a worker child: runs its worker and exits
	bench.ChildMain() // a baseline child: runs its role and exits
	os.Exit(run())
}

func run() int {
	var names []string
	for _, s := range bench.Suites() {
		names = append(names, s.Name)
	}
	suiteFlag := flag.String("suite", "", "comma-separated suites to run; empty = all ("+strings.Join(names, ", ")+")")
	scale := flag.Float64("n", 1, "scale every suite's iteration counts by this factor (> 0)")
	cpuprofile := flag.String("cpuprofile", "", "write the host's CPU profile to `file` (samples carry pprof labels per measurement)")
	flag.Parse()
	if flag.NArg() > 0 || *scale <= 0 {
		flag.Usage()
		return 2
	}

	run := bench.Suites()
	if *suiteFlag != "" {
		byName := map[string]bench.Suite{}
		for _, s := range run {
			byName[s.Name] = s
		}
		run = nil
		for _, n := range strings.Split(*suiteFlag, ",") {
			s, ok := byName[strings.TrimSpace(n)]
			if !ok {
				fmt.Fprintf(os.Stderr, "bgwbench: unknown suite %q; have %s\n", n, strings.Join(names, ", "))
				return 2
			}
			run = append(run, s)
		}
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bgwbench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bgwbench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = bench.WithScale(ctx, *scale)

	fmt.Printf("%-10s %-44s %12s %-6s | %-34s %12s | %8s | %-22s %s\n",
		"suite", "measurement", "value", "unit", "baseline (same run)", "baseline", "ratio", "target", "")
	code := 0
	for _, s := range run {
		rs, err := s.Run(ctx)
		bench.Print(os.Stdout, s.Name, rs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bgwbench: suite %s: %v\n", s.Name, err)
			code = 1
		}
		if ctx.Err() != nil {
			break
		}
	}
	return code
}
