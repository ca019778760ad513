package gpupack

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func ptr(v int64) *int64 { return &v }

func TestArgsValidate(t *testing.T) {
	tests := []struct {
		name    string
		args    Args
		wantErr string
	}{
		{name: "defaults", args: DefaultArgs()},
		{name: "same resources", args: Args{ResourceName: "x", SharedResourceName: "x"}, wantErr: "must differ"},
		{name: "bad policy", args: Args{MultiGPUInterconnect: "Always"}, wantErr: "multiGPUInterconnect"},
		{name: "negative weight", args: Args{PackingWeight: ptr(-1)}, wantErr: "packingWeight -1"},
		{name: "huge weight", args: Args{TopologyWeight: ptr(1000)}, wantErr: "topologyWeight 1000"},
		{name: "all zero", args: Args{PackingWeight: ptr(0), TopologyWeight: ptr(0), MemoryFitWeight: ptr(0)}, wantErr: "at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.args
			a.setDefaults()
			err := a.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func pod(limits map[string]string, annotations map[string]string) *v1.Pod {
	l := v1.ResourceList{}
	for k, v := range limits {
		l[v1.ResourceName(k)] = resource.MustParse(v)
	}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: types.UID("uid-p"), Annotations: annotations},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "c", Resources: v1.ResourceRequirements{Limits: l, Requests: l}}}},
	}
}

func TestParseRequest(t *testing.T) {
	args := DefaultArgs()
	tests := []struct {
		name    string
		pod     *v1.Pod
		want    request
		wantErr string
	}{
		{name: "none", pod: pod(nil, nil)},
		{name: "whole", pod: pod(map[string]string{contract.ResourceGPU: "2"}, nil), want: request{whole: 2}},
		{name: "share", pod: pod(map[string]string{contract.ResourceGPUMilli: "250"}, nil), want: request{milli: 250}},
		{name: "memory", pod: pod(map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "40Gi"}),
			want: request{whole: 1, memoryMiB: 40960, memoryStr: "40Gi"}},
		{name: "memory rounds up", pod: pod(map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "1"}),
			want: request{whole: 1, memoryMiB: 1, memoryStr: "1"}},
		{name: "bad memory", pod: pod(map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "big"}), wantErr: "gpu-memory-min"},
		{name: "memory beyond any GPU", pod: pod(map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "8Ei"}), wantErr: "no GPU has"},
		{name: "zero memory", pod: pod(map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "0"}), wantErr: "positive"},
		{name: "share 0", pod: pod(map[string]string{contract.ResourceGPUMilli: "0"}, nil), wantErr: "1-999"},
		{name: "share 1500", pod: pod(map[string]string{contract.ResourceGPUMilli: "1500"}, nil), wantErr: "1-999"},
		{name: "share fraction", pod: pod(map[string]string{contract.ResourceGPUMilli: "0.5"}, nil), wantErr: "1-999"},
		{name: "both", pod: pod(map[string]string{contract.ResourceGPU: "1", contract.ResourceGPUMilli: "100"}, nil), wantErr: "both"},
		{name: "too many", pod: pod(map[string]string{contract.ResourceGPU: "65"}, nil), wantErr: "0-64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRequest(tt.pod, &args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// node builds the cache entry of a shaped node with some GPUs booked.
func node(t *testing.T, shape string) (*gpuState, *v1.Node) {
	t.Helper()
	inv := gpunode.MustShape(shape).Clone()
	for i := range inv.GPUs {
		inv.GPUs[i].UUID = fmt.Sprintf("GPU-%d", i)
	}
	annot, err := gpunode.Encode(inv)
	if err != nil {
		t.Fatal(err)
	}
	args := DefaultArgs()
	c := newGPUState(&args)
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{contract.LabelGPUSharing: "true"}, Annotations: map[string]string{contract.AnnotationTopology: annot}}}
	c.setNode(n)
	return c, n
}

