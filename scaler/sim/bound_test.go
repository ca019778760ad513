package sim

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLevelCost(t *testing.T) {
	const w, cold = 10 * time.Second, 30 * time.Second
	tests := []struct {
		name   string
		serves []bool
		warm   bool
		want   time.Duration
	}{
		{"nothing to serve", []bool{false, false}, false, 0},
		{"new replica pays its cold start", []bool{false, false, false, true}, false, cold + w},
		{"warm replica kept until a window 30s later", []bool{false, false, false, true}, true, 30*time.Second + w},
		{"warm replica removed and recreated when that is cheaper", []bool{false, false, false, false, false, true}, true, cold + w},
		{"short gap kept", []bool{false, false, false, true, false, true}, false, cold + w + w + w},
		{"long gap: removed, recreated one cold start ahead", []bool{false, false, false, true, false, false, false, false, true}, false, cold + w + cold + w},
	}
	for _, tt := range tests {
		if got := levelCost(tt.serves, w, cold, tt.warm); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestPlanFor(t *testing.T) {
	const w, cold = 10 * time.Second, 30 * time.Second
	tests := []struct {
		name     string
		needs    []int32
		initial  int32
		want     []PlanStep
		wantCost time.Duration
	}{
		{"flat at the warm count", []int32{2, 2, 2}, 2, []PlanStep{{0, 2}}, 2 * 3 * w},
		{"a peak is created one cold start ahead",
			[]int32{1, 1, 1, 1, 3, 1}, 1,
			[]PlanStep{{0, 1}, {10 * time.Second, 3}, {50 * time.Second, 1}},
			6*w + 2*(cold+w)},
		{"unneeded warm replicas go at once", []int32{1, 1, 1, 1, 1, 1}, 3, []PlanStep{{0, 1}}, 6 * w},
		{"warm replicas kept over a short dip",
			[]int32{2, 1, 2, 1, 1, 1}, 2,
			[]PlanStep{{0, 2}, {30 * time.Second, 1}},
			6*w + 3*w},
	}
	for _, tt := range tests {
		plan, cost := planFor(tt.needs, w, cold, tt.initial)
		if !reflect.DeepEqual(plan, tt.want) || cost != tt.wantCost {
			t.Errorf("%s: plan %v cost %s, want %v cost %s", tt.name, plan, cost, tt.want, tt.wantCost)
		}
		// The plan's serving replicas cover every window's need.
		for i, n := range tt.needs {
			at := time.Duration(i) * w
			if c := countAt(plan, at); c < n {
				t.Errorf("%s: window %d has %d replicas, needs %d", tt.name, i, c, n)
			}
		}
	}
}

func countAt(plan []PlanStep, at time.Duration) int32 {
	var n int32
	for _, p := range plan {
		if p.At <= at {
			n = p.Replicas
		}
	}
	return n
}

func TestChooseNeedsSpendsTheBudgetWhereItIsCheapest(t *testing.T) {
	const w, cold = 10 * time.Second, 30 * time.Second
	curves := []WindowCurve{
		{Misses: []int{0}},
		{Misses: []int{0}},
		{Misses: []int{0}},
		{Misses: []int{0}},
		{Misses: []int{5, 5, 0}}, // flat for one count, then clears
		{Misses: []int{3, 0}},
	}
	if got, want := chooseNeeds(curves, 0, w, cold, 1), []int32{1, 1, 1, 1, 3, 2}; !reflect.DeepEqual(got, want) {
		t.Errorf("budget 0: %v, want %v", got, want)
	}
	// Budget 3: window 5's misses fit, window 4's do not.
	if got, want := chooseNeeds(curves, 3, w, cold, 1), []int32{1, 1, 1, 1, 3, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("budget 3: %v, want %v", got, want)
	}
	// Windows before one cold start are capped at the warm count.
	early := []WindowCurve{{Misses: []int{4, 0}}, {Misses: []int{0}}, {Misses: []int{0}}, {Misses: []int{0}}}
	if got, want := chooseNeeds(early, 0, w, cold, 1), []int32{1, 1, 1, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("early window: %v, want %v", got, want)
	}
}

func TestSchedulePolicyFollowsThePlan(t *testing.T) {
	tr := stepTrace()
	cfg := DefaultConfig()
	cfg.Model.ColdStart = 30 * time.Second
	cfg.Plan = []PlanStep{{0, 2}, {2 * time.Minute, 5}, {10 * time.Minute, 3}}
	r, err := Run(context.Background(), cfg, tr.Requests, Setting{Policy: PolicySchedule})
	if err != nil {
		t.Fatal(err)
	}
	if r.ScaleEvents != 2 || r.PeakReplicas != 5 {
		t.Errorf("%d scale events, peak %d: want 2 and 5", r.ScaleEvents, r.PeakReplicas)
	}
	for _, p := range r.Timeline {
		want := countAt(cfg.Plan, p.At)
		// A timeline point counts replicas at its bucket's end.
		if next := countAt(cfg.Plan, p.At+cfg.Timeline); p.Replicas != want && p.Replicas != next {
			t.Errorf("at %s: %d replicas, plan says %d", p.At, p.Replicas, want)
		}
	}
	for _, bad := range [][]PlanStep{nil, {{time.Second, 1}}, {{0, 1}, {0, 2}}, {{0, 0}}, {{0, 1}, {time.Minute, 101}}} {
		cfg.Plan = bad
		if _, err := Run(context.Background(), cfg, tr.Requests, Setting{Policy: PolicySchedule}); err == nil || !strings.Contains(err.Error(), "schedule") {
			t.Errorf("plan %v: error %v", bad, err)
		}
	}
}

func TestClairvoyantBoundStepTrace(t *testing.T) {
	tr := stepTrace()
	rep, err := RunAll(context.Background(), tr, 1, Options{Config: DefaultConfig(), Policies: []string{PolicyStatic}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Initial = rep.Initial
	b, err := ClairvoyantBound(context.Background(), cfg, tr.Requests, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Policies[0].Chosen
	t.Logf("bound %.3f GPU-h at %.2f%% (plan %v); static %s %.3f GPU-h", b.Replay.GPUHours, 100*b.Replay.Attainment, b.Plan, st.Setting, st.GPUHours)
	if b.Replay.Attainment < cfg.Goal {
		t.Errorf("replay %.4f under the goal", b.Replay.Attainment)
	}
	// The step trace is low for 11 of its 17 minutes: foresight pays for
	// the peak only around it.
	if b.Replay.GPUHours >= 0.8*st.GPUHours {
		t.Errorf("bound %.3f GPU-h, static %.3f: want under 0.8x", b.Replay.GPUHours, st.GPUHours)
	}
	peak := int32(0)
	for _, n := range b.Needs {
		peak = max(peak, n)
	}
	if peak < rep.PeakNeed-1 || countAt(b.Plan, 0) > b.Initial {
		t.Errorf("bound peak %d (static peak need %d), plan %v", peak, rep.PeakNeed, b.Plan)
	}
	var out strings.Builder
	if err := WriteBound(&out, b, st); err != nil || !strings.Contains(out.String(), "bound / cheapest baseline") {
		t.Errorf("WriteBound: %v\n%s", err, out.String())
	}
	if _, err := MissCurves(context.Background(), cfg, tr.Requests, 0, 0); err == nil {
		t.Error("window 0: no error")
	}
}

// TestBoundRepairsWindowsTheReplayMissed feeds curves that claim one
// replica serves every window: the replay misses, the budget cuts cannot
// help, and the repair rounds must grow the windows that missed until
// the replay reaches the goal.
func TestBoundRepairsWindowsTheReplayMissed(t *testing.T) {
	tr := stepTrace()
	cfg := DefaultConfig()
	cfg.Model.ColdStart = 30 * time.Second
	cfg.Initial = 1
	const window = time.Minute
	var curves []WindowCurve
	for start := time.Duration(0); start <= tr.Requests[len(tr.Requests)-1].Arrival; start += window {
		curves = append(curves, WindowCurve{Start: start, Requests: sortSearch(tr.Requests, start+window) - sortSearch(tr.Requests, start), Misses: []int{0}})
	}
	b, err := boundFrom(context.Background(), cfg, tr.Requests, window, curves)
	if err != nil {
		t.Fatal(err)
	}
	if b.Replay.Attainment < cfg.Goal {
		t.Fatalf("replay %.4f after %d tries: the repair did not reach the goal (needs %v, missed %v)", b.Replay.Attainment, b.Tries, b.Needs, b.Missed)
	}
	// The 16/s stretch (3-9 min) needs more than one replica; the first
	// window, before one cold start, stays at the warm count.
	if b.Needs[0] != 1 || b.Needs[5] < 2 || b.Budget != 0 {
		t.Errorf("needs %v budget %d, want the high stretch grown and window 0 at 1", b.Needs, b.Budget)
	}
}
