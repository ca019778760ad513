package sim

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Diagnosis says where the GPU capacity is when arrived demand first
// reaches the cluster's capacity (100%): at that point the free capacity
// equals the GPU demand of the pods that failed before, so it is what a
// better placement could have kept.
type Diagnosis struct {
	// FreeGPUs is the free capacity, in GPUs.
	FreeGPUs float64
	// Free capacity (GPUs) by the GPU's free amount: under 200 milli (the
	// rest beside an 810 share and the like), 200-499, 500-999, whole.
	Under200, Under500, Under1000, Whole float64
	// Free capacity (GPUs) by what could still use it: Usable, some trace
	// GPU pod fits that GPU now (GPU share, model, CPU and memory);
	// HostStranded, some would fit the GPU but the node's CPU or memory
	// is short; ShapeStranded, none fits the GPU even with CPU and
	// memory to spare (a rest smaller than every share its model takes,
	// or too few whole GPUs).
	Usable, HostStranded, ShapeStranded float64
	// FreeOnLowCPUNodes is the free capacity (GPUs) on nodes with under
	// 2 free cores.
	FreeOnLowCPUNodes float64
	// Failed counts the pods that failed before 100% by kind ("1x1000",
	// "8x1000", "share<500", "share>=500", followed by the GPU models
	// the pod accepts when it names them), FailedSplit those of them
	// for which some node had room for the GPUs and another for the CPU
	// and memory, but none for both.
	Failed, FailedSplit map[string]int
	// Rests counts the partly used GPUs by free milli.
	Rests map[int]int
	// FailedGPUs is the failed pods' GPU demand, in GPUs, by kind.
	FailedGPUs map[string]float64
	// ShareBound is the free capacity (GPUs) no placement avoids when
	// every share pod that arrived is placed: for a threshold t up to
	// 500, a GPU holding a share over 1000-t keeps a rest under t that
	// only shares under t can fill, so at least the sum of those rests
	// minus the sum of the shares under t stays free; the largest over t.
	ShareBound float64
	// arrived counts the share pods that arrived so far by milli.
	arrived map[int]int
}

// arrive records a pod that arrived before 100%.
func (d *Diagnosis) arrive(p *Pod) {
	if !p.Share() {
		return
	}
	if d.arrived == nil {
		d.arrived = map[int]int{}
	}
	d.arrived[p.GPUMilli]++
}

// shareBound is ShareBound over the arrived shares.
func (d *Diagnosis) shareBound() float64 {
	best := 0
	for t := 1; t <= FullGPU/2; t++ {
		rests, small := 0, 0
		for m, n := range d.arrived {
			if m > FullGPU-t {
				rests += (FullGPU - m) * n
			}
			if m < t {
				small += m * n
			}
		}
		best = max(best, rests-small)
	}
	return float64(best) / FullGPU
}

func podKind(p *Pod) string {
	k := fmt.Sprintf("%dx%d", p.NumGPU, p.GPUMilli)
	switch {
	case p.Share() && p.GPUMilli < 500:
		k = "share<500"
	case p.Share():
		k = "share>=500"
	}
	if len(p.Spec) > 0 {
		k += "(" + strings.Join(p.Spec, "|") + ")"
	}
	return k
}

// failed records a pod that fit nowhere, before 100% arrived.
func (d *Diagnosis) failed(c *Cluster, p *Pod) {
	if d.Failed == nil {
		d.Failed, d.FailedSplit, d.FailedGPUs = map[string]int{}, map[string]int{}, map[string]float64{}
	}
	k := podKind(p)
	d.Failed[k]++
	d.FailedGPUs[k] += float64(p.GPURequest()) / FullGPU
	gpuRoom, hostRoom := false, false
	for i := range c.st {
		if p.NumGPU > 0 && !p.Accepts(c.Nodes[i].Model) {
			continue
		}
		s := &c.st[i]
		gpuRoom = gpuRoom || c.gpuFits(i, p)
		hostRoom = hostRoom || s.cpuLeft >= p.CPUMilli && s.memLeft >= p.MemoryMiB
	}
	if gpuRoom && hostRoom {
		d.FailedSplit[k]++
	}
}

