package gpunode

import (
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"
)

func all(n int) []int {
	free := make([]int, n)
	for i := range free {
		free[i] = i
	}
	return free
}

func TestPairScoreOrder(t *testing.T) {
	// Each link must score strictly better than the next one.
	order := []Link{
		{NVSwitch: true, NVLinks: 18, PCIe: PCIeCrossCPU},
		{NVLinks: 12, PCIe: PCIeSameBoard},
		{NVLinks: 2, PCIe: PCIeSingleSwitch},
		{NVLinks: 2, PCIe: PCIeCrossCPU},
		{NVLinks: 1, PCIe: PCIeSameNUMA},
		{NVLinks: 1, PCIe: PCIeCrossCPU},
		{PCIe: PCIeSameBoard},
		{PCIe: PCIeSingleSwitch},
		{PCIe: PCIeMultiSwitch},
		{PCIe: PCIeHostBridge},
		{PCIe: PCIeSameNUMA},
		{PCIe: PCIeCrossCPU},
	}
	for i := 1; i < len(order); i++ {
		a, b := PairScore(order[i-1]), PairScore(order[i])
		if a <= b || a > MaxPairScore || b < 0 {
			t.Errorf("PairScore(%+v)=%d should beat PairScore(%+v)=%d", order[i-1], a, order[i], b)
		}
	}
}

// isAny reports whether got equals one of the wanted sets.
func isAny(got []int, want ...[]int) bool {
	for _, w := range want {
		if slices.Equal(got, w) {
			return true
		}
	}
	return false
}

func TestBestSet(t *testing.T) {
	tests := []struct {
		shape string
		free  []int // nil: all GPUs
		k     int
		want  [][]int // any of these
	}{
		// DGX-1 hybrid cube mesh.
		{"dgx1-v100", nil, 4, [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}}},
		{"dgx1-v100", []int{0, 1, 4, 5, 6, 7}, 4, [][]int{{4, 5, 6, 7}}},
		// Three NV1/NV2 triples tie on worst pair and sum; take the one that
		// keeps quad 0-3 whole.
		{"dgx1-v100", []int{0, 1, 2, 3, 5, 6, 7}, 3, [][]int{{5, 6, 7}}},
		// The set's own links come before the leftover: {4,6,7} has two NV2
		// pairs, {0,1,2} one, though taking {0,1,2} would keep 4-7 whole.
		{"dgx1-v100", []int{0, 1, 2, 4, 5, 6, 7}, 3, [][]int{{4, 6, 7}}},
		{"dgx1-v100", []int{0, 1, 2, 3, 4, 5, 6}, 1, [][]int{{4}, {5}, {6}}},
		{"dgx1-v100", nil, 8, [][]int{all(8)}},
		// k=2: an NV2 pair inside one quad (a cross pair 0-4 or 1-5 would
		// break both quads).
		{"dgx1-v100", nil, 2, [][]int{{0, 3}, {1, 2}, {2, 3}, {4, 7}, {5, 6}, {6, 7}}},
		// Only GPU 3 left of quad 0-3 plus all of 4-7: take 3 with 7 (NV1)?
		// No: pair 4-7 is NV2, and it leaves 3 isolated either way.
		{"dgx1-v100", []int{3, 4, 5, 6, 7}, 2, [][]int{{4, 7}, {5, 6}, {6, 7}}},
		// NVSwitch: every set is equal, lowest free positions win.
		{"dgx-a100", nil, 1, [][]int{{0}}},
		{"dgx-a100", nil, 3, [][]int{{0, 1, 2}}},
		{"dgx-h100", nil, 5, [][]int{{0, 1, 2, 3, 4}}},
		{"dgx-h100", []int{7, 2, 5, 3}, 2, [][]int{{2, 3}}},
		{"dgx2-v100", nil, 8, [][]int{{0, 1, 2, 3, 4, 5, 6, 7}}},
		// Two NVSwitch planes: stay in one plane, the one that fits best.
		{"nvswitch-2x8", nil, 8, [][]int{all(8)}},
		{"nvswitch-2x8", []int{0, 1, 2, 8, 9, 10, 11, 12}, 3, [][]int{{0, 1, 2}}},
		{"nvswitch-2x8", []int{0, 1, 2, 8, 9, 10, 11, 12}, 4, [][]int{{8, 9, 10, 11}}},
		// PCIe 2 sockets, pairs under a switch.
		{"pcie-8x-2socket", nil, 2, [][]int{{0, 1}}},
		{"pcie-8x-2socket", []int{1, 2, 4, 6, 7}, 2, [][]int{{6, 7}}},
		{"pcie-8x-2socket", nil, 4, [][]int{{0, 1, 2, 3}}},
		{"pcie-8x-2socket", []int{0, 2, 3, 4, 5, 6, 7}, 4, [][]int{{4, 5, 6, 7}}},
		{"pcie-8x-2socket", []int{1, 2, 3, 4, 5, 6, 7}, 1, [][]int{{1}}}, // keep 2-3 whole
		{"pcie-8x-2socket", []int{0, 1, 2, 3, 4, 5, 6}, 3, [][]int{{4, 5, 6}}},
		{"pcie-4xl4", nil, 3, [][]int{{0, 1, 2}}},
		{"pcie-16x-2socket", nil, 8, [][]int{all(8)}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/free=%v/k=%d", tt.shape, tt.free, tt.k), func(t *testing.T) {
			n := MustShape(tt.shape)
			free := tt.free
			if free == nil {
				free = all(len(n.GPUs))
			}
			set, q, ok := n.BestSet(free, tt.k)
			if !ok || !isAny(set, tt.want...) {
				t.Fatalf("BestSet = %v (%v), %v; want one of %v", set, q, ok, tt.want)
			}
			if want, err := n.Quality(set); err != nil || want.Worst != q.Worst || want.Sum != q.Sum || q.Size != tt.k {
				t.Fatalf("quality %v, Quality(set) = %v, %v", q, want, err)
			}
		})
	}
}

