package deviceplugin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/kubeletdm"
	"github.com/kubegpu/kubegpu/pkg/nvml"
	"github.com/kubegpu/kubegpu/pkg/nvml/fake"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

const resourceGPU = v1.ResourceName(contract.ResourceGPU)

// kubelet is the kubelet's own device manager on a temp folder, with the
// pods it treats as active.
type kubelet struct {
	t    *testing.T
	dir  string
	mgr  *devicemanager.ManagerImpl
	mu   sync.Mutex
	pods []*v1.Pod
}

func newKubelet(t *testing.T) *kubelet {
	t.Helper()
	k := newStoppedKubelet(t)
	k.start()
	return k
}

// newStoppedKubelet makes the folder but starts no device manager yet.
func newStoppedKubelet(t *testing.T) *kubelet {
	// Unix socket paths must stay under 108 bytes: not t.TempDir().
	dir, err := os.MkdirTemp("/tmp", "kgdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	k := &kubelet{t: t, dir: dir}
	t.Cleanup(k.stop)
	return k
}

// start runs a new device manager on the folder, as a restarted kubelet
// does: it deletes the folder's sockets and recreates kubelet.sock.
func (k *kubelet) start() {
	logger := klog.Background()
	m, err := kubeletdm.NewManagerImpl(logger, filepath.Join(k.dir, "kubelet.sock"))
	if err != nil {
		k.t.Fatal(err)
	}
	active := func() []*v1.Pod {
		k.mu.Lock()
		defer k.mu.Unlock()
		return slices.Clone(k.pods)
	}
	ready := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	if err := m.Start(logger, active, ready, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		k.t.Fatal(err)
	}
	k.mgr = m
}

func (k *kubelet) stop() {
	if k.mgr != nil {
		_ = k.mgr.Stop(klog.Background())
		k.mgr = nil
	}
}

// capacity is the resource's (capacity, allocatable) as the kubelet would
// report them on the node.
func (k *kubelet) capacity() (int64, int64) {
	c, a, _ := k.mgr.GetCapacity(klog.Background())
	cq, aq := c[resourceGPU], a[resourceGPU]
	return cq.Value(), aq.Value()
}

// waitFor polls cond every millisecond until it holds or timeout passes,
// returning how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// allocate runs the kubelet's admission-time allocation for pod's first
// container and returns the NVIDIA_VISIBLE_DEVICES the container gets.
func (k *kubelet) allocate(t *testing.T, pod *v1.Pod) []string {
	t.Helper()
	k.mu.Lock()
	k.pods = append(k.pods, pod)
	k.mu.Unlock()
	ctx := context.Background()
	c := &pod.Spec.Containers[0]
	if err := k.mgr.Allocate(ctx, pod, c, lifecycle.AddOperation); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	opts, err := k.mgr.GetDeviceRunContainerOptions(ctx, pod, c)
	if err != nil || opts == nil {
		t.Fatalf("GetDeviceRunContainerOptions: %v, %v", opts, err)
	}
	env := map[string]string{}
	for _, e := range opts.Envs {
		env[e.Name] = e.Value
	}
	if env["NVIDIA_DRIVER_CAPABILITIES"] != "compute,utility" {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES = %q", env["NVIDIA_DRIVER_CAPABILITIES"])
	}
	ids := strings.Split(env["NVIDIA_VISIBLE_DEVICES"], ",")
	sort.Strings(ids)
	return ids
}

func gpuPod(name, node string, gpus int, annotated []string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{
			Name: "main", Image: "cuda",
			Resources: v1.ResourceRequirements{Limits: v1.ResourceList{resourceGPU: *resource.NewQuantity(int64(gpus), resource.DecimalSI)}},
		}}},
	}
	if annotated != nil {
		p.Annotations = map[string]string{contract.AnnotationGPUIDs: strings.Join(annotated, ",")}
	}
	return p
}

// plugin runs the device plugin on a fake machine against k's folder.
type plugin struct {
	*deviceplugin.Plugin
	machine *fake.Machine
}

