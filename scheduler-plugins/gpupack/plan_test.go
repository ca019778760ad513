package gpupack

import (
	"testing"
)

func hashOf(shares ...int) uint64 {
	var h uint64
	for _, m := range shares {
		h += shareHash(m)
	}
	return h
}

func TestShareHashMultiset(t *testing.T) {
	if hashOf(470, 320, 160) != hashOf(160, 470, 320) {
		t.Fatal("hash depends on the order of the shares")
	}
	if h := hashOf(470, 470) - shareHash(470); h != hashOf(470) {
		t.Fatal("removing a share does not undo adding it")
	}
	seen := map[uint64][]int{}
	// Distinct multisets of up to three sizes of 10..990 milli hash apart.
	for a := 10; a < fullGPU; a += 10 {
		for b := a; a+b < fullGPU; b += 10 {
			for _, s := range [][]int{{a}, {a, b}, {a, b, 1000 - a - b}} {
				h := hashOf(s...)
				if old, ok := seen[h]; ok && !sameMultiset(old, s) {
					t.Fatalf("%v and %v hash alike", old, s)
				}
				seen[h] = s
			}
		}
	}
}

func sameMultiset(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	n := map[int]int{}
	for _, m := range a {
		n[m]++
	}
	for _, m := range b {
		n[m]--
	}
	for _, v := range n {
		if v != 0 {
			return false
		}
	}
	return true
}

// The openb default trace's commonest shares, in about its proportions.
func openbShares() map[class]float64 {
	return map[class]float64{
		{milli: 810}: 35, {milli: 470}: 24, {milli: 320}: 11, {milli: 650}: 8,
		{milli: 230}: 5, {milli: 160}: 2, {milli: 110}: 1, {whole: 1}: 100,
	}
}

func TestBuildPlan(t *testing.T) {
	plan := buildPlan(openbShares())
	tests := []struct {
		shares     []int
		onPlan     bool
		waitsForMo bool
	}{
		{[]int{810}, true, true},       // waits for a 160 or 110
		{[]int{810, 160}, true, false}, // full
		{[]int{470}, true, true},
		{[]int{470, 470}, true, false},
		{[]int{650}, true, true},
		{[]int{650, 320}, true, false},
		{[]int{230, 230}, true, true},
		{[]int{230, 230, 230, 230}, true, false},
		{[]int{650, 230}, false, false}, // leaves 120 the 650's 320 needed
		{[]int{470, 320}, false, false},
		{[]int{810, 110, 50}, false, false}, // 50 is not in the mix
	}
	for _, tc := range tests {
		h := hashOf(tc.shares...)
		if got := plan.onPlan(h); got != tc.onPlan {
			t.Errorf("%v on plan = %v, want %v", tc.shares, got, tc.onPlan)
		}
		if got := plan.open(h); got != tc.waitsForMo {
			t.Errorf("%v open = %v, want %v", tc.shares, got, tc.waitsForMo)
		}
	}
	if !plan.onPlan(0) || plan.open(0) {
		t.Error("a GPU without shares must be on plan and not wait")
	}
	if p := buildPlan(map[class]float64{{whole: 1}: 1}); p != nil {
		t.Errorf("plan without shares = %v, want nil", p)
	}
	// Equal mixes give equal plans (the simulator is reproducible).
	a, b := buildPlan(openbShares()), buildPlan(openbShares())
	if len(a) != len(b) {
		t.Fatalf("plans of equal mixes differ: %d and %d entries", len(a), len(b))
	}
	for h, v := range a {
		if w, ok := b[h]; !ok || w != v {
			t.Fatal("plans of equal mixes differ")
		}
	}
}

func TestPlanCost(t *testing.T) {
	fm := newFragModel(openbShares())
	fm.plan = buildPlan(openbShares())
	tests := []struct {
		name string
		on   []int
		add  int
		want float64
	}{
		{"fresh GPU", nil, 470, 0},
		{"completes a pair", []int{470}, 470, 0},
		{"leaves the plan", []int{650}, 230, offPlanCost},
		{"stays off plan", []int{470, 320}, 110, 0},
	}
	for _, tc := range tests {
		if got := fm.planCost(hashOf(tc.on...), tc.add); got != tc.want {
			t.Errorf("%s: planCost = %v, want %v", tc.name, got, tc.want)
		}
	}
	var none *fragModel
	if got := none.planCost(hashOf(650), 230); got != 0 {
		t.Errorf("no model: planCost = %v, want 0", got)
	}
}

func TestLostRests(t *testing.T) {
	fm := newFragModel(openbShares())
	fm.plan = buildPlan(openbShares())
	fm.shareCPU, fm.shareMem = 6000, 8192
	// GPU 0 waits for a 320 (rest 350), GPU 1 for a 470 (rest 530), GPU
	// 2 is full as planned (rest 30), GPU 3 is off plan, GPU 4 is free.
	shares := []uint64{hashOf(650), hashOf(470), hashOf(650, 320), hashOf(650, 230), 0}
	free := []int{350, 530, 30, 120, 1000}
	tests := []struct {
		name string
		host hostLeft
		want float64
	}{
		{"room for both", hostLeft{cpu: 12000, mem: 1 << 20}, 0},
		{"CPU for one", hostLeft{cpu: 11999, mem: 1 << 20}, (350 + 530) / 2.0},
		{"memory for one", hostLeft{cpu: 64000, mem: 8192}, (350 + 530) / 2.0},
		{"none", hostLeft{cpu: 5999, mem: 1 << 20}, 350 + 530},
		{"overbooked", hostLeft{cpu: -1000, mem: -5}, 350 + 530},
		{"unknown", unknownHost, 0},
	}
	for _, tc := range tests {
		if got := fm.lostRests(shares, free, tc.host); got != tc.want {
			t.Errorf("%s: lostRests = %v, want %v", tc.name, got, tc.want)
		}
	}
	fm.plan = nil
	if got := fm.lostRests(shares, free, hostLeft{}); got != 0 {
		t.Errorf("no plan: lostRests = %v, want 0", got)
	}
}

