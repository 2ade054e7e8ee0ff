package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Result is one measured line of the comparison table: a measurement, the
// baseline measured beside it in the same run (or a reference quoted from
// elsewhere, which its Baseline says), their ratio, and the target.
type Result struct {
	// ID is the result's stable dotted name, e.g. "bridge.request.p50":
	// the same from run to run whatever the iteration counts, declared in
	// its suite's IDs. Names may change; IDs do not.
	ID            string
	Suite         string  // the suite that measured it; set by RunSuite
	Name          string  // what was measured, e.g. "cold start p50 (n=30)"
	Value         float64 // the measurement
	Baseline      string  // what it is compared with, e.g. "raw child p50"; "" = no baseline
	BaselineValue float64 // the baseline, in Unit
	Unit          string  // unit of Value and BaselineValue, e.g. "ms", "msg/s"
	Target        []Cond  // every condition must hold; empty = no target
}

// Cond is one condition of a target: on the value, or on the ratio to the
// baseline, at most or at least a bound.
type Cond struct {
	Ratio  bool    // on Value ÷ BaselineValue; false = on Value
	AtMost bool    // <= Bound; false = >= Bound
	Bound  float64 // in Unit for a value, a pure number for a ratio
}

// AtMost is the condition Value <= v.
func AtMost(v float64) Cond { return Cond{AtMost: true, Bound: v} }

// AtLeast is the condition Value >= v.
func AtLeast(v float64) Cond { return Cond{Bound: v} }

// RatioAtMost is the condition Value ÷ BaselineValue <= r.
func RatioAtMost(r float64) Cond { return Cond{Ratio: true, AtMost: true, Bound: r} }

// RatioAtLeast is the condition Value ÷ BaselineValue >= r.
func RatioAtLeast(r float64) Cond { return Cond{Ratio: true, Bound: r} }

// holds reports whether the condition holds for r. A ratio condition
// without a baseline, or any condition on a value that is not a finite
// number, does not hold.
func (c Cond) holds(r Result) bool {
	x, ok := r.Value, isFinite(r.Value)
	if c.Ratio {
		x, ok = r.Ratio()
	}
	if !ok {
		return false
	}
	if c.AtMost {
		return x <= c.Bound
	}
	return x >= c.Bound
}

// text is the condition as the table prints it, e.g. "ratio <= 1.3" or
// "<= 0.15 ms".
func (c Cond) text(unit string) string {
	op := ">="
	if c.AtMost {
		op = "<="
	}
	b := strconv.FormatFloat(c.Bound, 'g', -1, 64)
	if c.Ratio {
		return "ratio " + op + " " + b
	}
	return strings.TrimSpace(op + " " + b + " " + unit)
}

// Ratio returns Value ÷ BaselineValue, and false when there is no
// baseline or the quotient is not a finite number.
func (r Result) Ratio() (float64, bool) {
	if r.Baseline == "" || r.BaselineValue == 0 {
		return 0, false
	}
	q := r.Value / r.BaselineValue
	return q, isFinite(q)
}

// TargetText returns the target as text, its conditions joined by " and ";
// "" when there is none.
func (r Result) TargetText() string {
	parts := make([]string, len(r.Target))
	for i, c := range r.Target {
		parts[i] = c.text(r.Unit)
	}
	return strings.Join(parts, " and ")
}

// Met reports whether every condition of the target holds; ok is false when
// the result has no target.
func (r Result) Met() (met, ok bool) {
	if len(r.Target) == 0 {
		return false, false
	}
	for _, c := range r.Target {
		if !c.holds(r) {
			return false, true
		}
	}
	return true, true
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// PrintHeader writes the header line of [Print]'s table.
func PrintHeader(w io.Writer) {
	fmt.Fprintf(w, "%-38s %-52s %12s %-6s | %-60s %12s | %8s | %-28s %s\n",
		"id", "measurement", "value", "unit", "baseline (same run)", "baseline", "ratio", "target", "")
}

// Print writes results as rows of an aligned table.
func Print(w io.Writer, rs []Result) {
	for _, r := range rs {
		met := ""
		if m, ok := r.Met(); ok {
			met = "MISSED"
			if m {
				met = "met"
			}
		}
		ratio := ""
		if q, ok := r.Ratio(); ok {
			ratio = fmt.Sprintf("%.3gx", q)
		}
		base := ""
		if r.Baseline != "" {
			base = fmt.Sprintf("%12.4g", r.BaselineValue)
		}
		fmt.Fprintf(w, "%-38s %-52s %12.4g %-6s | %-60s %12s | %8s | %-28s %s\n",
			r.ID, r.Name, r.Value, r.Unit, r.Baseline, base, ratio, r.TargetText(), met)
	}
}

// JSONResult is one element of the array [WriteJSON] prints. Fields
// without a value are null: baseline_name, baseline and ratio when the
// result has no baseline, target and met when it has no target, and value,
// baseline or ratio when it is not a finite number.
type JSONResult struct {
	ID           string   `json:"id"`
	Suite        string   `json:"suite"`
	Name         string   `json:"name"`
	Value        *float64 `json:"value"`
	Unit         string   `json:"unit"`
	BaselineName *string  `json:"baseline_name"`
	Baseline     *float64 `json:"baseline"`
	Ratio        *float64 `json:"ratio"`  // value ÷ baseline
	Target       *string  `json:"target"` // e.g. "ratio <= 1.3 and <= 0.15 ms"
	Met          *bool    `json:"met"`
}

// JSON returns r as it is printed by [WriteJSON].
func (r Result) JSON() JSONResult {
	j := JSONResult{ID: r.ID, Suite: r.Suite, Name: r.Name, Unit: r.Unit}
	if isFinite(r.Value) {
		j.Value = &r.Value
	}
	if r.Baseline != "" {
		name, v := r.Baseline, r.BaselineValue
		j.BaselineName = &name
		if isFinite(v) {
			j.Baseline = &v
		}
		if q, ok := r.Ratio(); ok {
			j.Ratio = &q
		}
	}
	if m, ok := r.Met(); ok {
		t := r.TargetText()
		j.Target, j.Met = &t, &m
	}
	return j
}

// WriteJSON writes results as one JSON array, an object per result (see
// [JSONResult]), followed by a newline.
func WriteJSON(w io.Writer, rs []Result) error {
	out := make([]JSONResult, len(rs))
	for i, r := range rs {
		out[i] = r.JSON()
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: results as JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
