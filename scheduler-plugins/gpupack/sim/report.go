package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
)

// WriteTable prints one row per policy.
func WriteTable(w io.Writer, sums []Summary, inflate float64) error {
	end := int(math.Round(100 * inflate))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "policy\talloc@100%%\talloc@%d%%\tunallocated GPUs@%d%%\tfailed pods\t\n", end, end)
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1f\t%.1f\t\n", s.Policy, s.AllocAt100, s.AllocAtEnd, s.UnallocatedGPUs, s.Failed)
	}
	return tw.Flush()
}

// Report is the --json output.
type Report struct {
	Trace    string                  `json:"trace"`
	Nodes    int                     `json:"nodes"`
	Seeds    []uint64                `json:"seeds"`
	Policies map[string]PolicyReport `json:"policies"`
}

// PolicyReport is one policy's means over seeds.
type PolicyReport struct {
	AllocAt100           float64   `json:"alloc_at_100"`
	AllocAt130           float64   `json:"alloc_at_130"`
	UnallocatedGPUsAt130 float64   `json:"unallocated_gpus_at_130"`
	FailedPods           float64   `json:"failed_pods"`
	Curve                []float64 `json:"curve"`
}

// NewReport collects summaries.
func NewReport(trace string, nodes int, seeds []uint64, sums []Summary) *Report {
	r := &Report{Trace: filepath.Base(trace), Nodes: nodes, Seeds: seeds, Policies: map[string]PolicyReport{}}
	for _, s := range sums {
		r.Policies[s.Policy] = PolicyReport{
			AllocAt100: round2(s.AllocAt100), AllocAt130: round2(s.AllocAtEnd),
			UnallocatedGPUsAt130: round2(s.UnallocatedGPUs), FailedPods: s.Failed, Curve: roundAll(s.Curve),
		}
	}
	return r
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func roundAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = round2(x)
	}
	return out
}

// WriteJSONFile writes the report.
func (r *Report) WriteJSONFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ReadReportFile reads a --json report back.
func ReadReportFile(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &r, nil
}

// Merge adds to sums the policies of an earlier report of the same trace,
// node count and seeds that sums lack (a run of the policies that did
// not change), and returns them in PolicyNames order, unknown names last.
func Merge(sums []Summary, trace string, nodes int, seeds []uint64, earlier *Report) ([]Summary, error) {
	if earlier.Trace != filepath.Base(trace) || earlier.Nodes != nodes || !slices.Equal(earlier.Seeds, seeds) {
		return nil, fmt.Errorf("earlier report is of %s, %d nodes, seeds %v; this run is of %s, %d nodes, seeds %v",
			earlier.Trace, earlier.Nodes, earlier.Seeds, filepath.Base(trace), nodes, seeds)
	}
	out := slices.Clone(sums)
	for name, p := range earlier.Policies {
		if slices.ContainsFunc(out, func(s Summary) bool { return s.Policy == name }) {
			continue
		}
		out = append(out, Summary{
			Policy: name, Seeds: earlier.Seeds, Curve: p.Curve, AllocAt100: p.AllocAt100,
			AllocAtEnd: p.AllocAt130, UnallocatedGPUs: p.UnallocatedGPUsAt130, Failed: p.FailedPods,
		})
	}
	rank := func(name string) int {
		if i := slices.Index(PolicyNames(), name); i >= 0 {
			return i
		}
		return len(PolicyNames())
	}
	slices.SortStableFunc(out, func(a, b Summary) int { return rank(a.Policy) - rank(b.Policy) })
	return out, nil
}