func TestFit(t *testing.T) {
	args := DefaultArgs()
	nvlink := DefaultArgs()
	nvlink.MultiGPUInterconnect = InterconnectNVLink
	tests := []struct {
		name       string
		shape      string
		booked     [][]string // whole-GPU bookings
		shares     map[string]int
		unhealthy  []int
		args       *Args
		req        request
		want       []int
		wantReason string
	}{
		{name: "dgx1 quad", shape: "dgx1-v100", req: request{whole: 4}, want: []int{0, 1, 2, 3}},
		{name: "dgx1 quad when low quad half used", shape: "dgx1-v100", booked: [][]string{{"GPU-0"}}, req: request{whole: 4}, want: []int{4, 5, 6, 7}},
		{name: "not enough", shape: "pcie-4xl4", booked: [][]string{{"GPU-0", "GPU-1"}}, req: request{whole: 3}, wantReason: reasonFreeGPUs},
		{name: "unhealthy", shape: "pcie-4xl4", unhealthy: []int{0, 1}, req: request{whole: 3}, wantReason: reasonHealthyGPUs},
		{name: "memory", shape: "pcie-4xl4", req: request{whole: 1, memoryMiB: 40960, memoryStr: "40Gi"}, wantReason: "GPU memory below 40Gi"},
		{name: "nvlink required on pcie", shape: "pcie-8x-2socket", args: &nvlink, req: request{whole: 2}, wantReason: reasonNVLink},
		{name: "nvlink required on dgx1", shape: "dgx1-v100", args: &nvlink, req: request{whole: 2}, want: []int{2, 3}},
		{name: "share tightest", shape: "pcie-4xl4", shares: map[string]int{"GPU-1": 600, "GPU-2": 300}, req: request{milli: 400}, want: []int{1}},
		{name: "share skips whole", shape: "pcie-4xl4", booked: [][]string{{"GPU-0"}}, req: request{milli: 100}, want: []int{1}},
		{name: "share none fits", shape: "pcie-4xl4", shares: map[string]int{"GPU-0": 800, "GPU-1": 800, "GPU-2": 800, "GPU-3": 800}, req: request{milli: 300}, wantReason: "no GPU with 300/1000 free to share"},
		{name: "share on all-whole node", shape: "pcie-4xl4", booked: [][]string{{"GPU-0", "GPU-1"}, {"GPU-2", "GPU-3"}}, req: request{milli: 100}, wantReason: reasonFreeGPUs},
		{name: "share on unhealthy rest", shape: "pcie-4xl4", booked: [][]string{{"GPU-0", "GPU-1"}}, unhealthy: []int{2, 3}, req: request{milli: 100}, wantReason: reasonHealthyGPUs},
		{name: "whole skips shared", shape: "pcie-4xl4", shares: map[string]int{"GPU-0": 1, "GPU-1": 1, "GPU-2": 1}, req: request{whole: 2}, wantReason: reasonFreeGPUs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, n := node(t, tt.shape)
			if len(tt.unhealthy) > 0 {
				inv, _ := gpunode.Decode(n.Annotations[contract.AnnotationTopology])
				for _, i := range tt.unhealthy {
					inv.GPUs[i].Healthy = false
				}
				s, _ := gpunode.Encode(inv)
				n.Annotations[contract.AnnotationTopology] = s
				c.setNode(n)
			}
			for i, b := range tt.booked {
				c.reserve(types.UID(fmt.Sprint("w", i)), "n", b, 0)
			}
			for u, m := range tt.shares {
				c.reserve(types.UID("s"+u), "n", []string{u}, m)
			}
			a := &args
			if tt.args != nil {
				a = tt.args
			}
			got, reason := c.nodes["n"].fit(tt.req, a, nil)
			if reason != tt.wantReason {
				t.Fatalf("reason %q, want %q", reason, tt.wantReason)
			}
			if tt.wantReason == "" && !slices.Equal(got.pos, tt.want) {
				t.Fatalf("chose %v, want %v", got.pos, tt.want)
			}
		})
	}
}

