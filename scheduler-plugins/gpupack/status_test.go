package gpupack

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// TestFilterStatusCodes: rejections no eviction can change are
// UnschedulableAndUnresolvable, so preemption skips those nodes; GPUs
// taken by other pods stay Unschedulable, so preemption may free them.
func TestFilterStatusCodes(t *testing.T) {
	p, err := NewStandalone(nil)
	if err != nil {
		t.Fatal(err)
	}
	cpuOnly := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cpu"}}
	small := shapedAPINode(t, "pcie-4xl4", "small")
	busy := shapedAPINode(t, "dgx-h100", "busy")
	for _, n := range []*v1.Node{cpuOnly, small, busy} {
		p.ObserveNode(n)
	}
	p.gpus.reserve("w", "busy", []string{"GPU-busy-0"}, 0)
	tests := []struct {
		name   string
		node   *v1.Node
		limits map[string]string
		want   fwk.Code
	}{
		{"no GPU inventory", cpuOnly, map[string]string{contract.ResourceGPU: "1"}, fwk.UnschedulableAndUnresolvable},
		{"share on a node without sharing", busy, map[string]string{contract.ResourceGPUMilli: "250"}, fwk.UnschedulableAndUnresolvable},
		{"more GPUs than the node has", small, map[string]string{contract.ResourceGPU: "8"}, fwk.UnschedulableAndUnresolvable},
		{"GPUs taken by another pod", busy, map[string]string{contract.ResourceGPU: "8"}, fwk.Unschedulable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pd := pod(tt.limits, nil)
			state := framework.NewCycleState()
			if _, st := p.PreFilter(context.Background(), state, pd, nil); !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			ni := framework.NewNodeInfo()
			ni.SetNode(tt.node)
			if st := p.Filter(context.Background(), state, pd, ni); st.Code() != tt.want {
				t.Fatalf("Filter = %v, want code %v", st, tt.want)
			}
		})
	}
}
