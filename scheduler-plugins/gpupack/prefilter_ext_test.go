package gpupack

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// TestPreFilterExtensions: on a full DGX-1, removing candidate victims
// in a cloned cycle frees their GPUs for Filter and CycleFit in that
// clone only; adding one back takes them again; a nominated pod without
// GPUs books the set it would get.
func TestPreFilterExtensions(t *testing.T) {
	ctx := context.Background()
	p, err := NewStandalone(nil)
	if err != nil {
		t.Fatal(err)
	}
	node := shapedAPINode(t, "dgx1-v100", "n")
	p.ObserveNode(node)
	ni := framework.NewNodeInfo()
	ni.SetNode(node)
	victims := make([]fwk.PodInfo, 8)
	for i := range victims {
		v := pod(map[string]string{contract.ResourceGPU: "1"}, nil)
		v.Name, v.UID, v.Spec.NodeName = fmt.Sprintf("v%d", i), types.UID(fmt.Sprintf("v%d", i)), "n"
		v.Annotations = map[string]string{contract.AnnotationGPUIDs: fmt.Sprintf("GPU-n-%d", i)}
		p.ObservePod(v)
		if victims[i], err = framework.NewPodInfo(v); err != nil {
			t.Fatal(err)
		}
	}
	quad := pod(map[string]string{contract.ResourceGPU: "4"}, nil)
	state := framework.NewCycleState()
	if _, st := p.PreFilter(ctx, state, quad, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	if st := p.Filter(ctx, state, quad, ni); st.IsSuccess() {
		t.Fatal("4-GPU pod fits a full node")
	}

	tests := []struct {
		name    string
		remove  []int
		addBack []int
		want    []string // the set CycleFit picks; nil = no fit
	}{
		{name: "nothing removed", want: nil},
		{name: "quad 4-7 removed", remove: []int{4, 5, 6, 7}, want: []string{"GPU-n-4", "GPU-n-5", "GPU-n-6", "GPU-n-7"}},
		{name: "all removed, quad 0-3 back", remove: []int{0, 1, 2, 3, 4, 5, 6, 7}, addBack: []int{0, 1, 2, 3}, want: []string{"GPU-n-4", "GPU-n-5", "GPU-n-6", "GPU-n-7"}},
		{name: "three removed", remove: []int{0, 1, 2}, want: nil},
		{name: "removed twice counts once", remove: []int{0, 0, 1, 2}, want: nil},
		{name: "removed and added back", remove: []int{4, 5, 6, 7}, addBack: []int{7}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := state.Clone()
			for _, i := range tt.remove {
				if st := p.RemovePod(ctx, c, quad, victims[i], ni); !st.IsSuccess() {
					t.Fatal(st)
				}
			}
			for _, i := range tt.addBack {
				if st := p.AddPod(ctx, c, quad, victims[i], ni); !st.IsSuccess() {
					t.Fatal(st)
				}
			}
			fit, wants, reason := p.CycleFit(c, "n")
			if !wants {
				t.Fatal("CycleFit says the pod wants no GPU")
			}
			st := p.Filter(ctx, c, quad, ni)
			if tt.want == nil {
				if reason == "" || st.IsSuccess() {
					t.Fatalf("fits with %v", fit.GPUs)
				}
				return
			}
			if !st.IsSuccess() || !slices.Equal(fit.GPUs, tt.want) {
				t.Fatalf("Filter %v, set %v (%s); want %v", st, fit.GPUs, reason, tt.want)
			}
			// The original cycle and the shared state are untouched.
			if st := p.Filter(ctx, state, quad, ni); st.IsSuccess() {
				t.Fatal("the original cycle sees the clone's removals")
			}
		})
	}

	t.Run("nominated pod books a set", func(t *testing.T) {
		c := state.Clone()
		for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 7} {
			p.RemovePod(ctx, c, quad, victims[i], ni)
		}
		nom := pod(map[string]string{contract.ResourceGPU: "4"}, nil)
		nom.UID = "nominated"
		nomInfo, err := framework.NewPodInfo(nom)
		if err != nil {
			t.Fatal(err)
		}
		p.AddPod(ctx, c, quad, nomInfo, ni)
		if fit, _, reason := p.CycleFit(c, "n"); reason != "" || len(fit.GPUs) != 4 {
			t.Fatalf("one quad left: got %v (%s)", fit.GPUs, reason)
		}
		p.AddPod(ctx, c, quad, nomInfo, ni) // idempotent
		if _, _, reason := p.CycleFit(c, "n"); reason != "" {
			t.Fatalf("a second AddPod booked again: %s", reason)
		}
		nom2 := nom.DeepCopy()
		nom2.UID = "nominated-2"
		nomInfo2, _ := framework.NewPodInfo(nom2)
		p.AddPod(ctx, c, quad, nomInfo2, ni)
		if _, _, reason := p.CycleFit(c, "n"); reason == "" {
			t.Fatal("two nominated quads leave room for a third")
		}
		p.RemovePod(ctx, c, quad, nomInfo2, ni)
		if _, _, reason := p.CycleFit(c, "n"); reason != "" {
			t.Fatalf("removing a nominated pod did not free its set: %s", reason)
		}
	})
}
