package sim

import (
	"context"
	"fmt"
	"strconv"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
)

// GPUModel is how the simulator presents an openb GPU model to the
// plugin: the product name for nvidia.com/gpu.product and the memory.
type GPUModel struct {
	Product   string
	MemoryMiB int64
}

// GPUModels maps openb's model names. G2 and G3 are undisclosed; their
// nodes (8 GPUs, 96 and 128 cores) look like data-center training
// servers, so they get 32 GiB and 80 GiB. No openb pod states a GPU
// memory minimum, so the values only matter for the memory-fit score,
// which is neutral for such pods.
var GPUModels = map[string]GPUModel{
	"P100":    {"Tesla-P100-PCIE-16GB", 16 << 10},
	"T4":      {"Tesla-T4", 16 << 10},
	"V100M16": {"Tesla-V100-SXM2-16GB", 16 << 10},
	"V100M32": {"Tesla-V100-SXM2-32GB", 32 << 10},
	"A10":     {"NVIDIA-A10", 24 << 10},
	"G2":      {"openb-G2", 32 << 10},
	"G3":      {"openb-G3", 80 << 10},
}

func gpuModel(m string) GPUModel {
	if g, ok := GPUModels[m]; ok {
		return g
	}
	return GPUModel{Product: "openb-" + m, MemoryMiB: 16 << 10}
}

// KubeNode is the v1.Node the simulator shows the plugin: allocatable
// CPU, memory and GPUs, the GPU Feature Discovery labels and the
// kubegpu.io/gpu-topology annotation. openb gives no interconnect, so
// every pair of GPUs is on one PCIe switch (uniform: topology never
// decides between sets).
func KubeNode(n Node) (*v1.Node, error) {
	gm := gpuModel(n.Model)
	topo := &gpunode.Node{GPUs: make([]gpunode.GPU, n.GPUs), Links: make([][]gpunode.Link, n.GPUs)}
	for i := range n.GPUs {
		topo.GPUs[i] = gpunode.GPU{Index: i, UUID: gpuUUID(n.Name, i), Product: gm.Product, MemoryMiB: gm.MemoryMiB, NUMANode: -1, Healthy: true}
		topo.Links[i] = make([]gpunode.Link, n.GPUs)
		for j := range n.GPUs {
			if i != j {
				topo.Links[i][j].PCIe = gpunode.PCIeSingleSwitch
			}
		}
	}
	annot, err := gpunode.Encode(topo)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	res := v1.ResourceList{
		v1.ResourceCPU:            *resource.NewMilliQuantity(n.CPUMilli, resource.DecimalSI),
		v1.ResourceMemory:         *resource.NewQuantity(n.MemoryMiB<<20, resource.BinarySI),
		v1.ResourcePods:           *resource.NewQuantity(1000, resource.DecimalSI),
		contract.ResourceGPU:      *resource.NewQuantity(int64(n.GPUs), resource.DecimalSI),
		contract.ResourceGPUMilli: *resource.NewQuantity(int64(n.GPUs)*FullGPU, resource.DecimalSI),
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name,
			Labels: map[string]string{
				contract.LabelGPUProduct: gm.Product,
				contract.LabelGPUMemory:  strconv.FormatInt(gm.MemoryMiB, 10),
				contract.LabelGPUCount:   strconv.Itoa(n.GPUs),
				// Every openb node shares GPUs, as the trace's share pods show.
				contract.LabelGPUSharing: "true",
			},
			Annotations: map[string]string{contract.AnnotationTopology: annot},
		},
		Status: v1.NodeStatus{Capacity: res, Allocatable: res},
	}, nil
}

func gpuUUID(node string, i int) string { return fmt.Sprintf("GPU-%s-%d", node, i) }

// KubePod is the v1.Pod for a trace pod: CPU and memory requests, whole
// GPUs as nvidia.com/gpu, a share as kubegpu.io/gpu-milli, and gpu_spec
// as required node affinity on nvidia.com/gpu.product.
func KubePod(p *Pod, k int) *v1.Pod {
	req := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewMilliQuantity(p.CPUMilli, resource.DecimalSI),
		v1.ResourceMemory: *resource.NewQuantity(p.MemoryMiB<<20, resource.BinarySI),
	}
	switch {
	case p.NumGPU == 0:
	case p.Share():
		req[contract.ResourceGPUMilli] = *resource.NewQuantity(int64(p.GPUMilli), resource.DecimalSI)
	default:
		req[contract.ResourceGPU] = *resource.NewQuantity(int64(p.NumGPU), resource.DecimalSI)
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: "openb", UID: types.UID(fmt.Sprintf("pod-%d", k))},
		Spec: v1.PodSpec{
			SchedulerName: "kubegpu-scheduler",
			Containers:    []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{Requests: req, Limits: req}}},
		},
	}
	if len(p.Spec) > 0 && p.NumGPU > 0 {
		products := make([]string, len(p.Spec))
		for i, m := range p.Spec {
			products[i] = gpuModel(m).Product
		}
		pod.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: contract.LabelGPUProduct, Operator: v1.NodeSelectorOpIn, Values: products}},
			}}},
		}}
	}
	return pod
}