// TestStateBookkeeping: reservations, informer confirmation, deletion
// and inventory changes keep per-GPU usage exact.
func TestStateBookkeeping(t *testing.T) {
	c, n := node(t, "pcie-4xl4")
	ng := func() *nodeGPUs { return c.nodes["n"] }

	c.reserve("a", "n", []string{"GPU-0", "GPU-1"}, 0)
	c.reserve("b", "n", []string{"GPU-2"}, 300)
	if !slices.Equal(ng().used, []int{1000, 1000, 300, 0}) {
		t.Fatalf("used %v after reserve", ng().used)
	}
	c.unreserve("b")
	if ng().used[2] != 0 {
		t.Fatalf("unreserve left %d on GPU-2", ng().used[2])
	}

	// The informer confirms pod a bound with its annotation: same usage,
	// and a later Unreserve no longer drops it.
	p := pod(map[string]string{contract.ResourceGPU: "2"}, map[string]string{contract.AnnotationGPUIDs: "GPU-0,GPU-1"})
	p.UID, p.Spec.NodeName = "a", "n"
	c.setPod(p)
	c.unreserve("a")
	if !slices.Equal(ng().used, []int{1000, 1000, 0, 0}) {
		t.Fatalf("used %v after confirm + unreserve", ng().used)
	}

	// The inventory changes (GPU-1 unhealthy): bookings survive.
	inv, _ := gpunode.Decode(n.Annotations[contract.AnnotationTopology])
	inv.GPUs[1].Healthy = false
	s, _ := gpunode.Encode(inv)
	n.Annotations[contract.AnnotationTopology] = s
	c.setNode(n)
	if !slices.Equal(ng().used, []int{1000, 1000, 0, 0}) {
		t.Fatalf("used %v after inventory change", ng().used)
	}

	// A pod of another scheduler (no annotation) takes a GPU we cannot
	// name: one fewer whole GPU fits.
	f := pod(map[string]string{contract.ResourceGPU: "1"}, nil)
	f.UID, f.Spec.NodeName = "f", "n"
	c.setPod(f)
	args := DefaultArgs()
	if _, reason := ng().fit(request{whole: 2}, &args, nil); reason != reasonFreeGPUs {
		t.Fatalf("fit with a foreign pod: reason %q, want %q", reason, reasonFreeGPUs)
	}

	// A finished pod frees its GPUs.
	p.Status.Phase = v1.PodSucceeded
	c.setPod(p)
	c.deletePod(f)
	if !slices.Equal(ng().used, []int{0, 0, 0, 0}) || ng().foreign != 0 {
		t.Fatalf("used %v foreign %d after pods ended", ng().used, ng().foreign)
	}

	// Shares go only to nodes that serve them.
	delete(n.Labels, contract.LabelGPUSharing)
	c.setNode(n)
	if _, reason := ng().fit(request{milli: 100}, &args, nil); reason != reasonNoSharing {
		t.Fatalf("share on a node without sharing: reason %q, want %q", reason, reasonNoSharing)
	}

	// A bad inventory annotation is a reason, not a panic.
	n.Annotations[contract.AnnotationTopology] = "{not json"
	c.setNode(n)
	if _, reason := ng().fit(request{whole: 1}, &args, nil); reason != reasonBadInventory {
		t.Fatalf("reason %q, want %q", reason, reasonBadInventory)
	}
}

