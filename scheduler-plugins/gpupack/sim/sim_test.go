package sim

import (
	"context"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

const traceDir = "../../../../shared/traces/alibaba-gpu-v2023"

func TestReadPods(t *testing.T) {
	header := "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
	tests := []struct {
		name    string
		csv     string
		want    []Pod
		wantErr string
	}{
		{name: "share, whole, spec, cpu only", csv: header + "a,1000,2048,1,500,\nb,2000,4096,2,1000,T4|P100\nc,500,100,0,0,\n",
			want: []Pod{{Name: "a", CPUMilli: 1000, MemoryMiB: 2048, NumGPU: 1, GPUMilli: 500},
				{Name: "b", CPUMilli: 2000, MemoryMiB: 4096, NumGPU: 2, GPUMilli: 1000, Spec: []string{"T4", "P100"}},
				{Name: "c", CPUMilli: 500, MemoryMiB: 100}}},
		{name: "no gpu_spec column", csv: "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,1000\n",
			want: []Pod{{Name: "a", CPUMilli: 1, MemoryMiB: 1, NumGPU: 1, GPUMilli: 1000}}},
		{name: "reordered columns", csv: "gpu_milli,num_gpu,name,memory_mib,cpu_milli\n250,1,x,3,4\n",
			want: []Pod{{Name: "x", CPUMilli: 4, MemoryMiB: 3, NumGPU: 1, GPUMilli: 250}}},
		{name: "missing column", csv: "name,cpu_milli,memory_mib,num_gpu\na,1,1,1\n", wantErr: `missing column "gpu_milli"`},
		{name: "not a number", csv: header + "a,1000,2048,1,500,\nb,x,1,1,1000,\n", wantErr: `pods.csv:3: column "cpu_milli"`},
		{name: "milli too big", csv: header + "a,1,1,1,1500,\n", wantErr: `pods.csv:2: column "gpu_milli": 1500 out of range`},
		{name: "negative", csv: header + "a,-1,1,1,100,\n", wantErr: `column "cpu_milli": -1 out of range`},
		{name: "short row", csv: header + "a,1,1\n", wantErr: `pods.csv:2: column "num_gpu": row has 3 fields`},
		{name: "partial multi-GPU", csv: header + "a,1,1,2,500,\n", wantErr: "must be whole"},
		{name: "milli without GPU", csv: header + "a,1,1,0,500,\n", wantErr: "num_gpu 0"},
		{name: "empty", csv: "", wantErr: "empty file"},
		{name: "header only", csv: header, wantErr: "no pods"},
		{name: "bad quoting", csv: header + "a,\"1,1,1,100,\n", wantErr: "pods.csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPods("pods.csv", strings.NewReader(tt.csv))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(a, b Pod) bool {
				return a.Name == b.Name && a.CPUMilli == b.CPUMilli && a.MemoryMiB == b.MemoryMiB && a.NumGPU == b.NumGPU && a.GPUMilli == b.GPUMilli && slices.Equal(a.Spec, b.Spec)
			}) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadNodes(t *testing.T) {
	header := "sn,cpu_milli,memory_mib,gpu,model\n"
	tests := []struct {
		name    string
		csv     string
		want    int
		wantErr string
	}{
		{name: "ok", csv: header + "n0,64000,262144,2,P100\nn1,96000,1,8,G2\n", want: 2},
		{name: "duplicate", csv: header + "n0,1,1,2,P100\nn0,1,1,2,P100\n", wantErr: `nodes.csv:3: column "sn": node "n0" already on line 2`},
		{name: "too many GPUs", csv: header + "n0,1,1,65,P100\n", wantErr: `column "gpu": 65 out of range`},
		{name: "no model", csv: header + "n0,1,1,2,\n", wantErr: "needs a model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadNodes("nodes.csv", strings.NewReader(tt.csv))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("got %d nodes, err %v; want %d", len(got), err, tt.want)
			}
		})
	}
}