func TestBestSetEdgeCases(t *testing.T) {
	n := MustShape("dgx1-v100")
	tests := []struct {
		name   string
		node   *Node
		free   []int
		k      int
		want   []int
		wantOK bool
	}{
		{"k zero", n, all(8), 0, []int{}, true},
		{"k negative", n, all(8), -1, nil, false},
		{"k above free", n, []int{1, 2}, 3, nil, false},
		{"duplicates count once", n, []int{1, 1, 1}, 2, nil, false},
		{"duplicates ignored", n, []int{5, 1, 5, 1}, 2, []int{1, 5}, true},
		{"position too big", n, []int{0, 8}, 1, nil, false},
		{"negative position", n, []int{-1, 0}, 1, nil, false},
		{"no free", n, nil, 0, []int{}, true},
		{"nil node", nil, []int{0}, 1, nil, false},
		{"empty node", &Node{}, nil, 0, []int{}, true},
		{"ragged unprepared", &Node{GPUs: make([]GPU, 2), Links: [][]Link{{{}}}}, []int{0, 1}, 1, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, _, ok := tt.node.BestSet(tt.free, tt.k)
			if ok != tt.wantOK || !slices.Equal(set, tt.want) {
				t.Fatalf("BestSet = %v, %v; want %v, %v", set, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSetQuality(t *testing.T) {
	n := MustShape("dgx1-v100")
	quad, _ := n.Quality([]int{0, 1, 2, 3})
	mixed, _ := n.Quality([]int{0, 3, 4, 7})
	if quad.Compare(mixed) <= 0 || mixed.Compare(quad) >= 0 || quad.Compare(quad) != 0 {
		t.Errorf("quad %v should beat mixed %v", quad, mixed)
	}
	if quad.Score() <= mixed.Score() {
		t.Errorf("score quad %d <= mixed %d", quad.Score(), mixed.Score())
	}
	sw, _ := MustShape("dgx-h100").Quality([]int{0, 1, 2, 3})
	if sw.Score() != 100 || (SetQuality{Size: 1, Worst: MaxPairScore}).Score() != 100 {
		t.Errorf("NVSwitch set scores %d, want 100", sw.Score())
	}
	pcie, _ := MustShape("pcie-8x-2socket").Quality([]int{0, 7})
	if s := pcie.Score(); s < 0 || s >= quad.Score() {
		t.Errorf("cross-cpu pair scores %d", s)
	}
	if _, err := n.Quality([]int{1, 1}); err == nil {
		t.Error("Quality accepted a duplicate")
	}
	if _, err := n.Quality([]int{9}); err == nil {
		t.Error("Quality accepted an out-of-range position")
	}
}

// naive is the documented objective written the slow, obvious way.
func naive(n *Node, free []int, k int) []int {
	score := func(a, b int) int { return PairScore(n.Links[a][b]) }
	rate := func(s []int) (worst, sum, tri int) {
		worst = MaxPairScore
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				worst = min(worst, score(s[i], s[j]))
				sum += score(s[i], s[j])
				for l := j + 1; l < len(s); l++ {
					tri += min(score(s[i], s[j]), score(s[i], s[l]), score(s[j], s[l]))
				}
			}
		}
		return
	}
	var best []int
	var bestKey [5]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			var left []int
			for _, f := range free {
				if !slices.Contains(cur, f) {
					left = append(left, f)
				}
			}
			w, s, _ := rate(cur)
			_, ls, lt := rate(left)
			key := [5]int{w, s, lt, ls}
			if best == nil || slices.Compare(key[:], bestKey[:]) > 0 {
				best, bestKey = slices.Clone(cur), key
			}
			return
		}
		for i := start; i < len(free); i++ {
			rec(i+1, append(cur, free[i]))
		}
	}
	rec(0, nil)
	return best
}

// randomNode has random links drawn from a few levels so that ties
// happen; with grouped, links depend only on random group labels, so that
// many GPUs are twins (as on real machines).
func randomNode(r *rand.Rand, g int, grouped bool) *Node {
	n := &Node{GPUs: make([]GPU, g), Links: make([][]Link, g)}
	levels := []PCIeLevel{PCIeSingleSwitch, PCIeSameNUMA, PCIeCrossCPU}
	random := func() Link {
		l := Link{PCIe: levels[r.Intn(len(levels))]}
		if r.Intn(3) == 0 {
			l.NVLinks = 1 + r.Intn(2)
		}
		return l
	}
	var byGroup [3][3]Link
	for a := range 3 {
		for b := a; b < 3; b++ {
			byGroup[a][b] = random()
			byGroup[b][a] = byGroup[a][b]
		}
	}
	group := make([]int, g)
	for i := range g {
		n.GPUs[i] = GPU{Index: i, UUID: fmt.Sprint("GPU-", i)}
		n.Links[i] = make([]Link, g)
		group[i] = r.Intn(3)
	}
	for i := range g {
		for j := i + 1; j < g; j++ {
			l := random()
			if grouped {
				l = byGroup[group[i]][group[j]]
			}
			n.Links[i][j], n.Links[j][i] = l, l
		}
	}
	return n
}

func TestBestSetMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for iter := range 400 {
		g := 1 + r.Intn(10)
		n := randomNode(r, g, iter%2 == 1)
		if err := n.Prepare(); err != nil {
			t.Fatal(err)
		}
		var free []int
		for i := range g {
			if r.Intn(4) != 0 {
				free = append(free, i)
			}
		}
		for k := 1; k <= len(free); k++ {
			got, _, ok := n.BestSet(free, k)
			want := naive(n, free, k)
			if !ok || !slices.Equal(got, want) {
				t.Fatalf("iter %d: %d gpus, free %v, k %d: BestSet %v, naive %v", iter, g, free, k, got, want)
			}
		}
	}
}