func TestFragmentation(t *testing.T) {
	fm := newFragModel(map[class]float64{{whole: 1, cpu: 4000}: 1, {milli: 500, cpu: 8000}: 1})
	t4 := []gpunode.GPU{{Product: "T4"}, {Product: "T4"}}
	tests := []struct {
		name string
		free []int
		gpus []gpunode.GPU
		cpu  int64
		want float64
	}{
		{name: "empty node", free: []int{1000, 1000}, cpu: unlimitedCPU, want: 0},
		{name: "full node", free: []int{0, 0}, cpu: unlimitedCPU, want: 0},
		{name: "one 300 sliver", free: []int{300, 1000}, cpu: unlimitedCPU, want: 0.5*300 + 0.5*300},
		{name: "only slivers", free: []int{300, 200}, cpu: unlimitedCPU, want: 0.5*500 + 0.5*500},
		{name: "half GPU", free: []int{500, 0}, cpu: unlimitedCPU, want: 0.5 * 500},
		{name: "CPU for the whole class only", free: []int{1000, 1000}, cpu: 6000, want: 0.5 * 2000},
		{name: "no CPU left", free: []int{1000, 1000}, cpu: 0, want: 2000},
		{name: "any product", free: []int{1000, 300}, gpus: t4, cpu: unlimitedCPU, want: 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fm.frag(tt.free, tt.gpus, hostLeft{tt.cpu, unlimitedCPU}); got != tt.want {
				t.Fatalf("frag(%v, cpu %d) = %v, want %v", tt.free, tt.cpu, got, tt.want)
			}
		})
	}
	// A class that only takes V100s finds nothing on T4s: all stranded.
	v100 := newFragModel(map[class]float64{{whole: 1, models: "V100"}: 1})
	if got := v100.frag([]int{1000, 1000}, t4, unknownHost); got != 2000 {
		t.Fatalf("V100-only class on T4s: frag %v, want 2000", got)
	}
}

// TestFitShareByFragmentation: with shares of 500 in the mix, a 500 share
// goes to the empty GPU rather than leave a useless 200 sliver on the
// 700 one; the tightest fit would break that.
func TestFitShareByFragmentation(t *testing.T) {
	args := DefaultArgs()
	c, _ := node(t, "dgx-h100")
	c.reserve("a", "n", []string{"GPU-0"}, 300)
	ng := c.nodes["n"]
	for i := 1; i < len(ng.used); i++ {
		ng.used[i], ng.whole[i] = fullGPU, true
	}
	ng.used[7], ng.whole[7] = 0, false
	fm := newFragModel(map[class]float64{{milli: 500}: 1})
	r := request{milli: 500, frag: fm}
	got, reason := ng.fit(r, &args, nil)
	if reason != "" || len(got.pos) != 1 || got.pos[0] != 7 {
		t.Fatalf("fit = %v %q, want GPU 7", got.pos, reason)
	}
	r.frag = nil
	if got, _ := ng.fit(r, &args, nil); got.pos[0] != 0 {
		t.Fatalf("tightest fit = %v, want GPU 0", got.pos)
	}
}

// TestScorePrefersPacking: a single GPU goes where it fills a gap, not
// where it breaks a whole node.
func TestScorePrefersPacking(t *testing.T) {
	p := newPlugin(DefaultArgs())
	for i := 0; i < 200; i++ {
		p.mix.observe(request{whole: 8})
		p.mix.observe(request{whole: 1})
	}
	c, _ := node(t, "dgx-h100")
	p.gpus = c
	c.args = &p.args
	empty := c.nodes["n"]
	c2, _ := node(t, "dgx-h100")
	c2.reserve("x", "n", []string{"GPU-0", "GPU-1", "GPU-2", "GPU-3", "GPU-4", "GPU-5", "GPU-6"}, 0)
	almostFull := c2.nodes["n"]

	r := request{whole: 1}
	ce, _ := empty.fit(r, &p.args, nil)
	ca, _ := almostFull.fit(r, &p.args, nil)
	se, sa := p.scoreChoice(empty, r, ce, unknownHost), p.scoreChoice(almostFull, r, ca, unknownHost)
	if sa <= se {
		t.Fatalf("score on the almost full node %d <= empty node %d", sa, se)
	}
}