// snapshot classifies the free capacity of c. shapes are the trace's
// distinct GPU pods.
func (d *Diagnosis) snapshot(c *Cluster, shapes []Pod) {
	d.ShareBound = d.shareBound()
	for i := range c.st {
		s := &c.st[i]
		model := c.Nodes[i].Model
		nodeFree := 0
		for _, f := range s.free {
			nodeFree += f
		}
		if nodeFree == 0 {
			continue
		}
		if s.cpuLeft < 2000 {
			d.FreeOnLowCPUNodes += float64(nodeFree) / FullGPU
		}
		for _, f := range s.free {
			if f == 0 {
				continue
			}
			g := float64(f) / FullGPU
			d.FreeGPUs += g
			if f < FullGPU {
				if d.Rests == nil {
					d.Rests = map[int]int{}
				}
				d.Rests[f]++
			}
			switch {
			case f < 200:
				d.Under200 += g
			case f < 500:
				d.Under500 += g
			case f < FullGPU:
				d.Under1000 += g
			default:
				d.Whole += g
			}
			usable, ignoringHost := false, false
			for k := range shapes {
				p := &shapes[k]
				if !p.Accepts(model) {
					continue
				}
				gpuOK := p.Share() && p.GPUMilli <= f || !p.Share() && f == FullGPU && s.wholeFree >= p.NumGPU
				if !gpuOK {
					continue
				}
				ignoringHost = true
				if s.cpuLeft >= p.CPUMilli && s.memLeft >= p.MemoryMiB {
					usable = true
					break
				}
			}
			switch {
			case usable:
				d.Usable += g
			case ignoringHost:
				d.HostStranded += g
			default:
				d.ShapeStranded += g
			}
		}
	}
}

// gpuShapes is one pod per distinct GPU request (CPU, memory, GPUs,
// models) of the trace.
func gpuShapes(pods []Pod) []Pod {
	seen := map[string]bool{}
	var out []Pod
	for _, p := range pods {
		if p.NumGPU == 0 {
			continue
		}
		k := fmt.Sprintf("%d/%d/%d/%d/%s", p.CPUMilli, p.MemoryMiB, p.NumGPU, p.GPUMilli, strings.Join(p.Spec, "|"))
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	// Smallest CPU first: the usable test stops at the first that fits.
	slices.SortStableFunc(out, func(a, b Pod) int { return int(a.CPUMilli - b.CPUMilli) })
	return out
}

// WriteDiagnosis prints one block per result.
func WriteDiagnosis(w io.Writer, rs []*Result) {
	for _, r := range rs {
		d := r.Diag
		if d == nil {
			continue
		}
		fmt.Fprintf(w, "%s seed %d at 100%%: %.1f GPUs free (at least %.1f as shares arrived): <200 %.1f, 200-499 %.1f, 500-999 %.1f, whole %.1f; usable %.1f, CPU/mem-stranded %.1f, shape-stranded %.1f; on nodes <2 free cores %.1f\n",
			r.Policy, r.Seed, d.FreeGPUs, d.ShareBound, d.Under200, d.Under500, d.Under1000, d.Whole, d.Usable, d.HostStranded, d.ShapeStranded, d.FreeOnLowCPUNodes)
		kinds := make([]string, 0, len(d.Failed))
		for k := range d.Failed {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		var b strings.Builder
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s %d (%.1f GPUs, split %d);", k, d.Failed[k], d.FailedGPUs[k], d.FailedSplit[k])
		}
		fmt.Fprintf(w, "  failed before 100%%:%s\n", b.String())
		rests := make([]int, 0, len(d.Rests))
		for f := range d.Rests {
			rests = append(rests, f)
		}
		// Most free capacity first.
		slices.SortFunc(rests, func(a, b int) int { return b*d.Rests[b] - a*d.Rests[a] })
		b.Reset()
		for _, f := range rests[:min(len(rests), 12)] {
			fmt.Fprintf(&b, " %dx%d", d.Rests[f], f)
		}
		fmt.Fprintf(w, "  largest rests (GPUs x free milli):%s\n", b.String())
	}
}
