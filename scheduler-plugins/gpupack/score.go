package gpupack

import (
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// scoreScale keeps resolution in the weighted mean before NormalizeScore.
const scoreScale = 100

// scoreChoice is the weighted mean of three parts, each 0-100:
//   - packing: 50 minus the rise in the node's expected stranded GPU
//     capacity for the observed request mix (FGD's measure, with each
//     request's CPU and GPU models, and at least the free GPU the node's
//     free CPU and memory cannot carry), plus the GPUs taken times their
//     product's pressure from model-restricted requests, plus for a
//     share what leaving the planned packing costs (plan.go), scaled so
//     a rise of a whole 8-GPU node is 0 and an equal fall is 100; for a
//     pod without GPUs, less the node's CPU and memory beyond what its
//     free GPUs need (hostSlack), and 100 on a node without GPUs;
//   - topology: the chosen set's interconnect (gpunode.SetQuality.Score);
//   - memory fit: the pod's memory minimum over the chosen GPUs' memory,
//     so pods that fit 16 GiB do not take 80 GiB GPUs; neutral (100)
//     when the pod states no minimum.
//
// host is the node's unrequested CPU and memory (unknownHost when unknown). The
// caller holds the cache lock for reading. Score answers repeat visits
// from the memo (memo.go): every input read here must be part of the
// memo's key or of its entry's score fields.
func (p *Plugin) scoreChoice(ng *nodeGPUs, r request, c choice, host hostLeft) int64 {
	fm := r.frag
	if fm == nil {
		fm = p.mix.current()
	}
	// A node without GPUs strands none, and is where a pod without GPUs
	// belongs (see hostSlack).
	pack := 50.0
	if !r.wantsGPU() {
		pack = 100
	}
	if ng != nil && ng.topo != nil {
		pack = packingScore(ng, r, c, fm, host)
	}
	topo := float64(c.quality.Score())
	if len(c.pos) <= 1 {
		topo = gpunode.MaxPairScore
	}
	mem := 100.0
	if r.memoryMiB > 0 && len(c.pos) > 0 && ng != nil {
		smallest := ng.topo.GPUs[c.pos[0]].MemoryMiB
		for _, i := range c.pos[1:] {
			smallest = min(smallest, ng.topo.GPUs[i].MemoryMiB)
		}
		if smallest > 0 {
			mem = float64(min(100, 100*r.memoryMiB/smallest))
		}
	}
	wp, wt, wm := float64(*p.args.PackingWeight), float64(*p.args.TopologyWeight), float64(*p.args.MemoryFitWeight)
	return int64(scoreScale * (wp*pack + wt*topo + wm*mem) / (wp + wt + wm))
}

// nodeLeft is the node's allocatable CPU and memory not yet requested;
// unlimitedCPU for what the node does not state.
func nodeLeft(ni fwk.NodeInfo) hostLeft {
	h := unknownHost
	if ni == nil || ni.GetAllocatable() == nil {
		return h
	}
	req := ni.GetRequested()
	if a := ni.GetAllocatable().GetMilliCPU(); a != 0 {
		h.cpu = a
		if req != nil {
			h.cpu -= req.GetMilliCPU()
		}
	}
	if a := ni.GetAllocatable().GetMemory(); a != 0 {
		h.mem = a
		if req != nil {
			h.mem -= req.GetMemory()
		}
		h.mem >>= 20
	}
	return h
}

// freeMilli writes each GPU's free milli: 0 for GPUs that are unhealthy
// or handed out whole.
func (ng *nodeGPUs) freeMilli(out []int) {
	for i := range ng.used {
		f := fullGPU - ng.used[i]
		if !ng.topo.GPUs[i].Healthy || ng.whole[i] {
			f = 0
		}
		out[i] = f
	}
}

// packingScore compares the node's fragmentation before and after the
// choice (GPUs and the pod's CPU).
func packingScore(ng *nodeGPUs, r request, c choice, fm *fragModel, host hostLeft) float64 {
	var frees [2][gpunode.MaxGPUs]int
	n := len(ng.used)
	before, after := frees[0][:n], frees[1][:n]
	ng.freeMilli(before)
	copy(after, before)
	for _, i := range c.pos {
		if r.milli > 0 {
			after[i] -= r.milli
		} else {
			after[i] = 0
		}
	}
	hostAfter := host
	if host.cpu != unlimitedCPU {
		hostAfter.cpu -= r.cpuMilli
	}
	if host.mem != unlimitedCPU {
		hostAfter.mem -= r.memReqMiB
	}
	const span = 8 * fullGPU
	delta := fm.frag(after, ng.topo.GPUs, hostAfter) - fm.frag(before, ng.topo.GPUs, host)
	if !r.wantsGPU() {
		delta -= min(fm.hostSlack(after, hostAfter), span)
	}
	if fm.plan != nil {
		sharesAfter := ng.shares
		if r.milli > 0 && len(c.pos) == 1 {
			i := c.pos[0]
			delta += fm.planCost(ng.shares[i], r.milli)
			var buf [gpunode.MaxGPUs]uint64
			sharesAfter = buf[:n]
			copy(sharesAfter, ng.shares)
			sharesAfter[i] += shareHash(r.milli)
		}
		delta += fm.lostRests(sharesAfter, after, hostAfter) - fm.lostRests(ng.shares, before, host)
	}
	// GPUs of a product that model-restricted requests need are spent
	// for them in proportion to the product's pressure.
	if fm.pressure != nil {
		for _, i := range c.pos {
			taken := fullGPU
			if r.milli > 0 {
				taken = r.milli
			}
			delta += float64(taken) * fm.pressure[ng.topo.GPUs[i].Product]
		}
	}
	// Full resolution. Scores used to be whole points (160 milli-GPU),
	// leaving near-equal nodes to the scheduler's node order: finer
	// scores drove unrestricted pods onto the GPU models that
	// model-restricted requests need, since FGD's measure does not see
	// that spending (openb gpuspec10 trace, docs/simulator.md). With the
	// model pressure above, full resolution packs better on every trace.
	return min(100, max(0, 50-50*delta/span))
}

// hostSlack is how far a node's free CPU and memory exceed what its free
// GPUs need at the mix's CPU and memory per GPU, in milli-GPU they would
// carry; unknown CPU or memory (or an unknown mix) counts as none. A pod
// without GPUs goes where it is largest: CPU-rich nodes take the CPU-only
// load before packed ones run short, which FGD's measure and the floor
// in frag only see once they do.
func (fm *fragModel) hostSlack(free []int, host hostLeft) float64 {
	if host.cpu == unlimitedCPU || fm.gpuPerCPU == 0 {
		return 0
	}
	t := 0
	for _, f := range free {
		t += f
	}
	slack := float64(host.cpu)*fm.gpuPerCPU - float64(t)
	if host.mem != unlimitedCPU && fm.gpuPerMem > 0 {
		slack = min(slack, float64(host.mem)*fm.gpuPerMem-float64(t))
	}
	return slack
}
