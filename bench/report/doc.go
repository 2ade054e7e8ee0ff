// Package report is the benchmarks' results: a measurement beside the
// baseline measured in the same run, their ratio and the target, printed
// as the comparison table or as JSON. It is a package of its own, with no
// dependency on the runtime, so that the cluster benchmarks (a binary of
// their own, which links grpc) and bgwbench print the same rows.
//
//	rs := []report.Result{{ID: "bridge.request.p50", Suite: "bridge", Name: "request/response 64 B p50",
//		Value: 41.5, Unit: "µs", Baseline: "raw socketpair ping-pong p50", BaselineValue: 8.1,
//		Target: []report.Cond{report.RatioAtMost(1.3)}}}
//	report.PrintHeader(os.Stdout)
//	report.Print(os.Stdout, rs)
//	report.WriteJSON(os.Stdout, rs)
package report
