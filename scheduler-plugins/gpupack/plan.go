package gpupack

import "slices"

// Planned share packing. Placed one by one on the least rise in
// fragmentation (FGD's measure, much like best fit), shares leave rests
// that the later shares of the mix seldom fill: a 230 beside a 650 leaves
// 120, which only a 110 fits, where the 650 would have taken a 320 and
// the 230 three more of its size. Packed offline, best fit decreasing
// wastes less on the same mix. So GPUPack plans: it packs a sample of the
// learned mix's shares best-fit-decreasing, and a share goes where its
// GPU's shares stay part of some planned GPU's shares, so the online
// packing follows the offline one's GPU contents (the idea behind the
// sum-of-squares family of online bin packing for known distributions,
// Csirik et al., JACM 2006). On the openb default trace with the nodes'
// CPU and memory lifted, this alone takes GPUPack from 95.94% to 96.24%
// allocated at 100% arrived (docs/simulator.md).
//
// A planned GPU waits for its company, which needs CPU and memory on the
// node too: when the node no longer has a share pod's worth, the rest is
// lost, so the placement that leaves it so pays for the rest in full.

// planSample is how many shares the plan packs: enough for a size with a
// 0.1% share of the mix to appear in it.
const planSample = 4000

// offPlanCost is the rise in fragmentation (milli-GPU) charged for taking
// a GPU off plan: a whole GPU, more than any rest it could save, so a
// share goes off plan only where no placement keeps to it.
const offPlanCost = fullGPU

// maxPlanSubsets bounds the sub-multisets kept of one planned GPU (one
// of 10 shares of 6 sizes has up to 64).
const maxPlanSubsets = 4096

// shareHash is the hash of one share of milli m. A GPU's multiset of
// shares hashes to the wrapping sum over its shares, which adding and
// removing a share update in place, in any order.
func shareHash(m int) uint64 {
	z := uint64(m) + 0x9e3779b97f4a7c15 // splitmix64's finalizer
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// sharePlan holds the multisets of shares (by hash) that are part of
// some planned GPU's shares; the value says whether some planned GPU
// holds more than them (open: the GPU waits for company).
type sharePlan map[uint64]bool

// onPlan reports whether a GPU whose shares hash to h is on plan; a GPU
// without shares always is.
func (p sharePlan) onPlan(h uint64) bool {
	if h == 0 {
		return true
	}
	_, ok := p[h]
	return ok
}

// open reports whether a GPU whose shares hash to h waits for planned
// company.
func (p sharePlan) open(h uint64) bool { return h != 0 && p[h] }

// buildPlan packs planSample shares, drawn in proportion to the mix's
// share sizes, best-fit-decreasing, and keeps every sub-multiset of each
// packed GPU. nil when the mix has no shares.
func buildPlan(weight map[class]float64) sharePlan {
	bySize := map[int]float64{}
	total := 0.0
	for _, c := range sortedClasses(weight) {
		if c.milli > 0 && c.milli < fullGPU {
			bySize[c.milli] += weight[c]
			total += weight[c]
		}
	}
	if total == 0 {
		return nil
	}
	sizes := make([]int, 0, len(bySize))
	for m := range bySize {
		sizes = append(sizes, m)
	}
	slices.Sort(sizes)
	slices.Reverse(sizes)
	// Best fit decreasing, the open GPUs indexed by their free milli.
	var byFree [fullGPU + 1][]int
	var gpus [][]int
	var left []int
	for _, m := range sizes {
		for range int(bySize[m]/total*planSample + 0.5) {
			g := -1
			for f := m; f <= fullGPU; f++ {
				if k := len(byFree[f]); k > 0 {
					g = byFree[f][k-1]
					byFree[f] = byFree[f][:k-1]
					break
				}
			}
			if g < 0 {
				g = len(gpus)
				gpus = append(gpus, nil)
				left = append(left, fullGPU)
			}
			gpus[g] = append(gpus[g], m)
			left[g] -= m
			if left[g] > 0 {
				byFree[left[g]] = append(byFree[left[g]], g)
			}
		}
	}
	plan := sharePlan{}
	done := map[uint64]bool{}
	for _, shares := range gpus {
		var h uint64
		for _, m := range shares {
			h += shareHash(m)
		}
		if !done[h] {
			done[h] = true
			addSubsets(plan, shares)
		}
	}
	return plan
}

// addSubsets adds every non-empty sub-multiset of a planned GPU's shares
// (equal sizes next to each other, as packed).
func addSubsets(plan sharePlan, shares []int) {
	type run struct{ m, n int }
	var runs []run
	for _, m := range shares {
		if k := len(runs); k > 0 && runs[k-1].m == m {
			runs[k-1].n++
		} else {
			runs = append(runs, run{m, 1})
		}
	}
	budget := maxPlanSubsets
	// all: every share so far is taken, so the subset is the whole GPU.
	var walk func(i int, h uint64, all bool)
	walk = func(i int, h uint64, all bool) {
		if budget <= 0 {
			return
		}
		if i == len(runs) {
			if h != 0 {
				plan[h] = plan[h] || !all
			}
			budget--
			return
		}
		for k := 0; k <= runs[i].n; k++ {
			walk(i+1, h+uint64(k)*shareHash(runs[i].m), all && k == runs[i].n)
		}
	}
	walk(0, 0, true)
}

// planCost is the rise in fragmentation, beyond FGD's measure, of adding
// a share of milli m to a GPU whose shares hash to h and which has free
// milli free, on a node with host free before and hostAfter after: the
// cost of taking the GPU off plan (a GPU off plan never returns to it:
// every part of planned shares is planned), and the rest of a planned GPU
// left without room for its company.
func (fm *fragModel) planCost(h uint64, m, free int, host, hostAfter hostLeft) float64 {
	if fm == nil || fm.plan == nil {
		return 0
	}
	ha := h + shareHash(m)
	d := 0.0
	if fm.plan.onPlan(h) && !fm.plan.onPlan(ha) {
		d = offPlanCost
	}
	return d + fm.lost(ha, free-m, hostAfter) - fm.lost(h, free, host)
}

// lost is the rest of a GPU whose shares hash to h that its planned
// company cannot take: all of it when the node lacks a share pod's mean
// CPU or memory, else none.
func (fm *fragModel) lost(h uint64, rest int, host hostLeft) float64 {
	if rest <= 0 || !fm.plan.open(h) {
		return 0
	}
	if host.cpu < fm.shareCPU || host.mem < fm.shareMem {
		return float64(rest)
	}
	return 0
}