// TestFragmentationHostFloor: free GPUs beyond what the node's free CPU
// or memory carries at the mix's CPU and memory per GPU count as
// stranded, even when every class still fits.
func TestFragmentationHostFloor(t *testing.T) {
	fm := newFragModel(map[class]float64{{whole: 1, cpu: 4000}: 1})
	fm.gpuPerCPU = 1000.0 / 8000 // 8 cores per GPU
	fm.gpuPerMem = 1000.0 / 32768
	free := []int{1000, 1000, 1000, 1000}
	tests := []struct {
		name string
		host hostLeft
		want float64
	}{
		{name: "unknown host", host: unknownHost, want: 0},
		{name: "CPU and memory for all four", host: hostLeft{32000, 4 * 32768}, want: 0},
		{name: "CPU for three", host: hostLeft{24000, unlimitedCPU}, want: 1000},
		{name: "CPU for two and a half", host: hostLeft{20000, unlimitedCPU}, want: 1500},
		{name: "memory for one", host: hostLeft{unlimitedCPU, 32768}, want: 3000},
		{name: "the shorter of the two counts", host: hostLeft{24000, 2 * 32768}, want: 2000},
		{name: "overbooked CPU strands all", host: hostLeft{-1000, unlimitedCPU}, want: 4000},
		{name: "class cut off by CPU strands all", host: hostLeft{3000, unlimitedCPU}, want: 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fm.frag(free, nil, tt.host); got != tt.want {
				t.Fatalf("frag(host %+v) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

// TestMixHostRatios: the mix learns the GPU per CPU and per memory of the
// GPU pods it sees; CPU-only pods do not enter it.
func TestMixHostRatios(t *testing.T) {
	m := newMix(nil)
	for range 2 * refreshEvery {
		m.observe(request{whole: 1, cpuMilli: 8000, memReqMiB: 32768})
		m.observe(request{milli: 500, cpuMilli: 4000, memReqMiB: 16384})
		m.observe(request{cpuMilli: 64000, memReqMiB: 1 << 20})
	}
	fm := m.current()
	if want := 1000.0 / 8000; math.Abs(fm.gpuPerCPU-want) > 1e-9 {
		t.Fatalf("gpuPerCPU %v, want %v", fm.gpuPerCPU, want)
	}
	if want := 1000.0 / 32768; math.Abs(fm.gpuPerMem-want) > 1e-9 {
		t.Fatalf("gpuPerMem %v, want %v", fm.gpuPerMem, want)
	}
}

// TestScoreSteersCPUAwayFromGPUs: a CPU-only pod scores higher on a node
// with CPU to spare than on one whose free GPUs need the CPU it would
// take.
func TestScoreSteersCPUAwayFromGPUs(t *testing.T) {
	p := newPlugin(DefaultArgs())
	for range 4 * refreshEvery {
		p.mix.observe(request{whole: 1, cpuMilli: 8000, memReqMiB: 1024})
	}
	c, _ := node(t, "dgx-h100")
	p.gpus = c
	c.args = &p.args
	ng := c.nodes["n"]
	r := request{cpuMilli: 16000, memReqMiB: 1024}
	scarce := p.scoreChoice(ng, r, choice{}, hostLeft{8 * 8000, 1 << 20})
	spare := p.scoreChoice(ng, r, choice{}, hostLeft{8*8000 + 16000, 1 << 20})
	if spare <= scarce {
		t.Fatalf("CPU-only pod: score with CPU to spare %d <= score where it strands GPUs %d", spare, scarce)
	}
	// Where neither strands a GPU, the node with more CPU beyond its
	// GPUs' needs wins, and a node without GPUs beats both.
	rich := p.scoreChoice(ng, r, choice{}, hostLeft{8*8000 + 64000, 1 << 20})
	if rich <= spare {
		t.Fatalf("CPU-only pod: score on the CPU-rich node %d <= on the one with a little to spare %d", rich, spare)
	}
	if none := p.scoreChoice(nil, r, choice{}, hostLeft{}); none <= rich {
		t.Fatalf("CPU-only pod: score on a node without GPUs %d <= on a GPU node %d", none, rich)
	}
}

// TestModelPressure: a model-restricted class claims its share of the
// GPU demand over its share of the capacity, spread over the products it
// accepts; unrestricted classes claim nothing.
func TestModelPressure(t *testing.T) {
	capacity := map[string]int{"A": 10, "B": 30}
	tests := []struct {
		name   string
		weight map[class]float64
		want   map[string]float64
	}{
		{name: "none restricted", weight: map[class]float64{{whole: 1}: 1, {milli: 500}: 1}, want: nil},
		// A-only is 1/8 of the GPU demand, A a quarter of the capacity.
		{name: "one product", weight: map[class]float64{{whole: 1}: 7, {whole: 1, models: "A"}: 1}, want: map[string]float64{"A": 0.5}},
		// Shares weigh by their milli: 500 of 8000.
		{name: "share", weight: map[class]float64{{whole: 1}: 7.5, {milli: 500, models: "A"}: 1}, want: map[string]float64{"A": 0.25}},
		// A|B covers all the capacity: its demand share on both.
		{name: "two products", weight: map[class]float64{{whole: 1}: 7, {whole: 1, models: "A|B"}: 1}, want: map[string]float64{"A": 0.125, "B": 0.125}},
		{name: "capped at the capacity", weight: map[class]float64{{whole: 1}: 1, {whole: 2, models: "A"}: 1}, want: map[string]float64{"A": 1}},
		{name: "a product nobody has claims nothing", weight: map[class]float64{{whole: 1}: 7, {whole: 1, models: "C"}: 1}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := modelPressure(tt.weight, capacity)
			if len(got) != len(tt.want) {
				t.Fatalf("pressure %v, want %v", got, tt.want)
			}
			for p, w := range tt.want {
				if math.Abs(got[p]-w) > 1e-9 {
					t.Fatalf("pressure %v, want %v", got, tt.want)
				}
			}
		})
	}
	if got := modelPressure(map[class]float64{{whole: 1, models: "A"}: 1}, nil); got != nil {
		t.Fatalf("no capacity known: pressure %v, want nil", got)
	}
}

// TestScoreSparesContestedModel: an unrestricted GPU pod scores the same
// on two empty nodes of different products until requests that only
// accept one of them are in the mix; then it prefers the other.
func TestScoreSparesContestedModel(t *testing.T) {
	c1, _ := node(t, "dgx-h100")
	c2, _ := node(t, "pcie-8x-2socket")
	contested, other := c1.nodes["n"], c2.nodes["n"]
	product := contested.topo.GPUs[0].Product
	if other.topo.GPUs[0].Product == product {
		t.Fatalf("test shapes share product %q", product)
	}
	capacity := map[string]int{product: 8, other.topo.GPUs[0].Product: 8}
	r := request{whole: 1}
	score := func(fm *fragModel, ng *nodeGPUs) float64 {
		c, reason := ng.fit(r, &Args{MultiGPUInterconnect: InterconnectPreferred}, nil)
		if reason != "" {
			t.Fatal(reason)
		}
		return packingScore(ng, r, c, fm, unknownHost)
	}
	weight := map[class]float64{{whole: 1}: 10}
	fm := newFragModel(weight)
	fm.pressure = modelPressure(weight, capacity)
	if a, b := score(fm, contested), score(fm, other); a != b {
		t.Fatalf("no restricted requests: scores %v and %v, want equal", a, b)
	}
	weight[class{whole: 1, models: product}] = 1
	fm = newFragModel(weight)
	fm.pressure = modelPressure(weight, capacity)
	if a, b := score(fm, contested), score(fm, other); a >= b {
		t.Fatalf("with %s-only requests: score on %s %v >= on the other node %v", product, product, a, b)
	}
}

// TestMixPressureFromInventory: the plugin's mix reads the products'
// capacity from the nodes it knows.
func TestMixPressureFromInventory(t *testing.T) {
	p := newPlugin(DefaultArgs())
	_, n := node(t, "dgx-h100")
	p.ObserveNode(n)
	product := p.gpus.nodes["n"].topo.GPUs[0].Product
	for range 2 * refreshEvery {
		p.mix.observe(request{whole: 1})
		p.mix.observe(request{whole: 1, models: product})
	}
	if got := p.mix.current().pressure[product]; got <= 0 {
		t.Fatalf("pressure on %s %v, want > 0", product, got)
	}
	p.ForgetNode("n")
	if got := p.gpus.productCapacity(); len(got) != 0 {
		t.Fatalf("capacity after the node is gone: %v", got)
	}
}
