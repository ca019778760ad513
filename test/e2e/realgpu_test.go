package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/deviceplugin/kubelet"
	"github.com/kubegpu/kubegpu/deviceplugin/nodeinfo"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/nvml"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// TestRealGPUHandshake is TestDevicePluginHandshake on the machine's real
// GPUs through the real NVML library: the device plugin publishes the real
// inventory, the scheduler places shares and then a whole GPU on it, and
// the kubelet's device manager hands each container the GPU the scheduler
// recorded. It runs only with KUBEGPU_REAL_GPU=1 (a machine with an NVIDIA
// GPU and driver), e.g. on the lent GPU machine through hack/realgpu.sh.
func TestRealGPUHandshake(t *testing.T) {
	if os.Getenv("KUBEGPU_REAL_GPU") != "1" {
		t.Skip("set KUBEGPU_REAL_GPU=1 on a machine with an NVIDIA GPU")
	}
	// KUBEGPU_NVML=fake:NAME runs the same steps on a fake machine, to
	// check the test itself where there is no GPU.
	spec := os.Getenv("KUBEGPU_NVML")
	if spec == "" {
		spec = "real"
	}
	backend, err := nvml.Open(spec)
	if err != nil {
		t.Fatalf("Open(%s): %v", spec, err)
	}
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const nodeName = "real-gpu"
	if _, err := testenv.AddGPUNode(ctx, env.Client, testenv.GPUNode{Name: nodeName}); err != nil {
		t.Fatal(err)
	}
	dm := startDeviceManager(t)
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan *deviceplugin.Plugin, 1)
	start := time.Now()
	go func() {
		done <- deviceplugin.Run(pctx, deviceplugin.Config{
			Backend: backend, ResourceName: contract.ResourceGPU, PluginDir: dm.Dir,
			Sharing: true, SharedResourceName: contract.ResourceGPUMilli,
			PodResourcesSocket: filepath.Join(dm.Dir, "no-podresources.sock"),
			NodeName:           nodeName, Client: env.Client.CoreV1(), MetricsAddr: "127.0.0.1:0",
			Health: inventory.HealthOptions{Recovery: true, RecoveryInterval: time.Minute},
			Ready:  func(p *deviceplugin.Plugin) { ready <- p },
		})
	}()
	t.Cleanup(func() {
		pcancel()
		if err := <-done; err != nil {
			t.Errorf("device plugin: %v", err)
		}
		if err := backend.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	var p *deviceplugin.Plugin
	select {
	case p = <-ready:
	case err := <-done:
		t.Fatalf("device plugin: %v", err)
	}

	// The published inventory is the real one.
	var inv *gpunode.Node
	var node *v1.Node
	err = pollUntil(ctx, func() bool {
		n, err := env.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil || n.Labels[contract.LabelGPUSharing] != "true" {
			return false
		}
		node = n
		inv, err = gpunode.Decode(n.Annotations[contract.AnnotationTopology])
		return err == nil
	})
	if err != nil {
		t.Fatalf("published inventory: %v", err)
	}
	n := len(inv.GPUs)
	t.Logf("published in %v: labels %s=%s %s=%s %s=%s; GPU 0 %s %q %d MiB",
		time.Since(start), contract.LabelGPUProduct, node.Labels[contract.LabelGPUProduct],
		contract.LabelGPUMemory, node.Labels[contract.LabelGPUMemory], contract.LabelGPUCount, node.Labels[contract.LabelGPUCount],
		inv.GPUs[0].UUID, inv.GPUs[0].Product, inv.GPUs[0].MemoryMiB)
	if node.Labels[contract.LabelGPUCount] != strconv.Itoa(n) ||
		node.Labels[contract.LabelGPUProduct] != nodeinfo.LabelValue(inv.GPUs[0].Product) ||
		node.Labels[contract.LabelGPUMemory] != strconv.FormatInt(inv.GPUs[0].MemoryMiB, 10) {
		t.Errorf("labels %v do not match the inventory", node.Labels)
	}
	if !strings.HasPrefix(inv.GPUs[0].UUID, "GPU-") {
		t.Errorf("UUID %q is not an NVML GPU UUID", inv.GPUs[0].UUID)
	}

	// The kubelet's device manager sees every real GPU, healthy, and its
	// share slots; the kubelet would report them on the Node.
	var alloc v1.ResourceList
	err = pollUntil(ctx, func() bool {
		alloc = dm.Allocatable()
		g, s := alloc[contract.ResourceGPU], alloc[contract.ResourceGPUMilli]
		return g.Value() == int64(n) && s.Value() == int64(n)*1000
	})
	if err != nil {
		t.Fatalf("device manager allocatable %v: %v", alloc, err)
	}
	for name, q := range alloc {
		node.Status.Capacity[name], node.Status.Allocatable[name] = q, q
	}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	startScheduler(t, env)

	admit := func(pod *v1.Pod) (contract.GPUAssignment, map[string]string) {
		t.Helper()
		createPods(ctx, t, env, pod)
		b, err := testenv.WaitForPod(ctx, env.Client, pod.Namespace, pod.Name, testenv.Bound)
		if err != nil {
			t.Fatal(err)
		}
		a, err := contract.ParseGPUIDs(b.Annotations[contract.AnnotationGPUIDs])
		if err != nil {
			t.Fatalf("pod %s: %v", pod.Name, err)
		}
		envs := admit(ctx, t, dm, b)
		if got := envs["NVIDIA_VISIBLE_DEVICES"]; got != strings.Join(a.UUIDs, ",") {
			t.Errorf("pod %s: container sees %q, scheduler chose %v", pod.Name, got, a.UUIDs)
		}
		t.Logf("pod %s -> %s: %s=%s %s=%s %s=%s", pod.Name, b.Annotations[contract.AnnotationGPUIDs],
			"NVIDIA_VISIBLE_DEVICES", envs["NVIDIA_VISIBLE_DEVICES"], kubelet.EnvGPUMilli, envs[kubelet.EnvGPUMilli],
			kubelet.EnvGPUMemoryLimit, envs[kubelet.EnvGPUMemoryLimit])
		return a, envs
	}

	// Two shares land on one real GPU and carry its memory share.
	a1, env1 := admit(newPod("share-1", withResource(contract.ResourceGPUMilli, "250")))
	a2, _ := admit(newPod("share-2", withResource(contract.ResourceGPUMilli, "500")))
	if a1.UUIDs[0] != a2.UUIDs[0] {
		t.Errorf("shares spread over %s and %s; they should pack onto one GPU", a1.UUIDs[0], a2.UUIDs[0])
	}
	mem := inv.GPUs[0].MemoryMiB
	if want := strconv.FormatInt(mem*250/1000, 10); env1[kubelet.EnvGPUMemoryLimit] != want {
		t.Errorf("share-1 memory limit %q MiB, want %s", env1[kubelet.EnvGPUMemoryLimit], want)
	}
	// Every whole GPU left goes whole; then one more whole-GPU pod must
	// wait, since the shared GPU is never handed out whole.
	for i := 0; i < n-1; i++ {
		admit(newPod("whole-"+strconv.Itoa(i), withResource(contract.ResourceGPU, "1")))
	}
	createPods(ctx, t, env, newPod("whole-waits", withResource(contract.ResourceGPU, "1")))
	w, err := testenv.WaitForPod(ctx, env.Client, "default", "whole-waits", testenv.Unschedulable)
	if err != nil {
		t.Fatalf("whole-waits: %v", err)
	}
	for _, c := range w.Status.Conditions {
		if c.Type == v1.PodScheduled {
			t.Logf("whole-waits: %s", c.Message)
		}
	}

	// Telemetry of the real GPUs reaches /metrics.
	resp, err := http.Get("http://" + p.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw)
	for _, want := range []string{"kubegpu_gpu_temperature_celsius{", "kubegpu_gpu_power_watts{", "kubegpu_gpu_memory_total_bytes{", `uuid="` + inv.GPUs[0].UUID + `"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "kubegpu_gpu_") && strings.Contains(line, `gpu="0"`) {
			t.Log(line)
		}
	}
}
