package gpupack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// TestMemoMatchesFresh replays random pods, bookings, releases and
// sharing changes on a small cluster and checks after every step that
// Filter and Score, answered from the memo, equal fit and scoreChoice
// computed from scratch.
func TestMemoMatchesFresh(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 5))
	p, err := NewStandalone(nil)
	if err != nil {
		t.Fatal(err)
	}
	shapes := []string{"dgx1-v100", "dgx-h100", "pcie-8x-2socket", "pcie-4xl4"}
	var nodes []*v1.Node
	var infos []*framework.NodeInfo
	for i := range 12 {
		n := shapedAPINode(t, shapes[i%len(shapes)], fmt.Sprintf("n%02d", i))
		n.Labels = map[string]string{contract.LabelGPUSharing: "true"}
		n.Status.Allocatable = v1.ResourceList{v1.ResourceCPU: resource.MustParse("64")}
		p.ObserveNode(n)
		ni := framework.NewNodeInfo()
		ni.SetNode(n)
		nodes, infos = append(nodes, n), append(infos, ni)
	}
	restricted := p.gpus.nodes["n00"].topo.GPUs[0].Product
	pressured := 0
	randomPod := func(i int) *v1.Pod {
		limits := map[string]string{v1.ResourceCPU.String(): strconv.Itoa(1+r.IntN(16)*2) + "000m"}
		var annot map[string]string
		switch x := r.IntN(10); {
		case x < 5:
			limits[contract.ResourceGPU] = strconv.Itoa([]int{1, 1, 2, 4, 8}[r.IntN(5)])
		case x < 8:
			limits[contract.ResourceGPUMilli] = strconv.Itoa(100 * (1 + r.IntN(7)))
		case x < 9:
			limits[contract.ResourceGPU] = "1"
			annot = map[string]string{contract.AnnotationGPUMemoryMin: "40Gi"}
		}
		pd := pod(limits, annot)
		pd.Name, pd.UID = fmt.Sprintf("p%d", i), types.UID(fmt.Sprintf("uid-%d", i))
		if r.IntN(4) == 0 {
			// Only one shape's GPU model: the mix gets model pressure.
			pd.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
					MatchExpressions: []v1.NodeSelectorRequirement{{Key: contract.LabelGPUProduct, Operator: v1.NodeSelectorOpIn, Values: []string{restricted}}},
				}}},
			}}
		}
		return pd
	}
	var placed []*v1.Pod
	hits := 0
	for step := range 600 {
		pd := randomPod(step)
		state := framework.NewCycleState()
		_, st := p.PreFilter(ctx, state, pd, nil)
		if !st.IsSuccess() && !st.IsSkip() {
			t.Fatalf("step %d: PreFilter: %v", step, st)
		}
		s, _ := getState(state)
		if s.req.frag != nil && s.req.frag.pressure[restricted] > 0 {
			pressured++
		}
		var best, bestScore = -1, int64(-1)
		for i, ni := range infos {
			ng := p.gpus.nodes[nodes[i].Name]
			before := ng.gen
			if s.req.wantsGPU() {
				if e := ng.memo.find(keyOf(ng, s.req)); e != nil && e.fitted {
					hits++
				}
				st := p.Filter(ctx, state, pd, ni)
				c, reason := ng.fit(s.req, &p.args, nil)
				if got := st.Message(); st.IsSuccess() != (reason == "") || (reason != "" && got != reason) {
					t.Fatalf("step %d node %s: Filter %v, fresh fit %q", step, ng.name, st, reason)
				}
				if reason != "" {
					continue
				}
				score, _ := p.Score(ctx, state, pd, ni)
				if want := p.scoreChoice(ng, s.req, c, nodeLeft(ni)); score != want {
					t.Fatalf("step %d node %s: Score %d from memo, %d fresh", step, ng.name, score, want)
				}
				if score > bestScore {
					best, bestScore = i, score
				}
			} else {
				score, _ := p.Score(ctx, state, pd, ni)
				if want := p.scoreChoice(ng, s.req, choice{}, nodeLeft(ni)); score != want {
					t.Fatalf("step %d node %s: CPU-only Score %d from memo, %d fresh", step, ng.name, score, want)
				}
			}
			if ng.gen != before {
				t.Fatalf("Filter or Score changed the node's generation")
			}
		}
		switch {
		case best >= 0:
			if st := p.Reserve(ctx, state, pd, nodes[best].Name); !st.IsSuccess() {
				t.Fatalf("step %d: Reserve on %s: %v", step, nodes[best].Name, st)
			}
			pod := pd.DeepCopy()
			pod.Spec.NodeName = nodes[best].Name
			infos[best].AddPod(pod)
			placed = append(placed, pod)
		case len(placed) > 0:
			// Full: release a random pod, as a deletion would.
			i := r.IntN(len(placed))
			gone := placed[i]
			placed = append(placed[:i], placed[i+1:]...)
			p.ForgetPod(gone)
			for j, n := range nodes {
				if n.Name == gone.Spec.NodeName {
					if err := infos[j].RemovePod(klog.Background(), gone); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if step%97 == 0 {
			// Sharing switched off and on again on one node.
			n := nodes[r.IntN(len(nodes))].DeepCopy()
			n.Labels[contract.LabelGPUSharing] = "false"
			p.ObserveNode(n)
			n.Labels[contract.LabelGPUSharing] = "true"
			p.ObserveNode(n)
		}
	}
	if hits == 0 {
		t.Fatal("the memo never answered a Filter")
	}
	if pressured == 0 {
		t.Fatal("no cycle saw model pressure")
	}
	t.Logf("%d placed at the end; %d Filter calls answered from the memo", len(placed), hits)
}

// TestMixSnapshotStable: a steady mix keeps its snapshot (so memo keys
// stay valid), a shifted one gets a new snapshot.
func TestMixSnapshotStable(t *testing.T) {
	m := newMix(nil)
	reqs := []request{{whole: 1}, {whole: 2}, {milli: 250}, {whole: 1}}
	for i := range 4000 {
		m.observe(reqs[i%len(reqs)])
	}
	snap := m.current()
	for i := range 400 {
		m.observe(reqs[i%len(reqs)])
	}
	if m.current() != snap {
		t.Error("a steady mix replaced its snapshot")
	}
	for range 400 {
		m.observe(request{whole: 8})
	}
	if m.current() == snap {
		t.Error("a mix that shifted to 8-GPU pods kept its old snapshot")
	}
}