// kubegpu drives the GPUPack plugin (default args) through the extension
// points the scheduler calls: PreFilter, Filter, PreScore, Score,
// NormalizeScore and Reserve, on framework NodeInfos. The simulator
// checks CPU, memory and the GPU model itself, as NodeResourcesFit and
// NodeAffinity would, and only the plugin decides GPU feasibility, the
// node (by its score; ties to the seed's node order) and the GPUs.
type kubegpu struct {
	c      *Cluster
	plugin *gpupack.Plugin
	infos  []*framework.NodeInfo
	order  []int
	pos    map[string]int // GPU UUID -> index on its node
	// scratch
	feasible []fwk.NodeInfo
	idx      []int
	scores   fwk.NodeScoreList
}

func newKubegpu(e *Env) (Policy, error) {
	pl, err := gpupack.NewStandalone(nil)
	if err != nil {
		return nil, err
	}
	k := &kubegpu{c: e.Cluster, plugin: pl, order: nodeOrder(len(e.Cluster.Nodes), e.Seed), pos: map[string]int{}}
	for _, n := range e.Cluster.Nodes {
		kn, err := KubeNode(n)
		if err != nil {
			return nil, err
		}
		pl.ObserveNode(kn)
		ni := framework.NewNodeInfo()
		ni.SetNode(kn)
		k.infos = append(k.infos, ni)
		for i := range n.GPUs {
			k.pos[gpuUUID(n.Name, i)] = i
		}
	}
	return k, nil
}

func (k *kubegpu) Place(ctx context.Context, p *Pod, n int) (int, []int, bool, error) {
	pod := KubePod(p, n)
	state := framework.NewCycleState()
	_, st := k.plugin.PreFilter(ctx, state, pod, nil)
	skipFilter := st.IsSkip()
	if !st.IsSuccess() && !skipFilter {
		return -1, nil, false, nil
	}
	k.feasible, k.idx = k.feasible[:0], k.idx[:0]
	for _, i := range k.order {
		if !k.c.hostFits(i, p) {
			continue
		}
		if !skipFilter && !k.plugin.Filter(ctx, state, pod, k.infos[i]).IsSuccess() {
			continue
		}
		k.feasible = append(k.feasible, k.infos[i])
		k.idx = append(k.idx, i)
	}
	if len(k.idx) == 0 {
		return -1, nil, false, nil
	}
	best := 0
	if st := k.plugin.PreScore(ctx, state, pod, k.feasible); st.IsSuccess() {
		k.scores = k.scores[:0]
		for _, ni := range k.feasible {
			s, st := k.plugin.Score(ctx, state, pod, ni)
			if !st.IsSuccess() {
				return -1, nil, false, fmt.Errorf("score: %w", st.AsError())
			}
			k.scores = append(k.scores, fwk.NodeScore{Name: ni.Node().Name, Score: s})
		}
		if st := k.plugin.NormalizeScore(ctx, state, pod, k.scores); !st.IsSuccess() {
			return -1, nil, false, fmt.Errorf("normalize: %w", st.AsError())
		}
		for j, s := range k.scores {
			if s.Score > k.scores[best].Score {
				best = j
			}
		}
	}
	i := k.idx[best]
	if st := k.plugin.Reserve(ctx, state, pod, k.infos[i].Node().Name); !st.IsSuccess() {
		return -1, nil, false, fmt.Errorf("reserve on %s: %w", k.infos[i].Node().Name, st.AsError())
	}
	var gpus []int
	for _, u := range k.plugin.ReservedGPUs(state) {
		g, ok := k.pos[u]
		if !ok {
			return -1, nil, false, fmt.Errorf("plugin reserved unknown GPU %q", u)
		}
		gpus = append(gpus, g)
	}
	pod.Spec.NodeName = k.infos[i].Node().Name
	k.infos[i].AddPod(pod)
	return i, gpus, true, nil
}
