package gpupack

import (
	"sync"
	"sync/atomic"
)

// Fragmentation, after FGD (Weng et al., "Beware of Fragmentation",
// USENIX ATC'23): a node's free GPU capacity counts as fragmented for a
// kind of request when that request cannot use it. The expected
// fragmentation over the mix of requests the cluster sees says how much
// free capacity is stranded; a good placement raises it least.

// class is a kind of GPU request: whole GPUs, or a share of one.
type class struct {
	whole int
	milli int
}

func classOf(r request) class { return class{whole: r.whole, milli: r.milli} }

// mix is the observed distribution of request classes, with old
// observations fading so the mix follows the workload.
type mix struct {
	mu     sync.Mutex
	weight map[class]float64
	seen   int
	// snap is the normalised distribution Score reads without locking,
	// refreshed every refreshEvery observations.
	snap atomic.Pointer[[]classWeight]
}

type classWeight struct {
	c class
	p float64
}

const (
	// decay per observation: the mix follows roughly the last 2000 pods.
	decay        = 0.9995
	refreshEvery = 16
	maxClasses   = 64
)

// priorMix is the distribution before any pod is seen: typical whole-GPU
// sizes and common inference shares, each with a small weight that real
// observations soon outweigh.
var priorMix = []class{{whole: 1}, {whole: 2}, {whole: 4}, {whole: 8}, {milli: 250}, {milli: 500}}

func newMix() *mix {
	m := &mix{weight: map[class]float64{}}
	for _, c := range priorMix {
		m.weight[c] = 1
	}
	m.refreshLocked()
	return m
}

// observe adds one pod's request to the mix.
func (m *mix) observe(r request) {
	c := classOf(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.weight {
		m.weight[k] *= decay
	}
	if _, ok := m.weight[c]; !ok && len(m.weight) >= maxClasses {
		m.dropLightestLocked()
	}
	m.weight[c]++
	m.seen++
	if m.seen%refreshEvery == 0 {
		m.refreshLocked()
	}
}

func (m *mix) dropLightestLocked() {
	var light class
	lw := -1.0
	for k, w := range m.weight {
		if lw < 0 || w < lw {
			light, lw = k, w
		}
	}
	delete(m.weight, light)
}

func (m *mix) refreshLocked() {
	total := 0.0
	for _, w := range m.weight {
		total += w
	}
	out := make([]classWeight, 0, len(m.weight))
	for c, w := range m.weight {
		out = append(out, classWeight{c: c, p: w / total})
	}
	m.snap.Store(&out)
}

func (m *mix) current() []classWeight { return *m.snap.Load() }

// fragmentation is the expected stranded milli-GPU of a node whose GPUs
// have free[i] milli free, over the request mix.
func fragmentation(free []int, mix []classWeight) float64 {
	total, wholeFree := 0, 0
	for _, f := range free {
		total += f
		if f == fullGPU {
			wholeFree++
		}
	}
	if total == 0 {
		return 0
	}
	frag := 0.0
	for _, cw := range mix {
		frag += cw.p * float64(stranded(free, total, wholeFree, cw.c))
	}
	return frag
}

// stranded is the free milli a request of class c cannot use: all of it
// when c fits nowhere on the node, else the GPUs too small for c.
func stranded(free []int, total, wholeFree int, c class) int {
	if c.milli > 0 {
		fits, small := false, 0
		for _, f := range free {
			if f >= c.milli {
				fits = true
			} else {
				small += f
			}
		}
		if !fits {
			return total
		}
		return small
	}
	if wholeFree < c.whole {
		return total
	}
	return total - wholeFree*fullGPU
}
