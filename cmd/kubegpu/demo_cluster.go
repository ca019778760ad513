package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/kubeletdm"
	"github.com/kubegpu/kubegpu/pkg/nvml"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// Network labels the gang plugin reads (its default topology keys).
const (
	labelZone  = "topology.kubernetes.io/zone"
	labelBlock = "kubegpu.io/block"
)

// demoCluster is the demo's machines: two network blocks. block-a holds
// exactly four 8-GPU nodes, so the 4 x 8-GPU training gang fits there
// whole; block-b mixes the other shapes, two of them sharing GPUs.
var demoCluster = []struct {
	name, shape, block string
	sharing            bool
}{
	{"h100-0", "dgx-h100", "block-a", false},
	{"h100-1", "dgx-h100", "block-a", false},
	{"a100-0", "dgx-a100", "block-a", false},
	{"a100-1", "dgx-a100", "block-a", false},
	{"h100-2", "dgx-h100", "block-b", false},
	{"v100-0", "dgx1-v100", "block-b", true},
	{"l40s-0", "pcie-8x-2socket", "block-b", false},
	{"l4-0", "pcie-4xl4", "block-b", true},
}

// demoNode is one fake GPU node: its NVML, the kubelet's device manager
// and kubegpu's device plugin.
type demoNode struct {
	name, shape, block string
	sharing            bool
	backend            nvml.Backend
	dm                 *kubeletdm.Manager
	plugin             *deviceplugin.Plugin
	inv                *gpunode.Node // as published on the Node
	cancel             context.CancelFunc
	done               chan error
	dir                string
}

func (n *demoNode) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
	if n.dm != nil {
		_ = n.dm.Stop()
	}
	if n.backend != nil {
		_ = n.backend.Shutdown()
	}
	if n.dir != "" {
		_ = os.RemoveAll(n.dir)
	}
}

// gpuIndex is the index of the GPU with uuid on the node, or -1.
func (n *demoNode) gpuIndex(uuid string) int {
	return slices.IndexFunc(n.inv.GPUs, func(g gpunode.GPU) bool { return g.UUID == uuid })
}

// startNodes creates each node object, then runs its device manager and
// device plugin, and reports the device manager's allocatable on the
// Node as the kubelet does; the plugin itself publishes the GPU labels
// and the kubegpu.io/gpu-topology annotation.
func (d *demo) startNodes(ctx context.Context) error {
	for _, c := range demoCluster {
		n := &demoNode{name: c.name, shape: c.shape, block: c.block, sharing: c.sharing, done: make(chan error, 1)}
		d.nodes = append(d.nodes, n)
		d.byName[n.name] = n
		if _, err := testenv.AddGPUNode(ctx, d.client, testenv.GPUNode{Name: n.name, Labels: map[string]string{labelZone: "zone-1", labelBlock: n.block}}); err != nil {
			return err
		}
		// Unix socket paths must stay under 108 bytes.
		dir, err := os.MkdirTemp("/tmp", "kgdemo")
		if err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		n.dir = dir
		if n.dm, err = kubeletdm.Start(dir); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		backend, _, err := nvml.OpenFakeHost(n.shape, n.name)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		n.backend = backend
		ready := make(chan *deviceplugin.Plugin, 1)
		pctx, cancel := context.WithCancel(context.Background())
		n.cancel = cancel
		cfg := deviceplugin.Config{
			Backend: backend, ResourceName: contract.ResourceGPU, PluginDir: dir,
			Sharing: n.sharing, SharedResourceName: contract.ResourceGPUMilli,
			// The kubelet's podresources API is not served here; the
			// plugin then counts a Running pod's GPUs as in use.
			PodResourcesSocket: dir + "/no-podresources.sock",
			NodeName:           n.name, Client: d.client.CoreV1(),
			Health: inventory.HealthOptions{Recovery: true, RecoveryInterval: time.Minute},
			Ready:  func(p *deviceplugin.Plugin) { ready <- p },
		}
		go func() { n.done <- deviceplugin.Run(pctx, cfg) }()
		select {
		case n.plugin = <-ready:
		case err := <-n.done:
			n.cancel = nil
			return fmt.Errorf("node %s: device plugin: %w", n.name, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var gpus, slots int64
	for _, n := range d.nodes {
		var alloc v1.ResourceList
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			alloc = n.dm.Allocatable()
			g := alloc[contract.ResourceGPU]
			s := alloc[contract.ResourceGPUMilli]
			return g.Value() > 0 && (!n.sharing || s.Value() > 0), nil
		})
		if err != nil {
			return fmt.Errorf("node %s: device manager never saw the plugin's devices (allocatable %v): %w", n.name, alloc, err)
		}
		g, s := alloc[contract.ResourceGPU], alloc[contract.ResourceGPUMilli]
		gpus += g.Value()
		slots += s.Value()
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node, err := d.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for name, q := range alloc {
				node.Status.Capacity[name], node.Status.Allocatable[name] = q, q
			}
			_, err = d.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("node %s: report allocatable: %w", n.name, err)
		}
		// The scheduler places on what the plugin published.
		err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			node, err := d.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // retried until the timeout
			}
			inv, err := gpunode.Decode(node.Annotations[contract.AnnotationTopology])
			if err != nil || (n.sharing && node.Labels[contract.LabelGPUSharing] != "true") {
				return false, nil //nolint:nilerr // not published yet
			}
			n.inv = inv
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("node %s: device plugin never published its inventory: %w", n.name, err)
		}
		if len(n.inv.GPUs) != int(g.Value()) {
			return fmt.Errorf("node %s: inventory has %d GPUs, kubelet allocatable %d", n.name, len(n.inv.GPUs), g.Value())
		}
		share := ""
		if n.sharing {
			share = fmt.Sprintf(", %d share slots", s.Value())
		}
		d.logf("%-7s %-16s %s  %d x %s %dGiB%s", n.name, n.shape, n.block, len(n.inv.GPUs), n.inv.GPUs[0].Product, n.inv.GPUs[0].MemoryMiB/1024, share)
	}
	d.logf("%d nodes, %d GPUs, %d share slots in the kubelets' allocatable", len(d.nodes), gpus, slots)
	return nil
}

