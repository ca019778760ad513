package e2e

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// shapedNode returns the inventory of a machine shape with UUIDs unique
// to the node, as the device plugin would publish it.
func shapedNode(t testing.TB, shape, node string) *gpunode.Node {
	t.Helper()
	n, err := gpunode.Shape(shape)
	if err != nil {
		t.Fatal(err)
	}
	n = n.Clone()
	for i := range n.GPUs {
		n.GPUs[i].UUID = fmt.Sprintf("GPU-%s-%d", node, i)
	}
	return n
}

// addShapedNode creates a node the way the device plugin leaves it:
// GPU capacity, GFD labels and the topology annotation.
func addShapedNode(ctx context.Context, t testing.TB, env *testenv.Env, shape, name string, labels map[string]string) *gpunode.Node {
	t.Helper()
	inv := shapedNode(t, shape, name)
	annot, err := gpunode.Encode(inv)
	if err != nil {
		t.Fatal(err)
	}
	l := map[string]string{
		contract.LabelGPUProduct: labelValue(inv.GPUs[0].Product),
		contract.LabelGPUMemory:  fmt.Sprint(inv.GPUs[0].MemoryMiB),
		contract.LabelGPUCount:   fmt.Sprint(len(inv.GPUs)),
	}
	for k, v := range labels {
		l[k] = v
	}
	_, err = testenv.AddGPUNode(ctx, env.Client, testenv.GPUNode{
		Name: name, GPUs: len(inv.GPUs), Labels: l,
		Annotations: map[string]string{contract.AnnotationTopology: annot},
	})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func labelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == ' ' {
			b[i] = '-'
		}
	}
	return string(b)
}

// startScheduler runs kubegpu's scheduler with the profile it ships.
func startScheduler(t *testing.T, env *testenv.Env) *testenv.Scheduler {
	return env.StartScheduler(t, testenv.SchedulerConfig{Profiles: registry.Profile, Registry: registry.Plugins()})
}

type podOpt func(*v1.Pod)

func withAnnotation(k, v string) podOpt {
	return func(p *v1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func withResource(name string, q string) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Resources.Limits[v1.ResourceName(name)] = resource.MustParse(q)
	}
}

func newPod(name string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.PodSpec{
			SchedulerName: contract.SchedulerName,
			Containers: []v1.Container{{
				Name: "main", Image: "registry.k8s.io/pause:3.10",
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{}},
			}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}