// A pod that leaves a node's waiting GPU without CPU for its company
// pays for the GPU's rest; where it leaves room, the plan costs nothing.
func TestScoreKeepsRoomForPlannedCompany(t *testing.T) {
	p := newPlugin(DefaultArgs())
	for range 8 * refreshEvery {
		for c := range openbShares() {
			p.mix.observe(request{whole: c.whole, milli: c.milli, cpuMilli: 4000, memReqMiB: 1024})
		}
	}
	planned := p.mix.current()
	if planned.plan == nil {
		t.Fatal("no plan from a mix with shares")
	}
	unplanned := *planned
	unplanned.plan = nil
	c, _ := node(t, "pcie-4xl4")
	c.reserve("a", "n", []string{"GPU-0"}, 650)
	ng := c.nodes["n"]
	for _, r := range []request{{cpuMilli: 8000, memReqMiB: 1024}, {whole: 1, cpuMilli: 8000, memReqMiB: 1024}} {
		ch, reason := ng.fit(r, &p.args, nil)
		if reason != "" {
			t.Fatal(reason)
		}
		score := func(fm *fragModel, cpu int64) float64 {
			return packingScore(ng, r, ch, fm, hostLeft{cpu, 1 << 20})
		}
		if a, b := score(planned, 10000), score(&unplanned, 10000); a >= b {
			t.Errorf("%+v leaving 2 cores: score %v with the plan >= %v without", r, a, b)
		}
		if a, b := score(planned, 20000), score(&unplanned, 20000); a != b {
			t.Errorf("%+v leaving 12 cores: score %v with the plan != %v without", r, a, b)
		}
	}
}

// A 230 goes to a fresh GPU rather than beside a lone 650, whose rest
// the plan keeps for a 320; the 320 then goes beside the 650.
func TestFitShareFollowsPlan(t *testing.T) {
	args := DefaultArgs()
	c, _ := node(t, "pcie-4xl4")
	c.reserve("a", "n", []string{"GPU-0"}, 650)
	ng := c.nodes["n"]
	fm := newFragModel(openbShares())
	fm.plan = buildPlan(openbShares())
	got, reason := ng.fit(request{milli: 230, frag: fm}, &args, nil)
	if reason != "" || got.pos[0] == 0 {
		t.Fatalf("230: fit = %v %q, want a GPU other than the 650's", got.pos, reason)
	}
	// Without the plan, FGD's measure puts it beside the 650.
	fm.plan = nil
	if got, _ := ng.fit(request{milli: 230, frag: fm}, &args, nil); got.pos[0] != 0 {
		t.Fatalf("230 without plan: fit = %v, want GPU 0", got.pos)
	}
	fm.plan = buildPlan(openbShares())
	if got, _ := ng.fit(request{milli: 320, frag: fm}, &args, nil); got.pos[0] != 0 {
		t.Fatalf("320: fit = %v, want GPU 0 beside the 650", got.pos)
	}
}

// The plugin keeps each GPU's share hash through reservations, their
// removal and a recount, as the sum over the shares it holds.
func TestSharesHashBookkeeping(t *testing.T) {
	c, n := node(t, "pcie-4xl4")
	ng := func() *nodeGPUs { return c.nodes["n"] }
	c.reserve("a", "n", []string{"GPU-1"}, 470)
	c.reserve("b", "n", []string{"GPU-1"}, 320)
	c.reserve("w", "n", []string{"GPU-2"}, 0)
	if got, want := ng().shares[1], hashOf(470, 320); got != want {
		t.Fatalf("GPU-1 hash %x, want %x", got, want)
	}
	if ng().shares[2] != 0 {
		t.Fatal("a whole GPU has a share hash")
	}
	c.unreserve("a")
	if got, want := ng().shares[1], hashOf(320); got != want {
		t.Fatalf("after unreserve: GPU-1 hash %x, want %x", got, want)
	}
	c.setNode(n) // same inventory: no change
	n.Labels["x"] = "y"
	c.recountLocked(ng())
	if got, want := ng().shares[1], hashOf(320); got != want {
		t.Fatalf("after recount: GPU-1 hash %x, want %x", got, want)
	}
	cp := ng().copyUsage()
	cp.shares[1] = 0
	if ng().shares[1] == 0 {
		t.Fatal("copyUsage shares the hashes with the live node")
	}
}

// BenchmarkBuildPlan: the plan is rebuilt when the mix's snapshot
// changes (mix.refreshLocked), on the openb default trace's share sizes.
func BenchmarkBuildPlan(b *testing.B) {
	w := openbShares()
	for _, m := range []int{460, 590, 550, 220, 370, 480, 50, 330, 350, 270, 440} {
		w[class{milli: m}] = 1
	}
	for b.Loop() {
		if buildPlan(w) == nil {
			b.Fatal("no plan")
		}
	}
	b.ReportMetric(float64(len(buildPlan(w))), "entries")
}
