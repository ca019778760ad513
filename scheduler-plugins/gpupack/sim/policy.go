package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Env is what a policy sees: the cluster it places on, the trace (the
// paper's FGD takes its task distribution from it) and the seed.
type Env struct {
	Cluster *Cluster
	Trace   []Pod
	Seed    uint64
}

// Policy places one pod at a time.
type Policy interface {
	// Place picks a node and the GPUs on it, or ok=false when the pod
	// fits nowhere. k is the pod's position in the arrival order.
	Place(ctx context.Context, p *Pod, k int) (node int, gpus []int, ok bool, err error)
}

var policies = map[string]func(*Env) (Policy, error){
	"kubegpu":        newKubegpu,
	"leastallocated": func(e *Env) (Policy, error) { return scorer(e, leastAllocated), nil },
	"random":         newRandom,
	"dotprod":        func(e *Env) (Policy, error) { return scorer(e, dotProduct), nil },
	"packing":        func(e *Env) (Policy, error) { return scorer(e, gpuPacking), nil },
	"clustering":     func(e *Env) (Policy, error) { return scorer(e, clustering), nil },
	"bestfit":        func(e *Env) (Policy, error) { return scorer(e, bestFit), nil },
	"fgd":            newFGD,
}

// PolicyNames lists the policies in the order tables show them.
func PolicyNames() []string {
	return []string{"kubegpu", "fgd", "bestfit", "packing", "clustering", "dotprod", "leastallocated", "random"}
}

// NewPolicy builds a named policy for one run.
func NewPolicy(name string, e *Env) (Policy, error) {
	f, ok := policies[name]
	if !ok {
		return nil, fmt.Errorf("unknown policy %q", name)
	}
	return f(e)
}

// nodeOrder is the fixed random node order of a seed; score ties go to
// the node that comes first in it.
func nodeOrder(n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 1))
	return rng.Perm(n)
}

// scoreFunc rates a feasible node for a pod and names the GPUs it would
// take there; higher is better.
type scoreFunc func(c *Cluster, i int, p *Pod) (float64, []int)

type scoring struct {
	c     *Cluster
	order []int
	score scoreFunc
}

func scorer(e *Env, f scoreFunc) Policy {
	return &scoring{c: e.Cluster, order: nodeOrder(len(e.Cluster.Nodes), e.Seed), score: f}
}

func (s *scoring) Place(_ context.Context, p *Pod, _ int) (int, []int, bool, error) {
	best, bestScore := -1, math.Inf(-1)
	var bestGPUs []int
	for _, i := range s.order {
		if !s.c.Fits(i, p) {
			continue
		}
		v, gpus := s.score(s.c, i, p)
		if v > bestScore {
			best, bestScore, bestGPUs = i, v, gpus
		}
	}
	return best, bestGPUs, best >= 0, nil
}

// bestFit is the paper's BestFit: 100 x (1 - [0.5 x CPU left after /
// 128000 + 0.5 x free milli-GPU left after / 8000]), truncated.
func bestFit(c *Cluster, i int, p *Pod) (float64, []int) {
	s := &c.st[i]
	cpu := float64(s.cpuLeft - p.CPUMilli)
	gpu := float64(s.freeMilli - int(p.GPURequest()))
	return math.Trunc(100 * (1 - (0.5*cpu/128000 + 0.5*gpu/8000))), c.defaultGPUs(i, p)
}

// leastAllocated is kube-scheduler's NodeResourcesFit LeastAllocated
// score: the mean over resources of (allocatable - requested after) x
// 100 / allocatable, each truncated, here over cpu, memory and GPU.
func leastAllocated(c *Cluster, i int, p *Pod) (float64, []int) {
	n, s := &c.Nodes[i], &c.st[i]
	part := func(left, req, alloc int64) int64 {
		if alloc == 0 {
			return 0
		}
		return (left - req) * 100 / alloc
	}
	sum := part(s.cpuLeft, p.CPUMilli, n.CPUMilli) + part(s.memLeft, p.MemoryMiB, n.MemoryMiB) +
		part(int64(s.freeMilli), p.GPURequest(), int64(n.GPUs)*FullGPU)
	return float64(sum / 3), c.defaultGPUs(i, p)
}

