package gpupack

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// BenchmarkFilterScoreParallel is one scheduling cycle's view of
// GPUPack: Filter then Score on 1000 nodes from parallel goroutines, as
// the framework runs them (16 workers), with the memo warm from the
// previous cycle, the common case on a large cluster. It shows what the
// state's shared lock costs when many goroutines read it at once.
func BenchmarkFilterScoreParallel(b *testing.B) {
	ctx := context.Background()
	p, err := NewStandalone(nil)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	infos := make([]*framework.NodeInfo, n)
	for i := range infos {
		node := shapedAPINode(b, "dgx-h100", fmt.Sprintf("n%04d", i))
		p.ObserveNode(node)
		infos[i] = framework.NewNodeInfo()
		infos[i].SetNode(node)
	}
	pd := pod(map[string]string{contract.ResourceGPU: "2"}, nil)
	state := framework.NewCycleState()
	if _, st := p.PreFilter(ctx, state, pd, nil); !st.IsSuccess() {
		b.Fatalf("PreFilter: %v", st)
	}
	for _, ni := range infos { // warm the memo
		p.Filter(ctx, state, pd, ni)
		p.Score(ctx, state, pd, ni)
	}
	var next atomic.Int64
	b.SetParallelism(8) // 16 goroutines on 2 cores, as the framework's parallelizer
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ni := infos[next.Add(1)%n]
			if st := p.Filter(ctx, state, pd, ni); !st.IsSuccess() {
				b.Errorf("Filter: %v", st)
				return
			}
			if _, st := p.Score(ctx, state, pd, ni); !st.IsSuccess() {
				b.Errorf("Score: %v", st)
				return
			}
		}
	})
}
