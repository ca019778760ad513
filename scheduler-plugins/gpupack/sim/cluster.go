package sim

// FullGPU is one GPU in milli-GPU.
const FullGPU = 1000

// nodeState is what is left on a node.
type nodeState struct {
	cpuLeft, memLeft int64
	free             []int // milli-GPU free per GPU, by index
	freeMilli        int   // sum of free
	wholeFree        int   // GPUs with nothing on them
	// classes counts the pods of each GPU request kind on the node (the
	// clustering baseline keeps kinds together).
	classes map[gpuKind]int
}

// gpuKind is a pod's GPU request shape.
type gpuKind struct{ num, milli int }

// Cluster is the simulated cluster: the trace's nodes and what is booked
// on them. One goroutine uses it.
type Cluster struct {
	Nodes    []Node
	st       []nodeState
	capacity int64 // milli-GPU
	used     int64 // milli-GPU allocated
	maxCPU   int64
	maxMem   int64
}

// NewCluster builds an empty cluster.
func NewCluster(nodes []Node) *Cluster {
	c := &Cluster{Nodes: nodes, st: make([]nodeState, len(nodes))}
	for i, n := range nodes {
		s := &c.st[i]
		s.cpuLeft, s.memLeft = n.CPUMilli, n.MemoryMiB
		s.free = make([]int, n.GPUs)
		for g := range s.free {
			s.free[g] = FullGPU
		}
		s.freeMilli, s.wholeFree = n.GPUs*FullGPU, n.GPUs
		c.capacity += int64(n.GPUs) * FullGPU
		c.maxCPU, c.maxMem = max(c.maxCPU, n.CPUMilli), max(c.maxMem, n.MemoryMiB)
	}
	return c
}

// CapacityMilli is the cluster's GPU capacity in milli-GPU.
func (c *Cluster) CapacityMilli() int64 { return c.capacity }

// UsedMilli is the allocated milli-GPU: the sum over nodes of GPUs x 1000
// minus free milli.
func (c *Cluster) UsedMilli() int64 { return c.used }

// hostFits is the non-GPU part of feasibility, as NodeResourcesFit and
// node affinity on the GPU model decide it: CPU, memory and the pod's
// gpu_spec.
func (c *Cluster) hostFits(i int, p *Pod) bool {
	s := &c.st[i]
	if s.cpuLeft < p.CPUMilli || s.memLeft < p.MemoryMiB {
		return false
	}
	if p.NumGPU > 0 && !p.Accepts(c.Nodes[i].Model) {
		return false
	}
	return true
}

// gpuFits reports whether the node has GPUs for the pod: one GPU with
// enough free share, or enough whole free GPUs.
func (c *Cluster) gpuFits(i int, p *Pod) bool {
	s := &c.st[i]
	switch {
	case p.NumGPU == 0:
		return true
	case p.Share():
		for _, f := range s.free {
			if f >= p.GPUMilli {
				return true
			}
		}
		return false
	default:
		return s.wholeFree >= p.NumGPU
	}
}

// Fits is the whole feasibility check.
func (c *Cluster) Fits(i int, p *Pod) bool { return c.hostFits(i, p) && c.gpuFits(i, p) }

// firstWhole is the first n fully free GPUs by index, the protocol's
// choice for whole-GPU pods.
func (c *Cluster) firstWhole(i, n int) []int {
	out := make([]int, 0, n)
	for g, f := range c.st[i].free {
		if len(out) == n {
			break
		}
		if f == FullGPU {
			out = append(out, g)
		}
	}
	return out
}

// tightest is the fitting GPU with the least free share (first by index
// on ties), best-fit's choice for a shared pod.
func (c *Cluster) tightest(i int, milli int) int {
	best, bf := -1, FullGPU+1
	for g, f := range c.st[i].free {
		if f >= milli && f < bf {
			best, bf = g, f
		}
	}
	return best
}

// defaultGPUs is the protocol's GPU choice: first free whole GPUs, or the
// tightest-fitting GPU for a share.
func (c *Cluster) defaultGPUs(i int, p *Pod) []int {
	switch {
	case p.NumGPU == 0:
		return nil
	case p.Share():
		return []int{c.tightest(i, p.GPUMilli)}
	default:
		return c.firstWhole(i, p.NumGPU)
	}
}

// bind books the pod on node i's GPUs.
func (c *Cluster) bind(i int, p *Pod, gpus []int) {
	s := &c.st[i]
	s.cpuLeft -= p.CPUMilli
	s.memLeft -= p.MemoryMiB
	per := p.GPUMilli
	for _, g := range gpus {
		if s.free[g] == FullGPU {
			s.wholeFree--
		}
		s.free[g] -= per
		s.freeMilli -= per
		c.used += int64(per)
	}
	if p.NumGPU > 0 {
		if s.classes == nil {
			s.classes = map[gpuKind]int{}
		}
		s.classes[gpuKind{p.NumGPU, p.GPUMilli}]++
	}
}

// valid checks a policy's GPU choice before binding, so a policy bug
// shows as an error and never as a corrupt state.
func (c *Cluster) valid(i int, p *Pod, gpus []int) bool {
	if i < 0 || i >= len(c.st) || !c.hostFits(i, p) {
		return false
	}
	s := &c.st[i]
	if p.NumGPU == 0 {
		return len(gpus) == 0
	}
	if len(gpus) != p.NumGPU {
		return false
	}
	seen := uint64(0)
	for _, g := range gpus {
		if g < 0 || g >= len(s.free) || seen&(1<<uint(g)) != 0 {
			return false
		}
		seen |= 1 << uint(g)
		if p.Share() && s.free[g] < p.GPUMilli || !p.Share() && s.free[g] != FullGPU {
			return false
		}
	}
	return true
}