// TestRealTraces loads the published files (skipped when the traces
// folder is not beside the checkout).
func TestRealTraces(t *testing.T) {
	if _, err := os.Stat(traceDir); err != nil {
		t.Skipf("no traces: %v", err)
	}
	nodes, err := LoadNodes(filepath.Join(traceDir, "openb_node_list_gpu_node.csv"))
	if err != nil {
		t.Fatal(err)
	}
	gpus := 0
	for _, n := range nodes {
		gpus += n.GPUs
	}
	if len(nodes) != 1213 || gpus != 6212 {
		t.Fatalf("%d nodes, %d GPUs; want 1213, 6212", len(nodes), gpus)
	}
	for f, want := range map[string]int{"default": 8152, "gpushare40": 8152, "multigpu20": 8324, "gpuspec10": 8152} {
		pods, err := LoadPods(filepath.Join(traceDir, "openb_pod_list_"+f+".csv"))
		if err != nil {
			t.Fatal(err)
		}
		if len(pods) != want {
			t.Errorf("%s: %d pods, want %d", f, len(pods), want)
		}
	}
}

func TestWorkload(t *testing.T) {
	pods := []Pod{
		{Name: "c", NumGPU: 1, GPUMilli: 1000},
		{Name: "a", NumGPU: 2, GPUMilli: 1000},
		{Name: "b", NumGPU: 1, GPUMilli: 500},
		{Name: "d"}, // CPU only
	}
	// 3500 milli of originals on a 4000 milli cluster; inflate 1.3 stops
	// at 5200: clones are appended while the sum stays within it.
	w := Workload(pods, 7, 1.3, 4000)
	if len(w) <= len(pods) {
		t.Fatalf("no clones: %d pods", len(w))
	}
	sum := int64(0)
	for _, p := range w {
		sum += p.GPURequest()
	}
	if sum > 5200 {
		t.Fatalf("summed request %d passes 1.3 x 4000", sum)
	}
	// The first len(pods) are a permutation of the originals.
	names := []string{}
	for _, p := range w[:len(pods)] {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
		t.Fatalf("originals %v", names)
	}
	for _, p := range w[len(pods):] {
		if !strings.Contains(p.Name, "-clone-") {
			t.Fatalf("clone %q not marked", p.Name)
		}
	}
	// Same seed, same order; the input order does not matter.
	rev := slices.Clone(pods)
	slices.Reverse(rev)
	w2 := Workload(rev, 7, 1.3, 4000)
	if !slices.EqualFunc(w, w2, func(a, b Pod) bool { return a.Name == b.Name }) {
		t.Fatal("order depends on the input order, want name-sorted originals")
	}
	// The stopping rule: the next clone would have passed the limit.
	// With only 1000-milli pods and 5200 the sum ends at exactly 5000.
	only := []Pod{{Name: "x", NumGPU: 1, GPUMilli: 1000}}
	w3 := Workload(only, 1, 1.3, 4000)
	if len(w3) != 5 {
		t.Fatalf("%d pods, want 5 (5 x 1000 <= 5200 < 6 x 1000)", len(w3))
	}
}

func TestCurve(t *testing.T) {
	tests := []struct {
		name string
		sum  []float64
		cnt  []int
		want []float64
	}{
		{name: "means", sum: []float64{0, 3, 10}, cnt: []int{1, 2, 4}, want: []float64{0, 1.5, 2.5}},
		{name: "gap holds the previous point", sum: []float64{1, 0, 6}, cnt: []int{1, 0, 2}, want: []float64{1, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := curve(tt.sum, tt.cnt); !slices.Equal(got, tt.want) {
				t.Fatalf("curve = %v, want %v", got, tt.want)
			}
		})
	}
}