// placement is one admitted pod and what its container got.
type placement struct {
	Namespace, Name, Example string
	Node                     string
	// GPUs are the node's GPU indices the container got; Milli is the
	// share of GPUs[0] for a share pod (0 for whole GPUs).
	GPUs  []int
	Milli int
	// Visible is NVIDIA_VISIBLE_DEVICES as the device plugin set it.
	Visible []string
	Gang    string
	UID     string
	Deleted bool
	At      time.Duration
}

func (p *placement) GPUText() string {
	var b strings.Builder
	for i, g := range p.GPUs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, g)
	}
	if p.Milli > 0 {
		return fmt.Sprintf("GPU %s: %d/1000", b.String(), p.Milli)
	}
	if len(p.GPUs) == 1 {
		return "GPU " + b.String()
	}
	return "GPUs " + b.String()
}

// shortUUIDs abbreviates a GPU list for the terminal: the first UUID's
// start and how many more.
func shortUUIDs(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	s := ids[0]
	if len(s) > 14 {
		s = s[:14] + "…"
	}
	if len(ids) > 1 {
		s += fmt.Sprintf(" +%d more", len(ids)-1)
	}
	return s
}

// holders are the live placements holding GPU index i of node.
func (d *demo) holders(node string, i int) []*placement {
	return holdersIn(d.placements, node, i)
}

// waitBound waits until every pod has a node and returns them bound,
// oldest first (the order a kubelet admits a batch in).
func (d *demo) waitBound(ctx context.Context, pods []*v1.Pod, timeout time.Duration) ([]*v1.Pod, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var bound []*v1.Pod
	for _, p := range pods {
		b, err := testenv.WaitForPod(wctx, d.client, p.Namespace, p.Name, testenv.Bound)
		if err != nil {
			return nil, err
		}
		bound = append(bound, b)
	}
	// The kubelet admits a batch oldest first. Creation times have
	// one-second resolution and the kubelet leaves ties in arrival order;
	// the device plugin, which cannot tell from Allocate which pod asks,
	// breaks ties by namespace and name. Pods of one size bound to one
	// node in the same second and admitted in another order swap their
	// GPU sets (docs/deviceplugin.md), so the demo's kubelet admits ties in the
	// plugin's order.
	slices.SortStableFunc(bound, func(a, b *v1.Pod) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	return bound, nil
}

// admit plays the kubelet of pod's node: the device manager allocates the
// pod's devices through the device plugin, the container's
// NVIDIA_VISIBLE_DEVICES must be exactly the GPUs the scheduler recorded
// in kubegpu.io/gpu-ids, then the pod is reported Running (and Ready,
// with podIP when given).
func (d *demo) admit(ctx context.Context, pod *v1.Pod, example, podIP string) (*placement, error) {
	n := d.byName[pod.Spec.NodeName]
	if n == nil {
		return nil, fmt.Errorf("pod %s bound to unknown node %q", pod.Name, pod.Spec.NodeName)
	}
	raw, ok := pod.Annotations[contract.AnnotationGPUIDs]
	if !ok {
		return nil, fmt.Errorf("pod %s bound to %s without %s", pod.Name, n.name, contract.AnnotationGPUIDs)
	}
	want, err := contract.ParseGPUIDs(raw)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	// The plugin matches the kubelet's request to this pod through its pod
	// informer: let it see the binding first, as it would on a real node
	// long before the kubelet admits the pod.
	err = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		p, err := n.plugin.Chooser.Pods.Pods(pod.Namespace).Get(pod.Name)
		return err == nil && p.UID == pod.UID && p.Annotations[contract.AnnotationGPUIDs] == raw, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pod %s: device plugin on %s never saw it bound: %w", pod.Name, n.name, err)
	}
	envs, err := n.dm.Admit(ctx, pod)
	if err != nil {
		return nil, err
	}
	env := envs[pod.Spec.Containers[0].Name]
	visible := strings.Split(env["NVIDIA_VISIBLE_DEVICES"], ",")
	if !slices.Equal(slices.Sorted(slices.Values(visible)), slices.Sorted(slices.Values(want.UUIDs))) {
		return nil, fmt.Errorf("pod %s on %s: container sees GPUs %v, scheduler recorded %v", pod.Name, n.name, visible, want.UUIDs)
	}
	p := &placement{Namespace: pod.Namespace, Name: pod.Name, Example: example, Node: n.name, Milli: want.Milli,
		Visible: visible, Gang: gangOf(pod), UID: string(pod.UID), At: time.Since(d.start)}
	for _, id := range want.UUIDs {
		i := n.gpuIndex(id)
		if i < 0 {
			return nil, fmt.Errorf("pod %s: GPU %s is not on node %s", pod.Name, id, n.name)
		}
		p.GPUs = append(p.GPUs, i)
	}
	if err := d.setRunning(ctx, pod, podIP); err != nil {
		return nil, err
	}
	d.placements = append(d.placements, p)
	return p, nil
}