func TestBestSetGreedy(t *testing.T) {
	// 24 GPUs in three NVSwitch planes of 8: above ExactMaxGPUs.
	n, err := shape{product: "x", memoryMiB: 1, gpus: 24, sockets: 2, perSwitch: 2, plane: 8}.node("3x8")
	if err != nil {
		t.Fatal(err)
	}
	if n.prep.tab != nil {
		t.Fatal("24-GPU node got exact tables")
	}
	free := []int{0, 1, 2, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23}
	tests := []struct {
		k    int
		want []int
	}{
		{1, []int{0}},
		{3, []int{0, 1, 2}},
		{6, []int{8, 9, 10, 11, 12, 13}},
		{8, []int{16, 17, 18, 19, 20, 21, 22, 23}},
	}
	for _, tt := range tests {
		set, q, ok := n.BestSet(free, tt.k)
		if !ok || !slices.Equal(set, tt.want) {
			t.Errorf("k=%d: BestSet = %v (%v), %v; want %v", tt.k, set, q, ok, tt.want)
		}
	}
	if set, _, ok := n.BestSet(all(24), 24); !ok || !slices.Equal(set, all(24)) {
		t.Errorf("all 24: %v %v", set, ok)
	}
}

func TestPreparedSharedAndConcurrent(t *testing.T) {
	a, b := MustShape("dgx1-v100"), MustShape("dgx1-v100")
	if a.prep != b.prep {
		t.Error("nodes of one shape should share prepared tables")
	}
	// An unprepared copy gives the same answers without writing to the node.
	c := &Node{GPUs: a.GPUs, Links: a.Links}
	want, _, _ := a.BestSet(all(8), 4)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				for _, n := range []*Node{a, c} {
					if got, _, _ := n.BestSet(all(8), 4); !slices.Equal(got, want) {
						t.Errorf("got %v want %v", got, want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if c.prep != nil {
		t.Error("BestSet wrote to an unprepared node")
	}
}

func BenchmarkBestSet(b *testing.B) {
	// random-16: no twins and random links, a harder case than real machines.
	rnd := randomNode(rand.New(rand.NewSource(2)), 16, false)
	if err := rnd.Prepare(); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"dgx-h100", "dgx1-v100", "pcie-8x-2socket", "dgx2-v100", "nvswitch-2x8", "pcie-16x-2socket", "random-16"} {
		n := rnd
		if name != "random-16" {
			n = MustShape(name)
		}
		free := all(len(n.GPUs))
		for k := 1; k <= len(free); k++ {
			b.Run(fmt.Sprintf("%s/k=%d", name, k), func(b *testing.B) {
				for b.Loop() {
					if _, _, ok := n.BestSet(free, k); !ok {
						b.Fatal("no set")
					}
				}
			})
		}
	}
}

func BenchmarkPrepare(b *testing.B) {
	for _, name := range []string{"dgx1-v100", "pcie-16x-2socket"} {
		n := MustShape(name)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p := &prepared{n: n.prep.n, score: n.prep.score}
				p.buildTables()
			}
		})
	}
}