func startPlugin(t *testing.T, k *kubelet, machine string, client corev1client.CoreV1Interface, nodeName string) *plugin {
	t.Helper()
	backend, m, err := nvml.OpenFake(machine)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *deviceplugin.Plugin, 1)
	done := make(chan error, 1)
	go func() {
		done <- deviceplugin.Run(ctx, deviceplugin.Config{
			Backend: backend, ResourceName: contract.ResourceGPU, PluginDir: k.dir,
			PodResourcesSocket: filepath.Join(k.dir, "no-podresources.sock"),
			NodeName:           nodeName, Client: client, MetricsAddr: "127.0.0.1:0",
			Health: inventory.HealthOptions{Recovery: true, RecoveryInterval: 300 * time.Millisecond},
			Ready:  func(p *deviceplugin.Plugin) { ready <- p },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = backend.Shutdown()
	})
	select {
	case p := <-ready:
		return &plugin{Plugin: p, machine: m}
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return nil
}

// TestDevicePlugin runs the plugin on a fake DGX H100 against the
// kubelet's device manager and a real API server.
func TestDevicePlugin(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	const nodeName = "gpu-h100"
	if _, err := testenv.AddGPUNode(ctx, env.Client, testenv.GPUNode{
		Name: nodeName, GPUs: 8,
		Labels:      map[string]string{"team": "ml", contract.LabelGPUCount: "stale"},
		Annotations: map[string]string{"owner": "ops"},
	}); err != nil {
		t.Fatal(err)
	}
	// The plugin starts before the kubelet: it publishes the inventory
	// anyway and registers once kubelet.sock appears.
	k := newStoppedKubelet(t)
	p := startPlugin(t, k, "dgx-h100", env.Client.CoreV1(), nodeName)
	uuid := func(i int) string { return p.machine.UUID(i) }

	t.Run("node inventory", func(t *testing.T) {
		var node *v1.Node
		waitFor(t, 10*time.Second, "node labels", func() bool {
			n, err := env.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return false
			}
			node = n
			return n.Labels[contract.LabelGPUCount] == "8"
		})
		want := map[string]string{
			contract.LabelGPUProduct: "NVIDIA-H100-80GB-HBM3", contract.LabelGPUMemory: "81559",
			contract.LabelGPUCount: "8", "team": "ml",
		}
		for k, v := range want {
			if node.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, node.Labels[k], v)
			}
		}
		if node.Annotations["owner"] != "ops" {
			t.Errorf("annotation owner lost: %v", node.Annotations)
		}
		got, err := gpunode.Decode(node.Annotations[contract.AnnotationTopology])
		if err != nil {
			t.Fatalf("decode topology annotation: %v", err)
		}
		if len(got.GPUs) != 8 || got.GPUs[3].UUID != uuid(3) || !got.Links[0][7].NVSwitch {
			t.Errorf("topology annotation: %+v", got.GPUs)
		}
	})

	t.Run("registration and capacity", func(t *testing.T) {
		if p.Server.Registrations() != 0 {
			t.Fatal("registered without a kubelet")
		}
		k.start()
		took := waitFor(t, 5*time.Second, "capacity 8", func() bool { c, a := k.capacity(); return c == 8 && a == 8 })
		t.Logf("capacity 8/8 %v after the kubelet started", took)
		// The kubelet may list the devices before the plugin's Register
		// call has returned to it.
		waitFor(t, 5*time.Second, "one registration", func() bool { return p.Server.Registrations() >= 1 })
		if p.Server.Registrations() != 1 {
			t.Errorf("%d registrations, want 1", p.Server.Registrations())
		}
	})

	t.Run("scheduler's choice honoured", func(t *testing.T) {
		chosen := []string{uuid(5), uuid(6)}
		sort.Strings(chosen)
		pod := gpuPod("annotated", nodeName, 2, chosen)
		if _, err := env.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "pod in the plugin's informer", func() bool {
			pods, _ := p.Chooser.Pods.List(labels.Everything())
			return len(pods) == 1
		})
		if got := k.allocate(t, pod); !slices.Equal(got, chosen) {
			t.Errorf("container got %v, scheduler chose %v", got, chosen)
		}
		// An unannotated pod gets a topology choice among the rest.
		if got := k.allocate(t, gpuPod("plain", nodeName, 3, nil)); len(got) != 3 || slices.ContainsFunc(got, func(id string) bool { return slices.Contains(chosen, id) }) {
			t.Errorf("unannotated pod got %v (taken: %v)", got, chosen)
		}
	})

	t.Run("health propagation and recovery", func(t *testing.T) {
		_, before := k.capacity()
		// GPU 3 stays unreadable until the annotation was checked, so
		// recovery (300ms here) cannot clear it before.
		if err := p.machine.InjectError("GetTemperature", 3, gonvml.ERROR_GPU_IS_LOST); err != nil {
			t.Fatal(err)
		}
		if n := p.machine.SendXid(3, 79); n == 0 {
			t.Fatal("Xid 79 reached no NVML event set")
		}
		took := waitFor(t, time.Second, "allocatable drops after Xid 79", func() bool { _, a := k.capacity(); return a == before-1 })
		t.Logf("health propagation: Xid 79 on GPU 3 -> kubelet allocatable %d->%d in %v", before, before-1, took)
		waitFor(t, 5*time.Second, "annotation shows GPU 3 unhealthy", func() bool {
			n, err := env.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return false
			}
			got, err := gpunode.Decode(n.Annotations[contract.AnnotationTopology])
			return err == nil && !got.GPUs[3].Healthy && got.GPUs[2].Healthy
		})
		// An application Xid does not count.
		p.machine.SendXid(2, 13)
		if err := p.machine.InjectError("GetTemperature", 3, gonvml.SUCCESS); err != nil {
			t.Fatal(err)
		}
		took = waitFor(t, 3*time.Second, "recovery", func() bool { _, a := k.capacity(); return a == before })
		t.Logf("recovery: GPU 3 healthy again after %v (interval 300ms)", took)
		if _, a := k.capacity(); a != before {
			t.Errorf("allocatable %d after recovery, want %d", a, before)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + p.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{
			fmt.Sprintf(`kubegpu_gpu_memory_total_bytes{container="",gpu="0",model="NVIDIA H100 80GB HBM3",namespace="",pod="",uuid="%s"} 8.5520809984e+10`, uuid(0)),
			fmt.Sprintf(`kubegpu_gpu_xid_errors_total{container="",gpu="3",model="NVIDIA H100 80GB HBM3",namespace="",pod="",uuid="%s"} 1`, uuid(3)),
			`kubegpu_gpu_temperature_celsius{`, `kubegpu_gpu_power_watts{`, `kubegpu_gpu_utilization_ratio{`, `kubegpu_gpu_healthy{`,
			`kubegpu_deviceplugin_allocations_total{verdict="honoured"} 1`,
			`kubegpu_deviceplugin_preferred_allocations_total{source="annotation"}`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if resp, err := http.Get("http://" + p.MetricsAddr + "/healthz"); err != nil || resp.StatusCode != 200 {
			t.Errorf("/healthz: %v %v", resp, err)
		}
	})
}