// tiny is a cluster whose right answers are easy to see: n0 has one GPU
// with 600 milli used, n1 is an idle 2-GPU node, n2 an idle 1-GPU T4 node.
func tiny(t *testing.T, policy string, seed uint64) (*Cluster, Policy) {
	t.Helper()
	nodes := []Node{
		{Name: "n0", CPUMilli: 32000, MemoryMiB: 65536, GPUs: 2, Model: "V100M16"},
		{Name: "n1", CPUMilli: 32000, MemoryMiB: 65536, GPUs: 2, Model: "V100M16"},
		{Name: "n2", CPUMilli: 32000, MemoryMiB: 65536, GPUs: 1, Model: "T4"},
	}
	c := NewCluster(nodes)
	trace := []Pod{{Name: "t0", CPUMilli: 1000, NumGPU: 1, GPUMilli: 400}, {Name: "t1", CPUMilli: 1000, NumGPU: 1, GPUMilli: 1000}}
	pol, err := NewPolicy(policy, &Env{Cluster: c, Trace: trace, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	warm := &Pod{Name: "w", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 600}
	c.bind(0, warm, []int{0})
	if k, ok := pol.(*kubegpu); ok {
		// The plugin learns the booking the way a scheduler would after a
		// restart: a bound pod carrying kubegpu.io/gpu-ids.
		kp := KubePod(warm, 0)
		kp.Spec.NodeName = "n0"
		kp.Annotations = map[string]string{contract.AnnotationGPUIDs: contract.GPUAssignment{UUIDs: []string{gpuUUID("n0", 0)}, Milli: 600}.String()}
		k.plugin.ObservePod(kp)
		k.infos[0].AddPod(kp)
	}
	return c, pol
}

func TestPolicies(t *testing.T) {
	share := Pod{Name: "s", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 400}
	whole2 := Pod{Name: "w2", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 2, GPUMilli: 1000}
	t4only := Pod{Name: "t4", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000, Spec: []string{"T4"}}
	huge := Pod{Name: "h", CPUMilli: 64000, NumGPU: 1, GPUMilli: 100}
	tests := []struct {
		policy   string
		pod      Pod
		wantNode string // "" = fits nowhere
		wantGPUs []int
	}{
		// BestFit scores the node's free GPU total: the 1-GPU node is
		// tighter than n0 (1000 left after) and wins.
		{"bestfit", share, "n2", []int{0}},
		// The fragmentation-aware ones fill the 400 left on n0's GPU 0.
		{"fgd", share, "n0", []int{0}},
		{"packing", share, "n0", []int{0}},
		// Clustering keeps request kinds apart: n0 hosts a 600 share, so
		// the 400 share opens the emptiest-scoring idle node.
		{"clustering", share, "n2", []int{0}},
		{"kubegpu", share, "n0", []int{0}},
		// A 2-GPU pod needs a node with two free GPUs.
		{"bestfit", whole2, "n1", []int{0, 1}},
		{"fgd", whole2, "n1", []int{0, 1}},
		{"kubegpu", whole2, "n1", []int{0, 1}},
		{"leastallocated", whole2, "n1", []int{0, 1}},
		{"dotprod", whole2, "n1", []int{0, 1}},
		{"random", whole2, "n1", []int{0, 1}},
		// gpu_spec restricts the model.
		{"bestfit", t4only, "n2", []int{0}},
		{"kubegpu", t4only, "n2", []int{0}},
		{"random", t4only, "n2", []int{0}},
		// LeastAllocated spreads: the idle node wins over n0.
		{"leastallocated", share, "n1", []int{0}},
		// CPU is a constraint.
		{"bestfit", huge, "", nil},
		{"kubegpu", huge, "", nil},
		{"fgd", huge, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.policy+"/"+tt.pod.Name, func(t *testing.T) {
			c, pol := tiny(t, tt.policy, 42)
			p := tt.pod
			i, gpus, ok, err := pol.Place(context.Background(), &p, 1)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNode == "" {
				if ok {
					t.Fatalf("placed on %s, want nowhere", c.Nodes[i].Name)
				}
				return
			}
			if !ok || c.Nodes[i].Name != tt.wantNode || !slices.Equal(gpus, tt.wantGPUs) {
				t.Fatalf("placed %v on node %d gpus %v, want %s %v", ok, i, gpus, tt.wantNode, tt.wantGPUs)
			}
			if !c.valid(i, &p, gpus) {
				t.Fatal("placement not valid")
			}
		})
	}
}

// TestRunSmall runs the whole protocol on a small cluster for every
// policy: the curve has 131 points, allocation never exceeds capacity and
// ends where the cluster state says.
func TestRunSmall(t *testing.T) {
	var nodes []Node
	for i := range 6 {
		nodes = append(nodes, Node{Name: "n" + string(rune('a'+i)), CPUMilli: 32000, MemoryMiB: 131072, GPUs: 4, Model: []string{"T4", "V100M16"}[i%2]})
	}
	var pods []Pod
	for i := range 40 {
		p := Pod{Name: "p" + string(rune('a'+i%26)) + string(rune('a'+i/26)), CPUMilli: int64(1000 + 500*(i%5)), MemoryMiB: 2048}
		switch i % 4 {
		case 0:
			p.NumGPU, p.GPUMilli = 1, 250*(1+i%3)
		case 1:
			p.NumGPU, p.GPUMilli = 1, 1000
		case 2:
			p.NumGPU, p.GPUMilli = 2, 1000
			p.Spec = []string{"T4"}
		}
		pods = append(pods, p)
	}
	sums, err := RunAll(context.Background(), nodes, pods, PolicyNames(), []uint64{1, 2}, 1.3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sums {
		if len(s.Curve) != 131 {
			t.Fatalf("%s: %d curve points", s.Policy, len(s.Curve))
		}
		for x, v := range s.Curve {
			if v < 0 || v > 100 {
				t.Fatalf("%s: curve[%d] = %v", s.Policy, x, v)
			}
		}
		if s.AllocAtEnd < 50 {
			t.Errorf("%s: only %.1f%% allocated at the end", s.Policy, s.AllocAtEnd)
		}
	}
	if _, err := RunAll(context.Background(), nodes, pods, []string{"nope"}, []uint64{1}, 1.3, nil); err == nil {
		t.Fatal("unknown policy accepted")
	}
}

// TestDiagnosis classifies a hand-built end state: each GPU's free
// capacity by size and by what could still use it, and the failed pods
// by kind and by whether GPUs and CPU were both somewhere but never on
// one node.
func TestDiagnosis(t *testing.T) {
	nodes := []Node{
		{Name: "a", CPUMilli: 16000, MemoryMiB: 65536, GPUs: 2, Model: "T4"},
		{Name: "b", CPUMilli: 16000, MemoryMiB: 65536, GPUs: 2, Model: "T4"},
	}
	c := NewCluster(nodes)
	// a: an 810 share and a whole GPU, CPU to spare.
	c.bind(0, &Pod{CPUMilli: 4000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 810}, []int{0})
	c.bind(0, &Pod{CPUMilli: 4000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000}, []int{1})
	// b: a 500 share and all the CPU.
	c.bind(1, &Pod{CPUMilli: 16000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 500}, []int{0})
	shapes := gpuShapes([]Pod{
		{CPUMilli: 2000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000},
		{CPUMilli: 2000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000},
		{CPUMilli: 2000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 400},
		{CPUMilli: 1000, MemoryMiB: 1024},
	})
	if len(shapes) != 2 {
		t.Fatalf("%d shapes, want 2", len(shapes))
	}
	d := &Diagnosis{}
	// Two 810s and a 100: rests of 2 x 190 that only the 100 fits.
	for _, m := range []int{810, 810, 100, 470} {
		d.arrive(&Pod{NumGPU: 1, GPUMilli: m})
	}
	d.arrive(&Pod{NumGPU: 1, GPUMilli: 1000})
	// Whole GPU free on b, CPU free on a: split.
	d.failed(c, &Pod{CPUMilli: 2000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000})
	// No node has two whole GPUs.
	d.failed(c, &Pod{CPUMilli: 2000, MemoryMiB: 1024, NumGPU: 2, GPUMilli: 1000, Spec: []string{"T4"}})
	d.snapshot(c, shapes)
	want := Diagnosis{
		FreeGPUs: 1.69, Under200: 0.19, Under1000: 0.5, Whole: 1,
		Usable: 0, HostStranded: 1.5, ShapeStranded: 0.19, FreeOnLowCPUNodes: 1.5,
		Failed:      map[string]int{"1x1000": 1, "2x1000(T4)": 1},
		FailedSplit: map[string]int{"1x1000": 1},
		FailedGPUs:  map[string]float64{"1x1000": 1, "2x1000(T4)": 2},
		Rests:       map[int]int{190: 1, 500: 1},
		ShareBound:  0.28,
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(d.FreeGPUs, want.FreeGPUs) || !near(d.Under200, want.Under200) || !near(d.Under500, want.Under500) ||
		!near(d.Under1000, want.Under1000) || !near(d.Whole, want.Whole) || !near(d.Usable, want.Usable) ||
		!near(d.HostStranded, want.HostStranded) || !near(d.ShapeStranded, want.ShapeStranded) ||
		!near(d.FreeOnLowCPUNodes, want.FreeOnLowCPUNodes) || !near(d.ShareBound, want.ShareBound) ||
		!maps.Equal(d.Failed, want.Failed) || !maps.Equal(d.FailedSplit, want.FailedSplit) ||
		!maps.Equal(d.FailedGPUs, want.FailedGPUs) || !maps.Equal(d.Rests, want.Rests) {
		t.Fatalf("diagnosis\n got %+v\nwant %+v", *d, want)
	}
	var b strings.Builder
	WriteDiagnosis(&b, []*Result{{Policy: "x", Seed: 1, Diag: d}})
	if !strings.Contains(b.String(), "1.7 GPUs free (at least 0.3") || !strings.Contains(b.String(), "1x190") {
		t.Fatalf("report:\n%s", b.String())
	}
}

// TestMerge: an earlier report's policies join a run of the same trace
// and seeds, in the policies' order; a report of other seeds or another
// trace is refused.
func TestMerge(t *testing.T) {
	seeds := []uint64{42, 43}
	curve := make([]float64, 131)
	earlier := NewReport("/x/openb_pod_list_default.csv", 10, seeds, []Summary{
		{Policy: "random", Curve: curve, AllocAt100: 80},
		{Policy: "fgd", Curve: curve, AllocAt100: 90, AllocAtEnd: 91, UnallocatedGPUs: 3, Failed: 7},
		{Policy: "kubegpu", Curve: curve, AllocAt100: 1},
	})
	path := filepath.Join(t.TempDir(), "r.json")
	if err := earlier.WriteJSONFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReportFile(path)
	if err != nil {
		t.Fatal(err)
	}
	run := []Summary{{Policy: "kubegpu", Curve: curve, AllocAt100: 95}}
	got, err := Merge(run, "openb_pod_list_default.csv", 10, seeds, back)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Policy)
	}
	if !slices.Equal(names, []string{"kubegpu", "fgd", "random"}) || got[0].AllocAt100 != 95 ||
		got[1].AllocAt100 != 90 || got[1].AllocAtEnd != 91 || got[1].UnallocatedGPUs != 3 || got[1].Failed != 7 || len(got[1].Curve) != 131 {
		t.Fatalf("merged %+v", got)
	}
	for _, bad := range []struct {
		trace string
		seeds []uint64
	}{{"openb_pod_list_default.csv", []uint64{42}}, {"openb_pod_list_gpushare40.csv", seeds}} {
		if _, err := Merge(run, bad.trace, 10, bad.seeds, back); err == nil {
			t.Fatalf("merge with %s seeds %v accepted", bad.trace, bad.seeds)
		}
	}
	if _, err := ReadReportFile(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("missing report read")
	}
}
