package bench

import (
	"io"

	"github.com/bgworker/bgworker/bench/report"
)

// The results of the suites are package report's (shared with the cluster
// benchmarks); these names keep the suites' code short.

// Result is one measured line of the comparison table (see report.Result).
type Result = report.Result

// Cond is one condition of a target (see report.Cond).
type Cond = report.Cond

// JSONResult is one element of the array WriteJSON prints (see
// report.JSONResult).
type JSONResult = report.JSONResult

// AtMost is the target value ≤ v.
func AtMost(v float64) Cond { return report.AtMost(v) }

// AtLeast is the target value ≥ v.
func AtLeast(v float64) Cond { return report.AtLeast(v) }

// RatioAtMost is the target value ÷ baseline ≤ r.
func RatioAtMost(r float64) Cond { return report.RatioAtMost(r) }

// RatioAtLeast is the target value ÷ baseline ≥ r.
func RatioAtLeast(r float64) Cond { return report.RatioAtLeast(r) }

// PrintHeader writes the table's header line.
func PrintHeader(w io.Writer) { report.PrintHeader(w) }

// Print writes results as lines of the table.
func Print(w io.Writer, rs []Result) { report.Print(w, rs) }

// WriteJSON writes results as one JSON array, an object per result.
func WriteJSON(w io.Writer, rs []Result) error { return report.WriteJSON(w, rs) }
