package testenv

import (
	"context"
	"fmt"
	"maps"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// GPUNode describes a kubelet-less node to create, the way KWOK fakes
// nodes: only the API object exists.
type GPUNode struct {
	Name string
	// GPUs is the node's nvidia.com/gpu capacity and allocatable.
	GPUs int
	// CPU and Memory default to 64 cores and 512Gi.
	CPU, Memory string
	// Extra adds further resources (e.g. kubegpu.io/gpu-milli).
	Extra       v1.ResourceList
	Labels      map[string]string
	Annotations map[string]string
}

// AddGPUNode creates the node and sets its status: capacity, allocatable
// and a Ready condition, so the scheduler treats it as a live node.
func AddGPUNode(ctx context.Context, client kubernetes.Interface, spec GPUNode) (*v1.Node, error) {
	cpu, mem := spec.CPU, spec.Memory
	if cpu == "" {
		cpu = "64"
	}
	if mem == "" {
		mem = "512Gi"
	}
	resources := v1.ResourceList{}
	for name, value := range map[v1.ResourceName]string{v1.ResourceCPU: cpu, v1.ResourceMemory: mem, v1.ResourcePods: "110"} {
		q, err := resource.ParseQuantity(value)
		if err != nil {
			return nil, fmt.Errorf("node %s: %s %q: %w", spec.Name, name, value, err)
		}
		resources[name] = q
	}
	if spec.GPUs > 0 {
		resources[contract.ResourceGPU] = *resource.NewQuantity(int64(spec.GPUs), resource.DecimalSI)
	}
	maps.Copy(resources, spec.Extra)

	labels := map[string]string{"kubernetes.io/hostname": spec.Name}
	maps.Copy(labels, spec.Labels)
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Labels: labels, Annotations: spec.Annotations}}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Name, err)
	}
	now := metav1.Now()
	created.Status = v1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources.DeepCopy(),
		Phase:       v1.NodeRunning,
		Conditions: []v1.NodeCondition{{
			Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubegpu testenv node", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	updated, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("set status of node %s: %w", spec.Name, err)
	}
	return updated, nil
}