func gangOf(pod *v1.Pod) string {
	if ref := metav1.GetControllerOf(pod); ref != nil && ref.Kind == "Job" && pod.Annotations[contract.LabelGang] == "true" {
		return "job/" + ref.Name
	}
	return pod.Labels[contract.LabelGang]
}

// setRunning writes the status a kubelet writes once the containers run.
func (d *demo) setRunning(ctx context.Context, pod *v1.Pod, podIP string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := d.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cur.Status.Phase = v1.PodRunning
		cur.Status.HostIP = "10.0.0.1"
		cur.Status.PodIP = podIP
		if podIP != "" {
			cur.Status.PodIPs = []v1.PodIP{{IP: podIP}}
		}
		cur.Status.StartTime = &now
		conds := []v1.PodCondition{}
		for _, c := range cur.Status.Conditions {
			if c.Type == v1.PodScheduled {
				conds = append(conds, c)
			}
		}
		for _, t := range []v1.PodConditionType{v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
			conds = append(conds, v1.PodCondition{Type: t, Status: v1.ConditionTrue, LastTransitionTime: now})
		}
		cur.Status.Conditions = conds
		cur.Status.ContainerStatuses = nil
		for _, c := range cur.Spec.Containers {
			cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, v1.ContainerStatus{
				Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
				State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
			})
		}
		_, err = d.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// finalCheck re-reads every pod the demo admitted: still bound to the
// same node, the annotation unchanged and matching what the container
// got; no whole GPU is held twice and no GPU's shares exceed 1000.
func (d *demo) finalCheck(ctx context.Context) error {
	for _, p := range d.placements {
		if p.Deleted {
			continue
		}
		pod, err := d.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		if pod.Spec.NodeName != p.Node || pod.Status.Phase != v1.PodRunning {
			return fmt.Errorf("pod %s/%s: on %q phase %s, admitted on %s", p.Namespace, p.Name, pod.Spec.NodeName, pod.Status.Phase, p.Node)
		}
		a, err := contract.ParseGPUIDs(pod.Annotations[contract.AnnotationGPUIDs])
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		if !slices.Equal(slices.Sorted(slices.Values(a.UUIDs)), slices.Sorted(slices.Values(p.Visible))) {
			return fmt.Errorf("pod %s/%s: annotation %v, container got %v", p.Namespace, p.Name, a.UUIDs, p.Visible)
		}
	}
	checked := 0
	for _, n := range d.nodes {
		for i := range n.inv.GPUs {
			h := d.holders(n.name, i)
			milli := 0
			for _, p := range h {
				if p.Milli == 0 && len(h) > 1 {
					return fmt.Errorf("%s GPU %d held whole by %s and also by %d other pods", n.name, i, p.Name, len(h)-1)
				}
				milli += p.Milli
			}
			if milli > 1000 {
				return fmt.Errorf("%s GPU %d shares sum to %d/1000", n.name, i, milli)
			}
			checked++
		}
	}
	d.logf("%d pods and %d GPUs checked", len(d.livePlacements()), checked)
	return nil
}

func (d *demo) livePlacements() []*placement {
	var out []*placement
	for _, p := range d.placements {
		if !p.Deleted {
			out = append(out, p)
		}
	}
	return out
}
