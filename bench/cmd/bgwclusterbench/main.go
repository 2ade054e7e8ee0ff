// Command bgwclusterbench runs the cluster benchmarks of package
// bench/cluster and prints each measurement beside its baseline, in the
// table format of bgwbench.
//
//	go run ./bench/cmd/bgwclusterbench [-n scale] [-format table|json]
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
	"github.com/bgworker/bgworker/bench/report"
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
	format := flag.String("format", "table", "output format: table or json")
	flag.Parse()
	if flag.NArg() > 0 || *scale <= 0 || *suite != "cluster" || (*format != "table" && *format != "json") {
		flag.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *format == "table" {
		report.PrintHeader(os.Stdout)
	}
	rs, err := clusterbench.Run(ctx, *scale, os.Stderr)
	if *format == "json" {
		if jerr := report.WriteJSON(os.Stdout, rs); jerr != nil && err == nil {
			err = jerr
		}
	} else {
		report.Print(os.Stdout, rs)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bgwclusterbench: %v\n", err)
		return 1
	}
	return 0
}
