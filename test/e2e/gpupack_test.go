package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

func createPods(ctx context.Context, t *testing.T, env *testenv.Env, pods ...*v1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := env.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// boundGPUs waits for the pod to bind and returns its node and the GPU
// positions recorded in kubegpu.io/gpu-ids, read against inv.
func boundGPUs(ctx context.Context, t *testing.T, env *testenv.Env, name string, invs map[string]*gpunode.Node) (string, []int, contract.GPUAssignment) {
	t.Helper()
	pod, err := testenv.WaitForPod(ctx, env.Client, "default", name, testenv.Bound)
	if err != nil {
		t.Fatal(err)
	}
	a, err := contract.ParseGPUIDs(pod.Annotations[contract.AnnotationGPUIDs])
	if err != nil {
		t.Fatalf("pod %s on %s: %v", name, pod.Spec.NodeName, err)
	}
	inv := invs[pod.Spec.NodeName]
	var pos []int
	for _, u := range a.UUIDs {
		i := slices.IndexFunc(inv.GPUs, func(g gpunode.GPU) bool { return g.UUID == u })
		if i < 0 {
			t.Fatalf("pod %s names GPU %s not on node %s", name, u, pod.Spec.NodeName)
		}
		pos = append(pos, i)
	}
	slices.Sort(pos)
	return pod.Spec.NodeName, pos, a
}

func unschedulableMessage(ctx context.Context, t *testing.T, env *testenv.Env, name string) string {
	t.Helper()
	pod, err := testenv.WaitForPod(ctx, env.Client, "default", name, testenv.Unschedulable)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.ScheduledCondition(pod).Message
}

func isQuad(pos []int) bool {
	return slices.Equal(pos, []int{0, 1, 2, 3}) || slices.Equal(pos, []int{4, 5, 6, 7})
}

// TestGPUPackTopology: on DGX-1 nodes a 4-GPU pod gets an NVLink quad,
// and two 2-GPU pods get NVLink pairs inside one quad, keeping the other
// quad whole.
func TestGPUPackTopology(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	invs := map[string]*gpunode.Node{}
	for _, name := range []string{"dgx1-a", "dgx1-b"} {
		invs[name] = addShapedNode(ctx, t, env, "dgx1-v100", name, nil)
	}
	startScheduler(t, env)

	createPods(ctx, t, env, newPod("quad", withResource(contract.ResourceGPU, "4")))
	quadNode, quad, _ := boundGPUs(ctx, t, env, "quad", invs)
	if !isQuad(quad) {
		t.Errorf("4-GPU pod got GPUs %v on %s, want an NVLink quad", quad, quadNode)
	}

	createPods(ctx, t, env, newPod("pair-1", withResource(contract.ResourceGPU, "2")))
	n1, p1, _ := boundGPUs(ctx, t, env, "pair-1", invs)
	createPods(ctx, t, env, newPod("pair-2", withResource(contract.ResourceGPU, "2")))
	n2, p2, _ := boundGPUs(ctx, t, env, "pair-2", invs)
	t.Logf("quad %s %v, pair-1 %s %v, pair-2 %s %v", quadNode, quad, n1, p1, n2, p2)

	for _, p := range [][]int{p1, p2} {
		inv := invs[n1]
		if q, _ := inv.Quality(p); q.Worst < 50 {
			t.Errorf("pair %v is not NVLink-connected (quality %s)", p, q)
		}
	}
	// The pairs pack onto the node the quad left half free, filling its
	// other quad, so the second node keeps both quads whole.
	if n1 != quadNode || n2 != quadNode {
		t.Errorf("pairs went to %s and %s, want both on %s next to the quad", n1, n2, quadNode)
	}
	used := append(append(slices.Clone(quad), p1...), p2...)
	slices.Sort(used)
	if !slices.Equal(slices.Compact(used), []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("GPUs used on %s: %v, want each of 0-7 once", quadNode, used)
	}
}

// TestGPUPackMemoryAndShares: the memory minimum filters GPUs with a
// message naming it, and shares pack onto one GPU.
func TestGPUPackMemoryAndShares(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sharing := map[string]string{contract.LabelGPUSharing: "true"}
	invs := map[string]*gpunode.Node{
		"l4":   addShapedNode(ctx, t, env, "pcie-4xl4", "l4", nil),
		"h100": addShapedNode(ctx, t, env, "dgx-h100", "h100", sharing),
	}
	// A CPU-only node without GPU inventory still takes CPU-only pods.
	if _, err := testenv.AddGPUNode(ctx, env.Client, testenv.GPUNode{Name: "cpu", Labels: map[string]string{"pool": "cpu"}}); err != nil {
		t.Fatal(err)
	}
	startScheduler(t, env)

	cpuOnly := newPod("cpu-only")
	cpuOnly.Spec.NodeSelector = map[string]string{"pool": "cpu"}
	createPods(ctx, t, env, cpuOnly)
	if _, err := testenv.WaitForPod(ctx, env.Client, "default", "cpu-only", testenv.Bound); err != nil {
		t.Fatal(err)
	}

	createPods(ctx, t, env,
		newPod("needs-40gi", withResource(contract.ResourceGPU, "1"), withAnnotation(contract.AnnotationGPUMemoryMin, "40Gi")),
		newPod("needs-100gi", withResource(contract.ResourceGPU, "1"), withAnnotation(contract.AnnotationGPUMemoryMin, "100Gi")),
	)
	if node, _, _ := boundGPUs(ctx, t, env, "needs-40gi", invs); node != "h100" {
		t.Errorf("40Gi pod on %s, want h100", node)
	}
	if msg := unschedulableMessage(ctx, t, env, "needs-100gi"); !strings.Contains(msg, "GPU memory below 100Gi") {
		t.Errorf("100Gi pod message %q does not name the memory minimum", msg)
	}

	// Shares of 300 fill one GPU before another is broken.
	var gpus []string
	for i := range 3 {
		name := fmt.Sprintf("share-%d", i)
		createPods(ctx, t, env, newPod(name, withResource(contract.ResourceGPUMilli, "300")))
		_, _, a := boundGPUs(ctx, t, env, name, invs)
		if a.Milli != 300 || len(a.UUIDs) != 1 {
			t.Fatalf("%s assignment %+v, want one GPU with 300", name, a)
		}
		gpus = append(gpus, a.UUIDs[0])
	}
	if gpus[0] != gpus[1] || gpus[1] != gpus[2] {
		t.Errorf("shares went to GPUs %v, want one GPU", gpus)
	}
}

// TestGPUPackBadInput: malformed requests and annotations leave the pod
// Unschedulable with a message that says why; the scheduler keeps going.
func TestGPUPackBadInput(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	invs := map[string]*gpunode.Node{
		"a": addShapedNode(ctx, t, env, "dgx-a100", "a", nil),
		"b": addShapedNode(ctx, t, env, "dgx-a100", "b", nil),
	}
	startScheduler(t, env)

	cases := []struct {
		pod  *v1.Pod
		want string
	}{
		{newPod("bad-memory", withResource(contract.ResourceGPU, "1"), withAnnotation(contract.AnnotationGPUMemoryMin, "lots")), contract.AnnotationGPUMemoryMin},
		{newPod("milli-0", withResource(contract.ResourceGPUMilli, "0")), "1-999"},
		{newPod("milli-1500", withResource(contract.ResourceGPUMilli, "1500")), "1-999"},
		{newPod("unknown-ids", withResource(contract.ResourceGPU, "1"), withAnnotation(contract.AnnotationGPUIDs, "GPU-nowhere")), "not free"},
		{newPod("bad-ids", withResource(contract.ResourceGPU, "2"), withAnnotation(contract.AnnotationGPUIDs, "GPU-a-0,,x")), "invalid"},
	}
	for _, c := range cases {
		createPods(ctx, t, env, c.pod)
	}
	for _, c := range cases {
		if msg := unschedulableMessage(ctx, t, env, c.pod.Name); !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q does not contain %q", c.pod.Name, msg, c.want)
		}
	}
	// A good pod still schedules after all that.
	createPods(ctx, t, env, newPod("good", withResource(contract.ResourceGPU, "2")))
	boundGPUs(ctx, t, env, "good", invs)
}

