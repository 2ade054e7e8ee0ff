// Command bgwbench runs the benchmark suites of package bench and prints
// each measurement beside the baseline measured in the same run.
//
//	go run ./bench/cmd/bgwbench [-suite bridge,...] [-n scale] [-format table|json] [-peers bgwpeers] [-cpuprofile file]
//
// The table is the default output, a row per result as each suite ends;
// -format json prints one JSON array of every result at the end instead
// (see bench.WriteJSON). Progress and diagnostics go to stderr. -peers
// names a bgwpeers binary (module bench/peers), which the bridge suite
// drives to measure hashicorp/go-plugin beside the runtime; without it
// those rows are left out. It exits 1 when a suite fails to run; a missed
// target is reported in the output, not an error. Workers and baseline
// children are this same binary re-executed, so build it once
// (bench/run.sh does, bgwpeers too) rather than comparing binaries.
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
	format := flag.String("format", "table", "output format: table or json")
	peersBin := flag.String("peers", "", "the bgwpeers `binary` that measures go-plugin in the bridge suite; empty = leave those rows out")
	flag.Parse()
	if flag.NArg() > 0 || *scale <= 0 {
		flag.Usage()
		return 2
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(os.Stderr, "bgwbench: -format %q: want table or json\n", *format)
		return 2
	}
	if *peersBin != "" {
		if fi, err := os.Stat(*peersBin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			fmt.Fprintf(os.Stderr, "bgwbench: -peers %q: not an executable file\n", *peersBin)
			return 2
		}
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
	ctx = bench.WithPeers(ctx, *peersBin)

	if *format == "table" {
		bench.PrintHeader(os.Stdout)
	}
	code := 0
	var all []bench.Result
	for _, s := range run {
		rs, err := bench.RunSuite(ctx, s)
		if *format == "table" {
			bench.Print(os.Stdout, rs)
		}
		all = append(all, rs...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bgwbench: suite %s: %v\n", s.Name, err)
			code = 1
		}
		if ctx.Err() != nil {
			break
		}
	}
	if *format == "json" {
		if err := bench.WriteJSON(os.Stdout, all); err != nil {
			fmt.Fprintf(os.Stderr, "bgwbench: %v\n", err)
			code = 1
		}
	}
	return code
}
