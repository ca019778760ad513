package sim

import (
	"context"
	"math"
	"slices"
	"strings"
)

// FGD is Fragmentation Gradient Descent (Weng et al., ATC'23, section 4):
// a node's GPU fragmentation for a task is the free GPU capacity that
// task cannot use (all of it when the task cannot run there at all: too
// little CPU, wrong GPU model, no GPU with enough free share or too few
// whole GPUs; otherwise the GPUs with less free share than the task
// needs); the node's fragmentation is its expectation over the target
// workload's task classes. FGD places each pod (node and GPU) where that
// expectation rises least, scored as sigmoid(-rise/1000) x 100 and
// truncated like its kube-scheduler plugin.
//
// The task classes are the trace's own pods grouped by (CPU, milli-GPU,
// GPU count, GPU models), the most popular first until they cover 95% of
// the pods, as in the paper's runs.
type fgd struct {
	c     *Cluster
	order []int
	dist  *taskDist
	// before caches each node's fragmentation; only the node a pod goes
	// to changes, so Place drops that one entry.
	before []float64
	valid  []bool
	buf    []int
}

func newFGD(e *Env) (Policy, error) {
	n := len(e.Cluster.Nodes)
	return &fgd{
		c:      e.Cluster,
		order:  nodeOrder(n, e.Seed),
		dist:   newTaskDist(e.Trace, 0.95),
		before: make([]float64, n),
		valid:  make([]bool, n),
		buf:    make([]int, MaxGPUsPerNode),
	}, nil
}

// taskDist is the task classes grouped by GPU shape, each with its CPU
// requests sorted so "how likely is a task of this shape to fit the CPU
// left" is one binary search.
type taskDist struct {
	cpuOnly float64 // probability of tasks without GPUs
	groups  []taskGroup
}

type taskGroup struct {
	milli, num int
	spec       []string
	p          float64   // probability of the group
	cpu        []int64   // CPU requests of its classes, ascending
	cum        []float64 // cum[j]: probability of classes cpu[0..j]
}

type taskClass struct {
	cpu        int64
	milli, num int
	spec       string
}

func newTaskDist(trace []Pod, cover float64) *taskDist {
	count := map[taskClass]float64{}
	for _, p := range trace {
		count[taskClass{p.CPUMilli, p.GPUMilli, p.NumGPU, strings.Join(p.Spec, "|")}]++
	}
	classes := sortedKeys(count, func(a, b taskClass) bool {
		if count[a] != count[b] {
			return count[a] > count[b]
		}
		if a.cpu != b.cpu {
			return a.cpu < b.cpu
		}
		if a.milli != b.milli {
			return a.milli < b.milli
		}
		if a.num != b.num {
			return a.num < b.num
		}
		return a.spec < b.spec
	})
	total, cum := float64(len(trace)), 0.0
	k := 0
	for k < len(classes) && cum < cover*total {
		cum += count[classes[k]]
		k++
	}
	classes = classes[:k]
	d := &taskDist{}
	type gkey struct {
		milli, num int
		spec       string
	}
	idx := map[gkey]int{}
	for _, cl := range classes {
		p := count[cl] / cum
		if cl.num == 0 {
			d.cpuOnly += p
			continue
		}
		key := gkey{cl.milli, cl.num, cl.spec}
		gi, ok := idx[key]
		if !ok {
			gi = len(d.groups)
			idx[key] = gi
			g := taskGroup{milli: cl.milli, num: cl.num}
			if cl.spec != "" {
				g.spec = strings.Split(cl.spec, "|")
			}
			d.groups = append(d.groups, g)
		}
		d.groups[gi].cpu = append(d.groups[gi].cpu, cl.cpu)
		d.groups[gi].cum = append(d.groups[gi].cum, p)
	}
	for gi := range d.groups {
		g := &d.groups[gi]
		type cp struct {
			cpu int64
			p   float64
		}
		cps := make([]cp, len(g.cpu))
		for j := range g.cpu {
			cps[j] = cp{g.cpu[j], g.cum[j]}
		}
		slices.SortFunc(cps, func(a, b cp) int { return int(a.cpu - b.cpu) })
		acc := 0.0
		for j, x := range cps {
			acc += x.p
			g.cpu[j], g.cum[j] = x.cpu, acc
		}
		g.p = acc
	}
	return d
}

// frag is the expected fragmentation (milli-GPU) of a node of the given
// model with cpuLeft CPU and free[i] milli free on GPU i.
func (d *taskDist) frag(model string, cpuLeft int64, free []int) float64 {
	total := 0
	for _, f := range free {
		total += f
	}
	if total == 0 {
		return 0
	}
	t := float64(total)
	out := d.cpuOnly * t
	for gi := range d.groups {
		g := &d.groups[gi]
		if len(g.spec) > 0 && !slices.Contains(g.spec, model) {
			out += g.p * t
			continue
		}
		fits, small := 0, 0
		for _, f := range free {
			if f >= g.milli {
				fits++
			} else {
				small += f
			}
		}
		if fits < g.num {
			out += g.p * t
			continue
		}
		// Classes whose CPU fits the node leave only the small GPUs
		// stranded; the others strand everything.
		j, _ := slices.BinarySearchFunc(g.cpu, cpuLeft+1, func(a, b int64) int {
			switch {
			case a < b:
				return -1
			case a > b:
				return 1
			}
			return 0
		})
		pf := 0.0
		if j > 0 {
			pf = g.cum[j-1]
		}
		out += pf*float64(small) + (g.p-pf)*t
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func (f *fgd) nodeFrag(i int) float64 {
	if !f.valid[i] {
		s := &f.c.st[i]
		f.before[i] = f.dist.frag(f.c.Nodes[i].Model, s.cpuLeft, s.free)
		f.valid[i] = true
	}
	return f.before[i]
}

func (f *fgd) Place(_ context.Context, p *Pod, _ int) (int, []int, bool, error) {
	best, bestScore := -1, int64(math.MinInt64)
	var bestGPUs []int
	for _, i := range f.order {
		if !f.c.Fits(i, p) {
			continue
		}
		v, gpus := f.score(i, p)
		if v > bestScore {
			best, bestScore, bestGPUs = i, v, gpus
		}
	}
	if best < 0 {
		return -1, nil, false, nil
	}
	f.valid[best] = false
	return best, bestGPUs, true, nil
}

func (f *fgd) score(i int, p *Pod) (int64, []int) {
	s := &f.c.st[i]
	model := f.c.Nodes[i].Model
	before := f.nodeFrag(i)
	after := f.buf[:len(s.free)]
	copy(after, s.free)
	cpu := s.cpuLeft - p.CPUMilli
	rate := func(a float64) int64 { return int64(sigmoid((before-a)/1000) * 100) }
	if !p.Share() {
		gpus := f.c.firstWhole(i, p.NumGPU)
		for _, g := range gpus {
			after[g] = 0
		}
		return rate(f.dist.frag(model, cpu, after)), gpus
	}
	best, bestScore := -1, int64(0)
	for g, fr := range s.free {
		if fr < p.GPUMilli {
			continue
		}
		after[g] = fr - p.GPUMilli
		v := rate(f.dist.frag(model, cpu, after))
		after[g] = fr
		if best < 0 || v > bestScore {
			best, bestScore = g, v
		}
	}
	return bestScore, []int{best}
}
