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
// CPU and memory lifted, this takes GPUPack from 95.94% to 96.24%
// allocated at 100% arrived (seeds 42-44, docs/simulator.md).
//
// A planned GPU waits for its company, which needs CPU and memory on the
// node too: a placement that leaves a node's waiting GPUs without the CPU
// or memory for their company pays for the rests that are then lost,
// whichever pod it places.

// planSample is how many shares the plan packs: enough for a size with a
// 0.1% share of the mix to appear in it.
const planSample = 4000

// offPlanCost is the rise in fragmentation (milli-GPU) charged for taking
// a GPU off plan: a whole GPU, more than any rest it could save, so a
// share goes off plan only where no placement keeps to it.
const offPlanCost = fullGPU

// maxPlanSubsets bounds the sub-multisets kept of one planned GPU (ten
// shares of one size have 10, of ten sizes 1023).
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
// a share of milli m to a GPU whose shares hash to h: offPlanCost when
// that takes the GPU off plan. (A GPU off plan never returns to it:
// every part of a planned GPU's shares is planned.)
func (fm *fragModel) planCost(h uint64, m int) float64 {
	if fm == nil || fm.plan == nil || !fm.plan.onPlan(h) || fm.plan.onPlan(h+shareHash(m)) {
		return 0
	}
	return offPlanCost
}

// lostRests is the free milli of a node's planned GPUs that their
// company will not take: with k of its GPUs waiting for planned company
// (shares[i] the hash of GPU i's shares, free[i] its free milli) and
// host CPU and memory left for j share pods of the mix's mean request,
// k-j of them go without, so that share of their rests is lost.
func (fm *fragModel) lostRests(shares []uint64, free []int, host hostLeft) float64 {
	if fm == nil || fm.plan == nil {
		return 0
	}
	k, rests := 0, 0
	for i, h := range shares {
		if free[i] > 0 && fm.plan.open(h) {
			k++
			rests += free[i]
		}
	}
	if k == 0 {
		return 0
	}
	j := k
	if fm.shareCPU > 0 && host.cpu != unlimitedCPU {
		j = min(j, int(max(host.cpu, 0)/fm.shareCPU))
	}
	if fm.shareMem > 0 && host.mem != unlimitedCPU {
		j = min(j, int(max(host.mem, 0)/fm.shareMem))
	}
	return float64(rests) * float64(k-j) / float64(k)
}
