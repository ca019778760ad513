package gpupack

import (
	"fmt"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// Reasons a node cannot hold a pod. The scheduler counts identical
// reasons across nodes into its "0/N nodes are available: ..." message,
// so they are stable strings without node names.
const (
	reasonNoInventory  = "node has no GPU inventory (" + "kubegpu.io/gpu-topology" + ")"
	reasonBadInventory = "node's GPU inventory annotation is invalid"
	reasonFreeGPUs     = "insufficient free GPUs"
	reasonHealthyGPUs  = "insufficient healthy GPUs"
	reasonNVLink       = "insufficient NVLink-connected free GPUs"
	reasonPinned       = "GPUs named in kubegpu.io/gpu-ids are not free on this node"
	reasonNoSharing    = "GPU sharing is not enabled on this node"
)

func reasonMemory(r request) string { return "GPU memory below " + r.memoryStr }
func reasonShare(r request) string {
	return fmt.Sprintf("no GPU with %d/1000 free to share", r.milli)
}

// minNVLinkPairScore is the lowest gpunode.PairScore of a pair joined by
// NVLink or NVSwitch; PCIe-only pairs score below it.
const minNVLinkPairScore = 50

// choice is the GPUs a pod would get on a node.
type choice struct {
	pos     []int // positions in the node's inventory
	quality gpunode.SetQuality
}

// fit finds the pod's GPUs on the node, or the reason there are none.
// The caller holds the cache lock for reading. pinned, when set, are the
// UUIDs the pod's annotation already names.
func (ng *nodeGPUs) fit(r request, args *Args, pinned []string) (choice, string) {
	if ng == nil || (ng.topo == nil && ng.err == nil) {
		return choice{}, reasonNoInventory
	}
	if ng.topo == nil {
		return choice{}, reasonBadInventory
	}
	if r.milli > 0 && !ng.sharing {
		return choice{}, reasonNoSharing
	}
	if pinned != nil {
		return ng.fitPinned(r, pinned)
	}
	if r.milli > 0 {
		return ng.fitShare(r)
	}
	return ng.fitWhole(r, args)
}

func (ng *nodeGPUs) usable(i int, r request) bool {
	g := &ng.topo.GPUs[i]
	return g.Healthy && g.MemoryMiB >= r.memoryMiB
}

func (ng *nodeGPUs) fitWhole(r request, args *Args) (choice, string) {
	var buf [gpunode.MaxGPUs]int
	free := buf[:0]
	freeAny, freeHealthy := 0, 0
	for i := range ng.topo.GPUs {
		if ng.used[i] != 0 {
			continue
		}
		freeAny++
		if !ng.topo.GPUs[i].Healthy {
			continue
		}
		freeHealthy++
		if ng.usable(i, r) {
			free = append(free, i)
		}
	}
	// GPUs of unannotated pods are somewhere among the free ones.
	switch {
	case freeAny-ng.foreign < r.whole:
		return choice{}, reasonFreeGPUs
	case freeHealthy-ng.foreign < r.whole:
		return choice{}, reasonHealthyGPUs
	case len(free)-ng.foreign < r.whole:
		return choice{}, reasonMemory(r)
	}
	set, q, ok := ng.topo.BestSet(free, r.whole)
	if !ok {
		return choice{}, reasonFreeGPUs
	}
	if args.MultiGPUInterconnect == InterconnectNVLink && r.whole > 1 && q.Worst < minNVLinkPairScore {
		return choice{}, reasonNVLink
	}
	return choice{pos: set, quality: q}, ""
}

// fitShare picks the GPU whose use raises the node's fragmentation least
// for the cycle's request mix (r.frag), so a share lands where the
// sliver it leaves is still useful, counting a GPU taken off the share
// plan (plan.go) as a whole GPU stranded; among equal GPUs the tightest
// fit, then the lowest index. Without a mix it is the tightest fit.
func (ng *nodeGPUs) fitShare(r request) (choice, string) {
	best, bestFree, bestFrag := -1, fullGPU+1, 0.0
	// A node whose GPUs are all held whole says so, not "unhealthy".
	sawFree, sawHealthy, sawMemory := false, false, false
	var buf [gpunode.MaxGPUs]int
	free := buf[:len(ng.used)]
	if r.frag != nil {
		ng.freeMilli(free)
	}
	for i := range ng.topo.GPUs {
		if ng.whole[i] {
			continue
		}
		sawFree = true
		if !ng.topo.GPUs[i].Healthy {
			continue
		}
		sawHealthy = true
		if !ng.usable(i, r) {
			continue
		}
		sawMemory = true
		f := fullGPU - ng.used[i]
		if f < r.milli {
			continue
		}
		fr := 0.0
		if r.frag != nil {
			if best >= 0 && f == bestFree && ng.shares[i] == ng.shares[best] {
				continue // same shares: same fragmentation
			}
			free[i] = f - r.milli
			fr = r.frag.frag(free, ng.topo.GPUs, unknownHost) + r.frag.planCost(ng.shares[i], r.milli)
			free[i] = f
		}
		if best < 0 || fr < bestFrag || fr == bestFrag && f < bestFree {
			best, bestFree, bestFrag = i, f, fr
		}
	}
	switch {
	case best >= 0:
		return choice{pos: []int{best}, quality: gpunode.SetQuality{Size: 1, Worst: gpunode.MaxPairScore}}, ""
	case !sawFree:
		return choice{}, reasonFreeGPUs
	case !sawHealthy:
		return choice{}, reasonHealthyGPUs
	case !sawMemory:
		return choice{}, reasonMemory(r)
	}
	return choice{}, reasonShare(r)
}

func (ng *nodeGPUs) fitPinned(r request, uuids []string) (choice, string) {
	want := r.whole
	if r.milli > 0 {
		want = 1
	}
	if len(uuids) != want {
		return choice{}, reasonPinned
	}
	set := make([]int, 0, len(uuids))
	for _, u := range uuids {
		i, ok := ng.pos[u]
		if !ok || !ng.usable(i, r) {
			return choice{}, reasonPinned
		}
		if r.milli > 0 && (ng.whole[i] || fullGPU-ng.used[i] < r.milli) {
			return choice{}, reasonPinned
		}
		if r.milli == 0 && ng.used[i] != 0 {
			return choice{}, reasonPinned
		}
		set = append(set, i)
	}
	q, err := ng.topo.Quality(set)
	if err != nil {
		return choice{}, reasonPinned
	}
	return choice{pos: set, quality: q}, ""
}

// uuids names the chosen GPUs.
func (ng *nodeGPUs) uuids(c choice) []string {
	out := make([]string, len(c.pos))
	for i, p := range c.pos {
		out[i] = ng.topo.GPUs[p].UUID
	}
	return out
}
