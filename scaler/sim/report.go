package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// WriteTable prints one row per policy (with a sweep, one per run, the
// chosen one marked with *), and the kubegpu/cheapest-baseline ratio.
func WriteTable(w io.Writer, rep *Report, sweep bool) error {
	fmt.Fprintf(w, "trace %s, speed %gx, %d requests, SLO %s %s, goal %.0f%%; start %d replicas (first minute's need), peak need %d\n",
		filepath.Base(rep.Trace), rep.Speed, rep.Requests, rep.Config.Signal, rep.Config.SLO, 100*rep.Config.Goal, rep.Initial, rep.PeakNeed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "policy\tsetting\tin SLO %%\tTTFT p50\tp95\tp99\tE2E p50\tp95\tp99\tGPU-h\tscale events\tpeak replicas\t\n")
	for _, p := range rep.Policies {
		runs := []*Result{p.Chosen}
		if sweep {
			runs = p.Runs
		}
		for _, r := range runs {
			mark := ""
			if sweep && r == p.Chosen && p.ReachedGoal {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t%d\t%d\t\n",
				p.Policy, mark, settingValue(r.Setting), 100*r.Attainment, r.TTFT.P50, r.TTFT.P95, r.TTFT.P99,
				r.E2E.P50, r.E2E.P95, r.E2E.P99, r.GPUHours, r.ScaleEvents, r.PeakReplicas)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if c := rep.Comparison(); c != "" {
		fmt.Fprintln(w, c)
	}
	return nil
}

func settingValue(s Setting) string {
	switch s.Policy {
	case PolicyKEDAQueue:
		return fmt.Sprintf("queue>%g", s.Value)
	case PolicyHPAUtil:
		return fmt.Sprintf("util=%g%%", 100*s.Value)
	case PolicyStatic:
		return fmt.Sprintf("%g replicas", s.Value)
	}
	return "slo"
}

// CheapestBaseline is the baseline run with the fewest GPU-hours among
// those reaching at least attainment, or nil.
func (rep *Report) CheapestBaseline(attainment float64) *Result {
	var best *Result
	for _, p := range rep.Policies {
		if p.Policy == PolicyKubegpu {
			continue
		}
		for _, r := range p.Runs {
			if r.Attainment >= attainment && (best == nil || r.GPUHours < best.GPUHours) {
				best = r
			}
		}
	}
	return best
}

// kubegpu returns kubegpu's reported run, or nil.
func (rep *Report) kubegpu() *Result {
	for _, p := range rep.Policies {
		if p.Policy == PolicyKubegpu {
			return p.Chosen
		}
	}
	return nil
}

// compareAt is the attainment kubegpu is compared at: its own, or the goal
// when it reaches the goal (the cheapest baseline that reaches the goal is
// the alternative a user would pick).
func (rep *Report) compareAt(kg *Result) float64 {
	return min(kg.Attainment, rep.Config.Goal)
}

// Comparison states kubegpu's GPU-hours against the cheapest baseline run
// that reaches kubegpu's attainment, or the goal if kubegpu reaches it.
func (rep *Report) Comparison() string {
	kg := rep.kubegpu()
	if kg == nil {
		return ""
	}
	at := rep.compareAt(kg)
	line := fmt.Sprintf("kubegpu: %.2f%% in SLO (goal %.0f%%: %s)", 100*kg.Attainment, 100*rep.Config.Goal, yesNo(kg.Attainment >= rep.Config.Goal))
	if b := rep.CheapestBaseline(at); b != nil {
		line += fmt.Sprintf("; %.3f GPU-h = %.2fx the cheapest baseline run at >= %.2f%% (%s, %.2f%%, %.3f GPU-h)",
			kg.GPUHours, kg.GPUHours/b.GPUHours, 100*at, b.Setting, 100*b.Attainment, b.GPUHours)
	} else {
		line += fmt.Sprintf("; no baseline run reaches %.2f%%", 100*at)
	}
	return line
}

func yesNo(b bool) string {
	if b {
		return "reached"
	}
	return "missed"
}

// JSON is the --json output.
type JSON struct {
	Trace    string                `json:"trace"`
	Speed    float64               `json:"speed"`
	SLO      string                `json:"slo"`
	Signal   string                `json:"slo_signal"`
	Goal     float64               `json:"goal_pct"`
	Requests int                   `json:"requests"`
	Initial  int32                 `json:"initial_replicas"`
	PeakNeed int32                 `json:"peak_need_replicas"`
	Model    JSONModel             `json:"model"`
	Policies map[string]JSONPolicy `json:"policies"`
	// KubegpuVsCheapest is kubegpu's GPU-hours over the cheapest baseline
	// run reaching kubegpu's attainment, or the goal if kubegpu reaches it
	// (absent if none does).
	KubegpuVsCheapest *float64 `json:"kubegpu_gpu_hours_vs_cheapest_baseline,omitempty"`
	CheapestBaseline  string   `json:"cheapest_baseline,omitempty"`
	// Bound is the clairvoyant bound (--bound), if computed.
	Bound *JSONBound `json:"clairvoyant_bound,omitempty"`
}

// JSONModel is the replica model used.
type JSONModel struct {
	StepBaseMs        float64 `json:"step_base_ms"`
	PerSeqMs          float64 `json:"per_seq_ms"`
	PerPrefillTokenUs float64 `json:"per_prefill_token_us"`
	KVTokens          int     `json:"kv_tokens"`
	MaxSeqs           int     `json:"max_seqs"`
	MaxBatchedTokens  int     `json:"max_batched_tokens"`
	ColdStartS        float64 `json:"cold_start_s"`
}

// JSONPolicy is one policy's reported run (and its sweep).
type JSONPolicy struct {
	JSONRun
	ReachedGoal bool      `json:"reached_goal"`
	Sweep       []JSONRun `json:"sweep,omitempty"`
	Timeline    []JSONPt  `json:"timeline,omitempty"`
}

// JSONRun is one run's figures.
type JSONRun struct {
	Setting     string  `json:"setting"`
	Attainment  float64 `json:"slo_attainment"`
	GPUHours    float64 `json:"gpu_hours"`
	TTFTP50     float64 `json:"ttft_p50_s"`
	TTFTP95     float64 `json:"ttft_p95_s"`
	TTFTP99     float64 `json:"ttft_p99_s"`
	E2EP50      float64 `json:"e2e_p50_s"`
	E2EP95      float64 `json:"e2e_p95_s"`
	E2EP99      float64 `json:"e2e_p99_s"`
	ScaleEvents int     `json:"scale_events"`
	Peak        int32   `json:"peak_replicas"`
}

// JSONBound is the clairvoyant bound: its replayed plan's figures.
type JSONBound struct {
	WindowS    float64 `json:"window_s"`
	Attainment float64 `json:"slo_attainment"`
	GPUHours   float64 `json:"gpu_hours"`
	// VsCheapest is GPUHours over the cheapest baseline run reaching the
	// goal (absent when none does).
	VsCheapest   *float64 `json:"vs_cheapest_baseline,omitempty"`
	ReachedGoal  bool     `json:"reached_goal"`
	MissBudget   int      `json:"miss_budget"`
	Needs        []int32  `json:"replicas_per_window"`
	PlanSteps    int      `json:"plan_steps"`
	FirstPlanGPU float64  `json:"first_plan_gpu_hours"`
	FirstPlanAtt float64  `json:"first_plan_slo_attainment"`
}

// JSONPt is one timeline bucket.
type JSONPt struct {
	T        float64 `json:"t_s"`
	Rate     float64 `json:"arrivals_per_s"`
	Replicas int32   `json:"replicas"`
	Ready    int32   `json:"ready"`
	Latency  float64 `json:"latency_p95_s"`
}

func r4(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return -1
	}
	return math.Round(v*1e4) / 1e4
}

func jsonRun(r *Result) JSONRun {
	return JSONRun{
		Setting: r.Setting.String(), Attainment: r4(100 * r.Attainment), GPUHours: r4(r.GPUHours),
		TTFTP50: r4(r.TTFT.P50), TTFTP95: r4(r.TTFT.P95), TTFTP99: r4(r.TTFT.P99),
		E2EP50: r4(r.E2E.P50), E2EP95: r4(r.E2E.P95), E2EP99: r4(r.E2E.P99),
		ScaleEvents: r.ScaleEvents, Peak: r.PeakReplicas,
	}
}

// ToJSON builds the --json document.
func (rep *Report) ToJSON(sweep bool) *JSON {
	m := rep.Config.Model
	j := &JSON{
		Trace: filepath.Base(rep.Trace), Speed: rep.Speed, SLO: rep.Config.SLO.String(), Signal: string(rep.Config.Signal),
		Goal: 100 * rep.Config.Goal, Requests: rep.Requests, Initial: rep.Initial, PeakNeed: rep.PeakNeed,
		Model: JSONModel{
			StepBaseMs: m.StepBase.Seconds() * 1e3, PerSeqMs: m.PerSeq.Seconds() * 1e3, PerPrefillTokenUs: m.PerPrefillToken.Seconds() * 1e6,
			KVTokens: m.KVTokens, MaxSeqs: m.MaxSeqs, MaxBatchedTokens: m.MaxBatchedTokens, ColdStartS: m.ColdStart.Seconds(),
		},
		Policies: map[string]JSONPolicy{},
	}
	for _, p := range rep.Policies {
		jp := JSONPolicy{JSONRun: jsonRun(p.Chosen), ReachedGoal: p.ReachedGoal}
		if sweep {
			for _, r := range p.Runs {
				jp.Sweep = append(jp.Sweep, jsonRun(r))
			}
		}
		for _, pt := range p.Chosen.Timeline {
			jp.Timeline = append(jp.Timeline, JSONPt{T: pt.At.Seconds(), Rate: r4(pt.Rate), Replicas: pt.Replicas, Ready: pt.Ready, Latency: r4(pt.Latency)})
		}
		j.Policies[p.Policy] = jp
	}
	if kg := rep.kubegpu(); kg != nil {
		if b := rep.CheapestBaseline(rep.compareAt(kg)); b != nil {
			v := r4(kg.GPUHours / b.GPUHours)
			j.KubegpuVsCheapest, j.CheapestBaseline = &v, b.Setting.String()
		}
	}
	if b := rep.Bound; b != nil {
		jb := &JSONBound{
			WindowS: b.Window.Seconds(), Attainment: r4(100 * b.Replay.Attainment), GPUHours: r4(b.Replay.GPUHours),
			ReachedGoal: b.Replay.Attainment >= rep.Config.Goal, MissBudget: b.Budget, Needs: b.Needs, PlanSteps: len(b.Plan),
			FirstPlanGPU: r4(b.OptimisticGPUHours), FirstPlanAtt: r4(100 * b.OptimisticAttainment),
		}
		if c := rep.CheapestBaseline(rep.Config.Goal); c != nil {
			v := r4(b.Replay.GPUHours / c.GPUHours)
			jb.VsCheapest = &v
		}
		j.Bound = jb
	}
	return j
}

// WriteJSONFile writes the report.
func (rep *Report) WriteJSONFile(path string, sweep bool) error {
	b, err := json.MarshalIndent(rep.ToJSON(sweep), "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
