package gpupack

import (
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// scoreScale keeps resolution in the weighted mean before NormalizeScore.
const scoreScale = 100

// scoreChoice is the weighted mean of three parts, each 0-100:
//   - packing: 50 minus the rise in the node's expected stranded GPU
//     capacity for the observed request mix (FGD's measure), scaled so a
//     rise of a whole 8-GPU node is 0 and an equal fall is 100;
//   - topology: the chosen set's interconnect (gpunode.SetQuality.Score);
//   - memory fit: the pod's memory minimum over the chosen GPUs' memory,
//     so pods that fit 16 GiB do not take 80 GiB GPUs; neutral (100)
//     when the pod states no minimum.
//
// The caller holds the cache lock for reading.
func (p *Plugin) scoreChoice(ng *nodeGPUs, r request, c choice) int64 {
	pack := packingScore(ng, r, c, p.mix.current())
	topo := int64(c.quality.Score())
	if len(c.pos) <= 1 {
		topo = gpunode.MaxPairScore
	}
	mem := int64(100)
	if r.memoryMiB > 0 && len(c.pos) > 0 {
		smallest := ng.topo.GPUs[c.pos[0]].MemoryMiB
		for _, i := range c.pos[1:] {
			smallest = min(smallest, ng.topo.GPUs[i].MemoryMiB)
		}
		if smallest > 0 {
			mem = min(100, 100*r.memoryMiB/smallest)
		}
	}
	wp, wt, wm := *p.args.PackingWeight, *p.args.TopologyWeight, *p.args.MemoryFitWeight
	return scoreScale * (wp*pack + wt*topo + wm*mem) / (wp + wt + wm)
}

// packingScore compares the node's fragmentation before and after the
// choice.
func packingScore(ng *nodeGPUs, r request, c choice, mix []classWeight) int64 {
	var buf [2][64]int
	n := len(ng.used)
	before, after := buf[0][:n], buf[1][:n]
	for i := range n {
		f := fullGPU - ng.used[i]
		if !ng.topo.GPUs[i].Healthy || ng.whole[i] {
			f = 0
		}
		before[i], after[i] = f, f
	}
	for _, i := range c.pos {
		if r.milli > 0 {
			after[i] -= r.milli
		} else {
			after[i] = 0
		}
	}
	delta := fragmentation(after, mix) - fragmentation(before, mix)
	const span = 8 * fullGPU
	s := 50 - 50*delta/span
	return int64(min(100, max(0, s)))
}
