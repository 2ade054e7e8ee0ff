// Command bgwclusterbench runs the cluster benchmarks of package
// bench/cluster and prints each measurement beside its baseline, in the
// table format of bgwbench.
//
//	go run ./bench/cmd/bgwclusterbench [-n scale]
//	bash bench/run.sh -suite cluster
//
// Its members, and their workers, are this binary re-executed. It exits 1
// when the benchmark fails to run; a missed target is reported in the
// table, not an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	clusterbench "github.com/bgworker/bgworker/bench/cluster"
	bgw "github.com/bgworker/bgworker/runtime"
)

func main() {
	bgw.Main()               // a worker child: runs its worker and exits
	clusterbench.ChildMain() // a member: runs it and exits
	os.Exit(run())
}

func run() int {
	scale := flag.Float64("n", 1, "scale the iteration counts by this factor (> 0)")
	suite := flag.String("suite", "cluster", `the suite to run; only "cluster"`)
	flag.Parse()
	if flag.NArg() > 0 || *scale <= 0 || *suite != "cluster" {
		flag.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("%-10s %-44s %12s %-6s | %-34s %12s | %8s | %-22s %s\n",
		"suite", "measurement", "value", "unit", "baseline (same run)", "baseline", "ratio", "target", "")
	rs, err := clusterbench.Run(ctx, *scale, os.Stderr)
	clusterbench.Print(os.Stdout, rs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bgwclusterbench: %v\n", err)
		return 1
	}
	return 0
}