// dotProduct is the Tetris-style alignment baseline as the paper runs
// it: the dot product of the pod's demand and the node's free resources
// (CPU, and the GPU the pod would use), each normalised by the largest
// node, and the node (and GPU) with the smallest product wins.
func dotProduct(c *Cluster, i int, p *Pod) (float64, []int) {
	s := &c.st[i]
	cpu := float64(p.CPUMilli) / float64(c.maxCPU) * float64(s.cpuLeft) / float64(c.maxCPU)
	switch {
	case p.NumGPU == 0:
		return 1 - cpu, nil
	case p.Share():
		best, bestV := -1, math.Inf(-1)
		for g, f := range s.free {
			if f < p.GPUMilli {
				continue
			}
			v := 1 - (cpu+float64(p.GPUMilli)/FullGPU*float64(f)/FullGPU)/2
			if v > bestV {
				best, bestV = g, v
			}
		}
		return bestV, []int{best}
	default:
		gpu := float64(p.NumGPU) / 8 * float64(s.freeMilli) / 8000
		return 1 - (cpu+gpu)/2, c.firstWhole(i, p.NumGPU)
	}
}

// gpuPacking is the paper's GPU Packing baseline: a share goes to an
// already shared GPU if one fits (tightest first), then to a free GPU on
// a used node, and only then to an idle node.
func gpuPacking(c *Cluster, i int, p *Pod) (float64, []int) {
	s := &c.st[i]
	if p.NumGPU == 0 {
		return 0, nil
	}
	if s.wholeFree == len(s.free) {
		return float64(max(33-s.wholeFree, s.wholeFree)), c.defaultGPUs(i, p)
	}
	gpus := c.defaultGPUs(i, p)
	freshUsed, left := 0, 0
	for _, g := range gpus {
		if s.free[g] == FullGPU {
			freshUsed++
		}
		left += s.free[g] * 100 / FullGPU
	}
	if freshUsed > 0 {
		return float64(max(50-freshUsed, 33)), gpus
	}
	return float64(max(100-left/10, 50)), gpus
}

// clustering is the paper's GPU Clustering baseline: pods of the same GPU
// request kind go together; nodes that host only that kind score highest,
// then nodes that host it among others, idle nodes, other kinds; within a
// band fuller nodes first.
func clustering(c *Cluster, i int, p *Pod) (float64, []int) {
	s := &c.st[i]
	if p.NumGPU == 0 {
		return 0, nil
	}
	fill := 25 * float64(8000-s.freeMilli) / 8000
	k := gpuKind{p.NumGPU, p.GPUMilli}
	band := 0.0
	switch {
	case s.classes[k] > 0 && len(s.classes) == 1:
		band = 75
	case s.classes[k] > 0:
		band = 50
	case len(s.classes) == 0:
		band = 25
	}
	return math.Trunc(band + fill), c.defaultGPUs(i, p)
}

// random picks uniformly among feasible nodes, and a uniformly random
// fitting GPU for a share.
type random struct {
	c    *Cluster
	rng  *rand.Rand
	fits []int
}

func newRandom(e *Env) (Policy, error) {
	return &random{c: e.Cluster, rng: rand.New(rand.NewPCG(e.Seed, 2))}, nil
}

func (r *random) Place(_ context.Context, p *Pod, _ int) (int, []int, bool, error) {
	r.fits = r.fits[:0]
	for i := range r.c.Nodes {
		if r.c.Fits(i, p) {
			r.fits = append(r.fits, i)
		}
	}
	if len(r.fits) == 0 {
		return -1, nil, false, nil
	}
	i := r.fits[r.rng.IntN(len(r.fits))]
	if !p.Share() {
		return i, r.c.defaultGPUs(i, p), true, nil
	}
	var gs []int
	for g, f := range r.c.st[i].free {
		if f >= p.GPUMilli {
			gs = append(gs, g)
		}
	}
	return i, []int{gs[r.rng.IntN(len(gs))]}, true, nil
}

// sortedKeys is for deterministic iteration over small maps.
func sortedKeys[K comparable](m map[K]float64, less func(a, b K) bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}
