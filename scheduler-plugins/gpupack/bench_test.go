package gpupack

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// shapedAPINode is a node object as the device plugin leaves it, with
// UUIDs unique to the node.
func shapedAPINode(tb testing.TB, shape, name string) *v1.Node {
	tb.Helper()
	inv := gpunode.MustShape(shape).Clone()
	for i := range inv.GPUs {
		inv.GPUs[i].UUID = fmt.Sprintf("GPU-%s-%d", name, i)
	}
	annot, err := gpunode.Encode(inv)
	if err != nil {
		tb.Fatal(err)
	}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationTopology: annot}}}
}

// benchPods are the representative requests: whole GPUs of the common
// sizes, a share, and a memory minimum.
var benchPods = []struct {
	name   string
	limits map[string]string
	annot  map[string]string
}{
	{"1gpu", map[string]string{contract.ResourceGPU: "1"}, nil},
	{"4gpu", map[string]string{contract.ResourceGPU: "4"}, nil},
	{"8gpu", map[string]string{contract.ResourceGPU: "8"}, nil},
	{"milli250", map[string]string{contract.ResourceGPUMilli: "250"}, nil},
	{"1gpu-mem40Gi", map[string]string{contract.ResourceGPU: "1"}, map[string]string{contract.AnnotationGPUMemoryMin: "40Gi"}},
}

// BenchmarkFilterScore runs Filter and, when the node passes, Score for
// one node per iteration, as the scheduler does for every node of a
// cycle. "empty" nodes have no bookings; "busy" ones have GPUs 0-1 taken
// whole and a 300 share on GPU 2, so the 8-GPU pod is rejected there.
// "memo" answers from the per-node memo (the node is unchanged since the
// last visit, the common case); "cold" changes the node's generation
// every iteration, so the set search and the score run each time.
func BenchmarkFilterScore(b *testing.B) {
	for _, mode := range []string{"memo", "cold"} {
		b.Run(mode, func(b *testing.B) { benchFilterScore(b, mode == "cold") })
	}
}

func benchFilterScore(b *testing.B, cold bool) {
	ctx := context.Background()
	for _, shape := range []string{"dgx1-v100", "dgx-h100", "pcie-8x-2socket"} {
		for _, fill := range []string{"empty", "busy"} {
			p, err := NewStandalone(nil)
			if err != nil {
				b.Fatal(err)
			}
			node := shapedAPINode(b, shape, "n")
			p.ObserveNode(node)
			if fill == "busy" {
				p.gpus.reserve("w", "n", []string{"GPU-n-0", "GPU-n-1"}, 0)
				p.gpus.reserve("s", "n", []string{"GPU-n-2"}, 300)
			}
			ni := framework.NewNodeInfo()
			ni.SetNode(node)
			for _, bp := range benchPods {
				b.Run(shape+"/"+fill+"/"+bp.name, func(b *testing.B) {
					pod := pod(bp.limits, bp.annot)
					pod.UID = types.UID("bench-" + bp.name)
					state := framework.NewCycleState()
					if _, st := p.PreFilter(ctx, state, pod, nil); !st.IsSuccess() {
						b.Fatalf("PreFilter: %v", st)
					}
					b.ReportAllocs()
					b.ResetTimer()
					ng := p.gpus.nodes["n"]
					for b.Loop() {
						if cold {
							p.gpus.mu.Lock()
							ng.gen++
							p.gpus.mu.Unlock()
						}
						if st := p.Filter(ctx, state, pod, ni); st.IsSuccess() {
							if _, st := p.Score(ctx, state, pod, ni); !st.IsSuccess() {
								b.Fatalf("Score: %v", st)
							}
						}
					}
				})
			}
		}
	}
}

// BenchmarkStateBytesPerNode reports the heap the plugin's GPU state
// holds per node of a 5000-node cluster of mixed shapes, with the node
// objects themselves (the informer's, shared) allocated beforehand.
func BenchmarkStateBytesPerNode(b *testing.B) {
	const n = 5000
	shapes := []string{"dgx-h100", "dgx1-v100", "pcie-8x-2socket", "pcie-4xl4"}
	nodes := make([]*v1.Node, n)
	for i := range nodes {
		nodes[i] = shapedAPINode(b, shapes[i%len(shapes)], fmt.Sprintf("node-%05d", i))
	}
	for b.Loop() {
		perNode := stateBytesPerNode(b, nodes)
		b.ReportMetric(perNode, "bytes/node")
	}
}

func stateBytesPerNode(tb testing.TB, nodes []*v1.Node) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := NewStandalone(nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range nodes {
		p.ObserveNode(n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(nodes))
}

// TestScoreAfterFilter: Score answers for Filter's choice on each node,
// and a node replaced under the same name after Filter (deleted, added
// back with its GPUs booked) is judged as it is now, not by the old
// node's answer.
func TestScoreAfterFilter(t *testing.T) {
	ctx := context.Background()
	p, err := NewStandalone(nil)
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*v1.Node, 70)
	infos := make([]*framework.NodeInfo, len(nodes))
	for i := range nodes {
		nodes[i] = shapedAPINode(t, "dgx-h100", fmt.Sprintf("n%02d", i))
		p.ObserveNode(nodes[i])
		infos[i] = framework.NewNodeInfo()
		infos[i].SetNode(nodes[i])
	}
	pd := pod(map[string]string{contract.ResourceGPU: "2"}, nil)
	state := framework.NewCycleState()
	if _, st := p.PreFilter(ctx, state, pd, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	for i := range nodes {
		if st := p.Filter(ctx, state, pd, infos[i]); !st.IsSuccess() {
			t.Fatalf("Filter %s: %v", nodes[i].Name, st)
		}
	}
	s, _ := getState(state)
	want := func(name string) int64 {
		ng := p.gpus.nodes[name]
		c, _ := ng.fit(s.req, &p.args, nil)
		return p.scoreChoice(ng, s.req, c, unknownHost)
	}
	for _, i := range []int{0, 65} {
		got, st := p.Score(ctx, state, pd, infos[i])
		if !st.IsSuccess() || got != want(nodes[i].Name) {
			t.Fatalf("Score %s = %d, %v; want %d", nodes[i].Name, got, st, want(nodes[i].Name))
		}
	}

	// n00 goes and comes back with 7 of its GPUs booked: Score must not
	// answer with the choice Filter made on the old n00.
	p.ForgetNode("n00")
	p.ObserveNode(nodes[0])
	p.gpus.reserve("x", "n00", []string{"GPU-n00-0", "GPU-n00-1", "GPU-n00-2", "GPU-n00-3", "GPU-n00-4", "GPU-n00-5", "GPU-n00-6"}, 0)
	if got, _ := p.Score(ctx, state, pd, infos[0]); got != 0 {
		t.Fatalf("Score on a node where the pod does not fit = %d, want 0 (no stale choice)", got)
	}
}
