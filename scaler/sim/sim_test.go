package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stepTrace is 3 minutes at low, 6 at high, 8 at low rate: one step up
// and one down, long enough for a 90s cold start and a 3-5 minute
// scale-down window.
func stepTrace() *Trace {
	var reqs []Request
	add := func(from, to time.Duration, every time.Duration) {
		for t := from; t < to; t += every {
			reqs = append(reqs, Request{Arrival: t, Prompt: 1000 + int(t/time.Millisecond)%700, Output: 20 + int(t/time.Millisecond)%30})
		}
	}
	add(0, 3*time.Minute, 250*time.Millisecond)               // 4/s
	add(3*time.Minute, 9*time.Minute, 62500*time.Microsecond) // 16/s
	add(9*time.Minute, 17*time.Minute, 250*time.Millisecond)  // 4/s
	return &Trace{Name: "step", Requests: reqs}
}

func TestEndToEndStepTrace(t *testing.T) {
	tr := stepTrace()
	cfg := DefaultConfig()
	rep, err := RunAll(context.Background(), tr, 1, Options{Config: cfg, Policies: PolicyNames()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Initial < 1 || rep.PeakNeed <= rep.Initial {
		t.Fatalf("initial %d, peak need %d: want a step up", rep.Initial, rep.PeakNeed)
	}
	by := map[string]*PolicyResult{}
	for _, p := range rep.Policies {
		by[p.Policy] = p
		r := p.Chosen
		if r.Requests != len(tr.Requests) || r.GPUHours <= 0 || len(r.Timeline) == 0 {
			t.Errorf("%s: %+v", p.Policy, r)
		}
		t.Logf("%-24s attainment %.4f GPU-h %.3f ttft p99 %.2fs events %d peak %d", r.Setting, r.Attainment, r.GPUHours, r.TTFT.P99, r.ScaleEvents, r.PeakReplicas)
	}
	st := by[PolicyStatic].Chosen
	if st.Attainment < cfg.Goal || st.ScaleEvents != 0 {
		t.Errorf("static at the peak need: attainment %.4f, %d events", st.Attainment, st.ScaleEvents)
	}
	// A static run costs replicas x duration.
	if want := float64(rep.PeakNeed) * st.End.Hours(); st.GPUHours < want*0.999 || st.GPUHours > want*1.001 {
		t.Errorf("static GPU-hours %.4f, want %.4f", st.GPUHours, want)
	}
	kg := by[PolicyKubegpu].Chosen
	if kg.PeakReplicas <= rep.Initial || kg.ScaleEvents < 2 {
		t.Errorf("kubegpu did not follow the step: peak %d, %d events", kg.PeakReplicas, kg.ScaleEvents)
	}
	// The outputs: table, JSON in the shape, plot.
	var table bytes.Buffer
	if err := WriteTable(&table, rep, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range PolicyNames() {
		if !strings.Contains(table.String(), p) {
			t.Errorf("table lacks %s:\n%s", p, table.String())
		}
	}
	dir := t.TempDir()
	if err := rep.WriteJSONFile(filepath.Join(dir, "r.json"), false); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Trace    string  `json:"trace"`
		Speed    float64 `json:"speed"`
		SLO      string  `json:"slo"`
		Policies map[string]struct {
			Attainment  *float64 `json:"slo_attainment"`
			GPUHours    *float64 `json:"gpu_hours"`
			TTFTP95     *float64 `json:"ttft_p95_s"`
			E2EP95      *float64 `json:"e2e_p95_s"`
			ScaleEvents *int     `json:"scale_events"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Trace != "step" || doc.Speed != 1 || doc.SLO != "2s" || len(doc.Policies) != 4 {
		t.Errorf("json header: %+v", doc)
	}
	for name, p := range doc.Policies {
		if p.Attainment == nil || p.GPUHours == nil || p.TTFTP95 == nil || p.E2EP95 == nil || p.ScaleEvents == nil {
			t.Errorf("json %s lacks a field: %s", name, b)
		}
	}
	if err := Plot(filepath.Join(dir, "p.svg"), rep); err != nil {
		t.Fatal(err)
	}
	if svg, err := os.ReadFile(filepath.Join(dir, "p.svg")); err != nil || !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("plot: %v, %.100s", err, svg)
	}

	// Replicas never serve before their cold start: at 3 minutes plus less
	// than a cold start, no more replicas are ready than at the step.
	for _, p := range kg.Timeline {
		if p.At >= 3*time.Minute && p.At+15*time.Second < 3*time.Minute+cfg.Model.ColdStart && p.Ready > kg.Timeline[int(3*time.Minute/cfg.Timeline)-1].Ready {
			t.Errorf("at %s %d replicas ready, before any cold start could finish", p.At, p.Ready)
		}
	}
}

func TestRunIsDeterministic(t *testing.T) {
	tr := stepTrace()
	tr.Requests = tr.Requests[:sortSearch(tr.Requests, 5*time.Minute)]
	cfg := DefaultConfig()
	cfg.Initial = 1
	for _, set := range []Setting{{Policy: PolicyKubegpu}, {Policy: PolicyKEDAQueue, Value: 4}, {Policy: PolicyHPAUtil, Value: 0.7}} {
		a, err := Run(context.Background(), cfg, tr.Requests, set)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Run(context.Background(), cfg, tr.Requests, set)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: two runs differ:\n%+v\n%+v", set, a, b)
		}
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	reqs := []Request{{Prompt: 1, Output: 1}}
	cfg := DefaultConfig()
	for _, set := range []Setting{{Policy: "nope"}, {Policy: PolicyStatic, Value: 0}, {Policy: PolicyStatic, Value: 1.5},
		{Policy: PolicyKEDAQueue, Value: -1}, {Policy: PolicyHPAUtil, Value: 2}} {
		if _, err := Run(context.Background(), cfg, reqs, set); err == nil {
			t.Errorf("%+v: no error", set)
		}
	}
	bad := cfg
	bad.SLO = 0
	if _, err := Run(context.Background(), bad, reqs, Setting{Policy: PolicyStatic, Value: 1}); err == nil {
		t.Error("SLO 0: no error")
	}
	if _, err := Run(context.Background(), cfg, nil, Setting{Policy: PolicyStatic, Value: 1}); err == nil {
		t.Error("no requests: no error")
	}
}

func sortSearch(reqs []Request, at time.Duration) int {
	for i, r := range reqs {
		if r.Arrival >= at {
			return i
		}
	}
	return len(reqs)
}

func TestNeeds(t *testing.T) {
	tr := stepTrace()
	cfg := DefaultConfig()
	needs, err := Needs(context.Background(), cfg, tr.Requests, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// 0-3m at 4/s, 3-9m at 16/s, 9-17m at 4/s.
	if len(needs) != 6 {
		t.Fatalf("%d windows, want 6: %+v", len(needs), needs)
	}
	if !(needs[1].Replicas > needs[0].Replicas && needs[2].Replicas > needs[0].Replicas && needs[3].Replicas < needs[2].Replicas) {
		t.Errorf("needs do not follow the step: %+v", needs)
	}
	if got, want := OracleGPUHours(needs[:1], 3*time.Minute), float64(needs[0].Replicas)*0.05; got != want {
		t.Errorf("oracle %.3f GPU-h, want %.3f", got, want)
	}
	if _, err := Needs(context.Background(), cfg, tr.Requests, 0); err == nil {
		t.Error("window 0: no error")
	}
}

func TestComparison(t *testing.T) {
	run := func(p string, v, att, h float64) *Result {
		return &Result{Setting: Setting{Policy: p, Value: v}, Attainment: att, GPUHours: h}
	}
	statics := []*Result{run(PolicyStatic, 5, 0.97, 5), run(PolicyStatic, 6, 0.986, 6), run(PolicyStatic, 7, 0.991, 7), run(PolicyStatic, 8, 0.999, 8)}
	tests := []struct {
		name      string
		kg        *Result
		baselines []*Result
		want      string
	}{
		{"kubegpu under the goal: compared at its own attainment", run(PolicyKubegpu, 0, 0.985, 9), statics,
			"9.000 GPU-h = 1.50x the cheapest baseline run at >= 98.50% (static replicas=6, 98.60%, 6.000 GPU-h)"},
		{"kubegpu over the goal: compared at the goal", run(PolicyKubegpu, 0, 0.995, 4), statics,
			"4.000 GPU-h = 0.57x the cheapest baseline run at >= 99.00% (static replicas=7, 99.10%, 7.000 GPU-h)"},
		{"no baseline reaches it", run(PolicyKubegpu, 0, 0.985, 4), statics[:1],
			"no baseline run reaches 98.50%"},
	}
	for _, tt := range tests {
		rep := &Report{Config: DefaultConfig(), Policies: []*PolicyResult{
			{Policy: PolicyKubegpu, Chosen: tt.kg, Runs: []*Result{tt.kg}},
			{Policy: PolicyStatic, Runs: tt.baselines},
			{Policy: PolicyHPAUtil, Runs: []*Result{run(PolicyHPAUtil, 0.3, 0.96, 1)}},
		}}
		if got := rep.Comparison(); !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want it to contain %q", tt.name, got, tt.want)
		}
	}
}
