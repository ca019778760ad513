package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/deviceplugin/kubelet"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/kubeletdm"
	"github.com/kubegpu/kubegpu/pkg/nvml"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// startDeviceManager runs the kubelet's own device manager on a temp
// folder until the test ends.
func startDeviceManager(t *testing.T) *kubeletdm.Manager {
	t.Helper()
	// Unix socket paths must stay under 108 bytes: not t.TempDir().
	dir, err := os.MkdirTemp("/tmp", "kge2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m, err := kubeletdm.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	return m
}

// admit does what the kubelet does when it admits pod and starts its
// first container, and returns the container's environment.
func admit(ctx context.Context, t *testing.T, m *kubeletdm.Manager, pod *v1.Pod) map[string]string {
	t.Helper()
	envs, err := m.Admit(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	return envs[pod.Spec.Containers[0].Name]
}

// TestDevicePluginHandshake runs the scheduler, the device plugin on a
// fake DGX-1 with GPU sharing, and the kubelet's device manager for the
// same node: the GPUs each container receives are the ones the scheduler
// recorded on its pod, for whole GPUs and for shares, also when several
// pods wait at once.
func TestDevicePluginHandshake(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const nodeName = "gpu-x"
	if _, err := testenv.AddGPUNode(ctx, env.Client, testenv.GPUNode{Name: nodeName}); err != nil {
		t.Fatal(err)
	}

	dm := startDeviceManager(t)
	backend, machine, err := nvml.OpenFake("dgx1-v100")
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- deviceplugin.Run(pctx, deviceplugin.Config{
			Backend: backend, ResourceName: contract.ResourceGPU, PluginDir: dm.Dir,
			Sharing: true, SharedResourceName: contract.ResourceGPUMilli,
			PodResourcesSocket: filepath.Join(dm.Dir, "no-podresources.sock"),
			NodeName:           nodeName, Client: env.Client.CoreV1(),
			Health: inventory.HealthOptions{Recovery: true, RecoveryInterval: time.Minute},
		})
	}()
	t.Cleanup(func() {
		pcancel()
		if err := <-done; err != nil {
			t.Errorf("device plugin: %v", err)
		}
		_ = backend.Shutdown()
	})

	// The kubelet reports the device manager's allocatable on the Node.
	var alloc v1.ResourceList
	err = pollUntil(ctx, func() bool {
		alloc = dm.Allocatable()
		g, s := alloc[contract.ResourceGPU], alloc[contract.ResourceGPUMilli]
		return g.Value() == 8 && s.Value() == 8*1000
	})
	if err != nil {
		t.Fatalf("device manager allocatable %v: %v", alloc, err)
	}
	t.Logf("plugin start -> kubelet allocatable 8 GPUs and 8000 share slots: %v", time.Since(start))
	node, err := env.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range alloc {
		node.Status.Capacity[name], node.Status.Allocatable[name] = q, q
	}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The scheduler reads the inventory the plugin published.
	var inv *gpunode.Node
	err = pollUntil(ctx, func() bool {
		n, err := env.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil || n.Labels[contract.LabelGPUSharing] != "true" {
			return false
		}
		inv, err = gpunode.Decode(n.Annotations[contract.AnnotationTopology])
		return err == nil
	})
	if err != nil || inv.GPUs[0].UUID != machine.UUID(0) {
		t.Fatalf("published inventory: %v", err)
	}
	startScheduler(t, env)

	whole := map[string][]string{} // pod -> GPUs its container got whole
	shared := map[string]string{}  // pod -> GPU its container got a share of
	run := func(t *testing.T, pods ...*v1.Pod) {
		createPods(ctx, t, env, pods...)
		var bound []*v1.Pod
		for _, p := range pods {
			b, err := testenv.WaitForPod(ctx, env.Client, p.Namespace, p.Name, testenv.Bound)
			if err != nil {
				t.Fatal(err)
			}
			bound = append(bound, b)
		}
		// The kubelet admits a batch of new pods oldest first.
		slices.SortStableFunc(bound, func(a, b *v1.Pod) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
		for _, pod := range bound {
			a, err := contract.ParseGPUIDs(pod.Annotations[contract.AnnotationGPUIDs])
			if err != nil {
				t.Fatalf("pod %s: %v", pod.Name, err)
			}
			envs := admit(ctx, t, dm, pod)
			got := strings.Split(envs["NVIDIA_VISIBLE_DEVICES"], ",")
			if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(a.UUIDs))) {
				t.Errorf("pod %s: container sees GPUs %v, scheduler chose %v", pod.Name, got, a)
			}
			if !a.Shared() {
				whole[pod.Name] = got
				if _, ok := envs[kubelet.EnvGPUMilli]; ok {
					t.Errorf("pod %s with whole GPUs got share variables %v", pod.Name, envs)
				}
				continue
			}
			shared[pod.Name] = got[0]
			mem := inv.GPUs[slices.IndexFunc(inv.GPUs, func(g gpunode.GPU) bool { return g.UUID == got[0] })].MemoryMiB
			want := map[string]string{
				kubelet.EnvGPUMilli:       strconv.Itoa(a.Milli),
				kubelet.EnvGPUMemoryLimit: strconv.FormatInt(mem*int64(a.Milli)/1000, 10),
				kubelet.EnvMPSThreads:     strconv.Itoa((a.Milli + 9) / 10),
			}
			for k, v := range want {
				if envs[k] != v {
					t.Errorf("pod %s: %s = %q, want %q", pod.Name, k, envs[k], v)
				}
			}
		}
	}

	t.Run("two GPUs and a share", func(t *testing.T) {
		run(t,
			newPod("whole-a", withResource(contract.ResourceGPU, "2")),
			newPod("share-a", withResource(contract.ResourceGPUMilli, "250")))
	})
	t.Run("several pods at once", func(t *testing.T) {
		// batch-1 is pinned to two free GPUs without NVLink between them,
		// a pair no topology choice would make, so only the annotation
		// can bring the container these GPUs.
		var free []int
		for i, g := range inv.GPUs {
			taken := slices.ContainsFunc(slices.Collect(maps.Values(whole)), func(ids []string) bool { return slices.Contains(ids, g.UUID) })
			if !taken && !slices.Contains(slices.Collect(maps.Values(shared)), g.UUID) {
				free = append(free, i)
			}
		}
		var pinned []string
		for _, i := range free {
			for _, j := range free {
				if i < j && pinned == nil && inv.Links[i][j].NVLinks == 0 {
					pinned = []string{inv.GPUs[i].UUID, inv.GPUs[j].UUID}
				}
			}
		}
		if pinned == nil {
			t.Fatalf("no free pair without NVLink among %v", free)
		}
		run(t,
			newPod("batch-0", withResource(contract.ResourceGPU, "2")),
			newPod("batch-1", withResource(contract.ResourceGPU, "2"), withAnnotation(contract.AnnotationGPUIDs, strings.Join(pinned, ","))),
			newPod("share-b", withResource(contract.ResourceGPUMilli, "500")),
			newPod("share-c", withResource(contract.ResourceGPUMilli, "250")))
	})

	// Whole GPUs went to one container each, and never to a shared GPU.
	owner := map[string]string{}
	for pod, gpus := range whole {
		for _, g := range gpus {
			if other, ok := owner[g]; ok {
				t.Errorf("GPU %s given whole to %s and %s", g, other, pod)
			}
			owner[g] = pod
		}
	}
	for pod, g := range shared {
		if o, ok := owner[g]; ok {
			t.Errorf("GPU %s shared by %s and given whole to %s", g, pod, o)
		}
	}
	if len(whole) != 3 || len(shared) != 3 {
		t.Errorf("%d whole and %d share pods admitted, want 3 and 3", len(whole), len(shared))
	}
	t.Logf("whole: %v; shares: %v", whole, shared)
}

// pollUntil checks cond every 10ms until it holds or ctx ends.
func pollUntil(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
