package gpupack

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// TestFreedByDelete: the AssignedPod/Delete hint frees the deleted pod's
// GPUs in GPUPack's state before it answers, so the requeued pod's retry
// sees them free even if GPUPack's informer handler has not run yet.
func TestFreedByDelete(t *testing.T) {
	all := "GPU-n-0,GPU-n-1,GPU-n-2,GPU-n-3,GPU-n-4,GPU-n-5,GPU-n-6,GPU-n-7"
	bound := func(uid, node string, limits, annot map[string]string) *v1.Pod {
		p := pod(limits, annot)
		p.UID, p.Spec.NodeName = types.UID(uid), node
		return p
	}
	tests := []struct {
		name string
		// booked is put in the state first; deleted is the event's pod.
		booked, deleted *v1.Pod
		reserve         bool // book deleted's UID through Reserve instead
		want            fwk.QueueingHint
		wantFree        bool // an 8-GPU pod fits after the hint
	}{{
		name:     "bound pod with gpu-ids",
		booked:   bound("a", "n", map[string]string{contract.ResourceGPU: "8"}, map[string]string{contract.AnnotationGPUIDs: all}),
		deleted:  bound("a", "n", map[string]string{contract.ResourceGPU: "8"}, map[string]string{contract.AnnotationGPUIDs: all}),
		want:     fwk.Queue,
		wantFree: true,
	}, {
		name:     "bound pod placed by another scheduler",
		booked:   bound("b", "n", map[string]string{contract.ResourceGPU: "8"}, nil),
		deleted:  bound("b", "n", map[string]string{contract.ResourceGPU: "8"}, nil),
		want:     fwk.Queue,
		wantFree: true,
	}, {
		name:     "pod without GPUs",
		deleted:  bound("c", "n", map[string]string{"cpu": "2"}, nil),
		want:     fwk.QueueSkip,
		wantFree: true,
	}, {
		// The scheduler sends AssignedPod/Delete when an unscheduled
		// pod's nomination moves: its booking (if any) must stay.
		name:     "unscheduled pod whose nomination moved",
		deleted:  pod(map[string]string{contract.ResourceGPU: "8"}, nil),
		reserve:  true,
		want:     fwk.Queue,
		wantFree: false,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewStandalone(nil)
			if err != nil {
				t.Fatal(err)
			}
			node := shapedAPINode(t, "dgx-h100", "n")
			p.ObserveNode(node)
			if tt.booked != nil {
				p.ObservePod(tt.booked)
			}
			if tt.reserve {
				p.gpus.reserve(tt.deleted.UID, "n", strings.Split(all, ","), 0)
			}
			got, err := p.freedByDelete(klog.Background(), pod(nil, nil), tt.deleted, nil)
			if err != nil || got != tt.want {
				t.Fatalf("hint = %v, %v; want %v", got, err, tt.want)
			}
			ni := framework.NewNodeInfo()
			ni.SetNode(node)
			big := pod(map[string]string{contract.ResourceGPU: "8"}, nil)
			big.UID = "big"
			state := framework.NewCycleState()
			if _, st := p.PreFilter(context.Background(), state, big, nil); !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			if free := p.Filter(context.Background(), state, big, ni).IsSuccess(); free != tt.wantFree {
				t.Fatalf("8-GPU pod fits after the hint: %v, want %v", free, tt.wantFree)
			}
		})
	}

	p, _ := NewStandalone(nil)
	if got, err := p.freedByDelete(klog.Background(), pod(nil, nil), "not a pod", nil); err == nil || got != fwk.Queue {
		t.Fatalf("hint on a wrong object = %v, %v; want Queue and an error", got, err)
	}
}
