package gpupreempt

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func testUnit(t *testing.T, name string, priority int32, pods int, started time.Time) *unit {
	t.Helper()
	var infos []fwk.PodInfo
	for i := range pods {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, i), UID: types.UID(fmt.Sprintf("%s-%d", name, i))},
			Spec: v1.PodSpec{Priority: &priority}, Status: v1.PodStatus{StartTime: &metav1.Time{Time: started}}}
		pi, err := framework.NewPodInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, pi)
	}
	kind := fwk.PodKeyType
	if pods > 1 {
		kind = fwk.PodGroupKeyType
	}
	return newUnit(infos, priority, kind, "")
}

func names(group map[*unit]bool) []string {
	var out []string
	for u := range group {
		out = append(out, u.pods[0].GetPod().Name)
	}
	sort.Strings(out)
	return out
}

func TestCheapestShareGroup(t *testing.T) {
	now := time.Now()
	a := testUnit(t, "a600", 10, 1, now)
	b := testUnit(t, "b400", 10, 1, now)
	c := testUnit(t, "c200", 10, 1, now)
	d := testUnit(t, "d200", 10, 1, now)
	hi := testUnit(t, "hi300", 50, 1, now)
	gang := testUnit(t, "gang", 5, 3, now)
	tests := []struct {
		name string
		held []heldBy
		need int
		want []string // nil = no group frees enough
	}{
		{name: "one large share beats two small", held: []heldBy{{a, 600}, {c, 200}, {d, 200}}, need: 400, want: []string{"a600-0"}},
		{name: "exact fit with fewest pods", held: []heldBy{{b, 400}, {c, 200}, {d, 200}}, need: 400, want: []string{"b400-0"}},
		{name: "lower priority first even if more pods", held: []heldBy{{hi, 300}, {c, 200}, {d, 200}}, need: 300, want: []string{"c200-0", "d200-0"}},
		{name: "not enough", held: []heldBy{{c, 200}}, need: 300},
		{name: "whole GPU holder frees 1000", held: []heldBy{{a, 0}}, need: 999, want: []string{"a600-0"}},
		{name: "a gang's pods count", held: []heldBy{{gang, 500}, {b, 400}, {c, 200}}, need: 500, want: []string{"gang-0"}},
		{name: "none held", need: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cheapestShareGroup(tt.held, tt.need)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("got %v, want none", names(got))
				}
				return
			}
			if !slices.Equal(names(got), tt.want) {
				t.Fatalf("got %v, want %v", names(got), tt.want)
			}
		})
	}
}

func TestSubsets(t *testing.T) {
	tests := []struct {
		from  []int
		k     int
		limit int
		want  int // -1 = nil
	}{
		{[]int{0, 1, 2, 3, 4, 5, 6, 7}, 4, 5000, 70},
		{[]int{0, 1, 2}, 3, 10, 1},
		{[]int{0, 1, 2}, 4, 10, -1},
		{[]int{0, 1, 2}, 0, 10, -1},
		{make([]int, 16), 8, 5000, -1}, // 12870 sets: over the limit
	}
	for _, tt := range tests {
		got := subsets(tt.from, tt.k, tt.limit)
		if tt.want < 0 {
			if got != nil {
				t.Errorf("subsets(%v, %d): %d sets, want nil", tt.from, tt.k, len(got))
			}
			continue
		}
		if len(got) != tt.want {
			t.Errorf("subsets(%v, %d): %d sets, want %d", tt.from, tt.k, len(got), tt.want)
		}
		for _, s := range got {
			if len(s) != tt.k || !slices.IsSorted(s) {
				t.Errorf("subset %v is not %d sorted positions", s, tt.k)
			}
		}
	}
}

func TestTierOf(t *testing.T) {
	dgx1 := gpunode.MustShape("dgx1-v100")
	h100 := gpunode.MustShape("dgx-h100")
	tests := []struct {
		name string
		node *gpunode.Node
		set  []int
		want int
	}{
		{"DGX-1 quad", dgx1, []int{0, 1, 2, 3}, tierNVLink},
		{"DGX-1 across quads", dgx1, []int{0, 1, 4, 5}, tierPCIe},
		{"single GPU", dgx1, []int{3}, tierNVSwitch},
		{"NVSwitch", h100, []int{0, 3, 5, 7}, tierNVSwitch},
	}
	for _, tt := range tests {
		q, err := tt.node.Quality(tt.set)
		if err != nil {
			t.Fatal(err)
		}
		if got := tierOf(q); got != tt.want {
			t.Errorf("%s: tier %d, want %d (%s)", tt.name, got, tt.want, q)
		}
	}
}

// TestImportanceOrder: upstream order (priority, then groups, size, age)
// except that the target's units go last.
func TestImportanceOrder(t *testing.T) {
	now := time.Now()
	lowOld := testUnit(t, "low-old", 10, 1, now.Add(-time.Hour))
	lowNew := testUnit(t, "low-new", 10, 1, now)
	mid := testUnit(t, "mid", 20, 1, now)
	gang := testUnit(t, "gang", 10, 2, now)
	all := []*unit{lowNew, mid, gang, lowOld}
	order := func(us []*unit) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.pods[0].GetPod().Name)
		}
		return out
	}
	if got, want := order(importanceOrder(all, nil)), []string{"mid-0", "gang-0", "low-old-0", "low-new-0"}; !slices.Equal(got, want) {
		t.Errorf("importance order %v, want %v", got, want)
	}
	if got, want := order(importanceOrder(all, map[*unit]bool{mid: true})), []string{"gang-0", "low-old-0", "low-new-0", "mid-0"}; !slices.Equal(got, want) {
		t.Errorf("with mid as target %v, want %v", got, want)
	}
}

func TestPlanBetter(t *testing.T) {
	base := plan{violating: 1, tier: tierNVLink, maxPriority: 20, sumPriority: 100, npods: 4, quality: gpunode.SetQuality{Worst: 60, Sum: 400}}
	tests := []struct {
		name   string
		change func(p *plan)
		better bool
	}{
		{"fewer PDB violations", func(p *plan) { p.violating = 0 }, true},
		{"better tier beats higher priority", func(p *plan) { p.tier, p.maxPriority = tierNVSwitch, 30 }, true},
		{"lower highest priority", func(p *plan) { p.maxPriority = 10 }, true},
		{"fewer pods", func(p *plan) { p.sumPriority, p.npods = 80, 3 }, true},
		{"worse set", func(p *plan) { p.quality.Sum = 300 }, false},
		{"same", func(*plan) {}, false},
	}
	for _, tt := range tests {
		p := base
		tt.change(&p)
		if got := p.better(&base); got != tt.better {
			t.Errorf("%s: better = %v, want %v", tt.name, got, tt.better)
		}
	}
}

func TestNoteFitsEventLimit(t *testing.T) {
	long := strings.Repeat("GPU-0123456789abcdef, ", 100)
	if n := note("frees %s", long); len(n) > maxNote || !strings.HasSuffix(n, "...") {
		t.Errorf("note of %d bytes, want at most %d ending in ...", len(n), maxNote)
	}
	if n := note("frees %s", "GPU-1"); n != "frees GPU-1" {
		t.Errorf("short note changed: %q", n)
	}
}