// TestGPUPackRestart: a restarted scheduler rebuilds GPU bookings from
// the pods' annotations and never hands out a booked GPU again.
func TestGPUPackRestart(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	invs := map[string]*gpunode.Node{
		"a": addShapedNode(ctx, t, env, "dgx-h100", "a", nil),
		"b": addShapedNode(ctx, t, env, "dgx-h100", "b", nil),
	}
	owner := map[string]string{} // GPU UUID -> pod
	book := func(name string) {
		_, _, a := boundGPUs(ctx, t, env, name, invs)
		for _, u := range a.UUIDs {
			if other, ok := owner[u]; ok {
				t.Errorf("GPU %s given to %s and %s", u, other, name)
			}
			owner[u] = name
		}
	}
	sched := startScheduler(t, env)
	for i := range 3 {
		name := fmt.Sprintf("before-%d", i)
		createPods(ctx, t, env, newPod(name, withResource(contract.ResourceGPU, "3")))
		book(name)
	}
	sched.Stop()
	startScheduler(t, env)
	// 16 GPUs, 9 booked: room for exactly 7 single-GPU pods.
	for i := range 7 {
		name := fmt.Sprintf("after-%d", i)
		createPods(ctx, t, env, newPod(name, withResource(contract.ResourceGPU, "1")))
		book(name)
	}
	if len(owner) != 16 {
		t.Errorf("%d GPUs booked, want 16", len(owner))
	}
}
