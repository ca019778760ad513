package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

func gpuPod(name string, gpus int64) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{
			SchedulerName: contract.SchedulerName,
			Containers: []v1.Container{{
				Name:  "cuda",
				Image: "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
				Resources: v1.ResourceRequirements{
					Limits: v1.ResourceList{contract.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)},
				},
			}},
		},
	}
}

// TestSchedulerPlacesWholeGPUs runs the real apiserver and kube-scheduler
// with kubegpu's registry: a 2-GPU pod lands on the only node with room,
// and an impossible request stays Pending with a reason naming GPUs.
func TestSchedulerPlacesWholeGPUs(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, n := range []testenv.GPUNode{
		{Name: "cpu-only"},
		{Name: "one-gpu", GPUs: 1},
		{Name: "eight-gpu", GPUs: 8},
	} {
		if _, err := testenv.AddGPUNode(ctx, env.Client, n); err != nil {
			t.Fatal(err)
		}
	}
	env.StartScheduler(t, testenv.SchedulerConfig{Registry: registry.Plugins()})

	pods := env.Client.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, gpuPod("two-gpus", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, gpuPod("too-many-gpus", 16), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	bound, err := testenv.WaitForPod(ctx, env.Client, "default", "two-gpus", testenv.Bound)
	if err != nil {
		t.Fatal(err)
	}
	if bound.Spec.NodeName != "eight-gpu" {
		t.Errorf("two-gpus bound to %q, want eight-gpu", bound.Spec.NodeName)
	}

	pending, err := testenv.WaitForPod(ctx, env.Client, "default", "too-many-gpus", testenv.Unschedulable)
	if err != nil {
		t.Fatal(err)
	}
	if pending.Spec.NodeName != "" {
		t.Errorf("too-many-gpus bound to %q, want Pending", pending.Spec.NodeName)
	}
	msg := testenv.ScheduledCondition(pending).Message
	if !strings.Contains(msg, contract.ResourceGPU) {
		t.Errorf("unschedulable message %q does not name %s", msg, contract.ResourceGPU)
	}
	t.Logf("pending reason: %s", msg)
}