// TestKubeletRestarts restarts the kubelet's device manager ten times on
// the same folder; the plugin must re-register each time.
func TestKubeletRestarts(t *testing.T) {
	k := newKubelet(t)
	p := startPlugin(t, k, "dgx-h100", nil, "")
	waitFor(t, 5*time.Second, "first registration", func() bool { c, _ := k.capacity(); return c == 8 })
	var times []time.Duration
	for i := range 10 {
		k.stop()
		k.start()
		took := waitFor(t, 5*time.Second, fmt.Sprintf("re-registration %d", i+1), func() bool { _, a := k.capacity(); return a == 8 })
		if took >= 2*time.Second {
			t.Errorf("re-registration %d took %v, goal < 2s", i+1, took)
		}
		times = append(times, took)
	}
	// The device manager shows capacity while our Register call is still
	// returning, so the count can trail by a moment.
	waitFor(t, time.Second, "11 registrations", func() bool { return p.Server.Registrations() == 11 })
	if n := p.Server.Registrations(); n != 11 {
		t.Errorf("%d registrations, want 11", n)
	}
	t.Logf("re-registration times (manager start -> 8 allocatable): %v", times)
}

// TestPreferredTopology: an unannotated 4-GPU pod on a DGX-1 gets one of
// the two fully NVLinked quads.
func TestPreferredTopology(t *testing.T) {
	k := newKubelet(t)
	p := startPlugin(t, k, "dgx1-v100", nil, "")
	waitFor(t, 5*time.Second, "registration", func() bool { _, a := k.capacity(); return a == 8 })
	quad := func(first int) []string {
		var ids []string
		for i := first; i < first+4; i++ {
			ids = append(ids, p.machine.UUID(i))
		}
		sort.Strings(ids)
		return ids
	}
	got := k.allocate(t, gpuPod("quad", "", 4, nil))
	if !slices.Equal(got, quad(0)) && !slices.Equal(got, quad(4)) {
		t.Errorf("4-GPU pod got %v, want a whole NVLink quad", got)
	}
}
