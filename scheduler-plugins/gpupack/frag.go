package gpupack

import (
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// Fragmentation, after FGD (Weng et al., "Beware of Fragmentation",
// USENIX ATC'23): a node's free GPU capacity counts as fragmented for a
// kind of request when that request cannot use it. The expected
// fragmentation over the mix of requests the cluster sees says how much
// free capacity is stranded; a good placement raises it least.
//
// A kind of request here is more than its GPU shape: it also carries the
// pod's CPU request and the GPU models its node affinity allows, so a
// node whose CPU is gone, or whose GPUs are of a model the request
// refuses, counts as stranded for it, as in FGD.

// class is a kind of request: whole GPUs or a share of one, with the
// CPU it needs beside them and the GPU products it accepts.
type class struct {
	whole  int
	milli  int
	cpu    int64  // milli-CPU
	models string // accepted products joined by "|", sorted; "" = any
}

func classOf(r request) class {
	return class{whole: r.whole, milli: r.milli, cpu: r.cpuMilli, models: r.models}
}

// mix is the observed distribution of request classes, with old
// observations fading so the mix follows the workload.
type mix struct {
	mu     sync.Mutex
	weight map[class]float64
	seen   int
	// Decayed sums of the observed pods' milli-GPU, milli-CPU and memory
	// (MiB): the mix's CPU and memory per GPU.
	sumGPU, sumCPU, sumMem float64
	// Decayed count, CPU and memory sums of the observed share pods.
	shareN, shareCPU, shareMem float64
	// capacity reads the cluster's GPUs per product (nil: unknown).
	capacity func() map[string]int
	// snap is the model Score reads without locking, refreshed every
	// refreshEvery observations.
	snap atomic.Pointer[fragModel]
}

const (
	// decay per observation: the mix follows roughly the last 2000 pods.
	decay        = 0.9995
	refreshEvery = 16
	maxClasses   = 256
)

// priorMix is the distribution before any pod is seen: typical whole-GPU
// sizes and common inference shares, each with a small weight that real
// observations soon outweigh.
var priorMix = []class{{whole: 1}, {whole: 2}, {whole: 4}, {whole: 8}, {milli: 250}, {milli: 500}}

func newMix(capacity func() map[string]int) *mix {
	m := &mix{weight: map[class]float64{}, capacity: capacity}
	for _, c := range priorMix {
		m.weight[c] = 1
	}
	m.refreshLocked()
	return m
}

// observe adds one pod's request to the mix. Pods without GPUs do not
// enter it: they strand no GPU by themselves, and their CPU use is seen
// on the nodes.
func (m *mix) observe(r request) {
	if !r.wantsGPU() {
		return
	}
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
	m.sumGPU = m.sumGPU*decay + float64(r.gpuMilli())
	m.sumCPU = m.sumCPU*decay + float64(r.cpuMilli)
	m.sumMem = m.sumMem*decay + float64(r.memReqMiB)
	m.shareN, m.shareCPU, m.shareMem = m.shareN*decay, m.shareCPU*decay, m.shareMem*decay
	if r.milli > 0 {
		m.shareN++
		m.shareCPU += float64(r.cpuMilli)
		m.shareMem += float64(r.memReqMiB)
	}
	m.seen++
	if m.seen%refreshEvery == 0 {
		m.refreshLocked()
	}
}

func (m *mix) dropLightestLocked() {
	var light class
	lw := -1.0
	for k, w := range m.weight {
		if lw < 0 || w < lw || w == lw && lessClass(k, light) {
			light, lw = k, w
		}
	}
	delete(m.weight, light)
}

func lessClass(a, b class) bool {
	switch {
	case a.whole != b.whole:
		return a.whole < b.whole
	case a.milli != b.milli:
		return a.milli < b.milli
	case a.cpu != b.cpu:
		return a.cpu < b.cpu
	}
	return a.models < b.models
}

// snapTolerance is how far the mix may drift before Score sees a new
// snapshot: the largest change of any cumulative class probability.
// A drift this small moves a score by a fraction of a point, while a
// stable snapshot lets the memo (memo.go) answer repeat visits of
// unchanged nodes.
const snapTolerance = 0.005

func (m *mix) refreshLocked() {
	fm := newFragModel(m.weight)
	if m.sumCPU > 0 {
		fm.gpuPerCPU = m.sumGPU / m.sumCPU
	}
	if m.sumMem > 0 {
		fm.gpuPerMem = m.sumGPU / m.sumMem
	}
	if m.capacity != nil {
		fm.pressure = modelPressure(m.weight, m.capacity())
	}
	if m.shareN > 0 {
		fm.shareCPU, fm.shareMem = int64(m.shareCPU/m.shareN), int64(m.shareMem/m.shareN)
	}
	if old := m.snap.Load(); old != nil && old.near(fm, snapTolerance) {
		return
	}
	// Only for a snapshot Score will read: the plan costs a packing.
	fm.plan = buildPlan(m.weight)
	m.snap.Store(fm)
}

// near reports whether o has the same classes as fm with every
// cumulative probability within tol.
func (fm *fragModel) near(o *fragModel, tol float64) bool {
	if len(fm.groups) != len(o.groups) || !nearRatio(fm.gpuPerCPU, o.gpuPerCPU, tol) || !nearRatio(fm.gpuPerMem, o.gpuPerMem, tol) ||
		!nearRatio(float64(fm.shareCPU), float64(o.shareCPU), tol) || !nearRatio(float64(fm.shareMem), float64(o.shareMem), tol) || len(fm.pressure) != len(o.pressure) {
		return false
	}
	for p, v := range fm.pressure {
		if w, ok := o.pressure[p]; !ok || math.Abs(v-w) > tol {
			return false
		}
	}
	for i := range fm.groups {
		a, b := &fm.groups[i], &o.groups[i]
		if a.whole != b.whole || a.milli != b.milli || !slices.Equal(a.models, b.models) || !slices.Equal(a.cpu, b.cpu) {
			return false
		}
		for j := range a.cum {
			if math.Abs(a.cum[j]-b.cum[j]) > tol {
				return false
			}
		}
	}
	return true
}

// nearRatio reports whether a and b differ by at most tol relative.
func nearRatio(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*max(math.Abs(a), math.Abs(b))
}

func (m *mix) current() *fragModel { return m.snap.Load() }

// fragModel is the mix grouped by GPU shape and accepted models; each
// group keeps its classes' CPU requests sorted, so the share of a group
// that still fits a node's CPU is one binary search.
type fragModel struct {
	groups []fragGroup
	// gpuPerCPU and gpuPerMem are the mix's milli-GPU per milli-CPU and
	// per MiB of memory: how much GPU capacity a node's free CPU and
	// memory carry on average. 0 = unknown.
	gpuPerCPU, gpuPerMem float64
	// pressure is, per GPU product, the share of its capacity that the
	// mix's model-restricted requests claim (0-1; nil when none is
	// restricted): using a GPU of that product strands, in expectation,
	// that share of it for them.
	pressure map[string]float64
	// plan is the planned packing of the mix's shares (plan.go), and
	// shareCPU and shareMem a share pod's mean CPU (milli) and memory
	// (MiB), which a planned GPU's company needs on its node.
	plan               sharePlan
	shareCPU, shareMem int64
}

// modelPressure spreads each model-restricted class's share of the mix's
// GPU demand over the products it accepts, in proportion to their
// capacity, and divides by each product's share of the capacity. FGD's
// measure sees a node's GPUs as stranded for a class that refuses their
// model, but not that a GPU which only some classes can use is spent when
// any other pod takes it: with the GPUs of a model few requests accept
// but many pods could use, the restricted requests fail once the
// others have filled them. The pressure prices that in.
func modelPressure(weight map[class]float64, capacity map[string]int) map[string]float64 {
	totalCap := 0
	for _, n := range capacity {
		totalCap += n
	}
	classes := sortedClasses(weight)
	totalGPU := 0.0
	for _, c := range classes {
		totalGPU += weight[c] * float64(c.gpuMilli())
	}
	if totalCap == 0 || totalGPU == 0 {
		return nil
	}
	var out map[string]float64
	for _, c := range classes {
		w := weight[c]
		if c.models == "" {
			continue
		}
		accepted := strings.Split(c.models, "|")
		eligible := 0
		for _, p := range accepted {
			eligible += capacity[p]
		}
		if eligible == 0 {
			continue // runs nowhere: claims nothing
		}
		// The class's demand share over its eligible capacity share.
		claim := w * float64(c.gpuMilli()) / totalGPU * float64(totalCap) / float64(eligible)
		for _, p := range accepted {
			if capacity[p] == 0 {
				continue
			}
			if out == nil {
				out = map[string]float64{}
			}
			out[p] = min(1, out[p]+claim)
		}
	}
	return out
}

// sortedClasses lists the mix's classes in a fixed order: float sums
// depend on the order of their terms, and equal inputs must give
// identical models (the simulator's runs are reproducible).
func sortedClasses(weight map[class]float64) []class {
	classes := make([]class, 0, len(weight))
	for c := range weight {
		classes = append(classes, c)
	}
	slices.SortFunc(classes, func(a, b class) int {
		switch {
		case a == b:
			return 0
		case lessClass(a, b):
			return -1
		}
		return 1
	})
	return classes
}

// gpuMilli is the class's GPU demand in milli-GPU.
func (c class) gpuMilli() int {
	if c.milli > 0 {
		return c.milli
	}
	return c.whole * fullGPU
}

type fragGroup struct {
	whole, milli int
	models       []string  // nil = any product
	p            float64   // probability of the group
	cpu          []int64   // ascending
	cum          []float64 // cum[j]: probability of the classes cpu[0..j]
}

func newFragModel(weight map[class]float64) *fragModel {
	classes := make([]class, 0, len(weight))
	for c := range weight {
		classes = append(classes, c)
	}
	// Deterministic order: equal inputs give identical models (the total
	// too: float sums depend on the order of their terms).
	slices.SortFunc(classes, func(a, b class) int {
		if a.whole != b.whole || a.milli != b.milli || a.models != b.models {
			if lessClass(class{whole: a.whole, milli: a.milli, models: a.models}, class{whole: b.whole, milli: b.milli, models: b.models}) {
				return -1
			}
			return 1
		}
		switch {
		case a.cpu < b.cpu:
			return -1
		case a.cpu > b.cpu:
			return 1
		}
		return 0
	})
	total := 0.0
	for _, c := range classes {
		total += weight[c]
	}
	fm := &fragModel{}
	for _, c := range classes {
		n := len(fm.groups)
		if n == 0 || fm.groups[n-1].whole != c.whole || fm.groups[n-1].milli != c.milli || strings.Join(fm.groups[n-1].models, "|") != c.models {
			g := fragGroup{whole: c.whole, milli: c.milli}
			if c.models != "" {
				g.models = strings.Split(c.models, "|")
			}
			fm.groups = append(fm.groups, g)
			n++
		}
		g := &fm.groups[n-1]
		g.p += weight[c] / total
		g.cpu = append(g.cpu, c.cpu)
		g.cum = append(g.cum, g.p)
	}
	return fm
}

// unlimitedCPU stands for a node whose CPU or memory the plugin cannot see.
const unlimitedCPU = int64(1) << 62

// hostLeft is a node's unrequested CPU (milli) and memory (MiB).
type hostLeft struct{ cpu, mem int64 }

// unknownHost is a node whose CPU and memory the plugin cannot see.
var unknownHost = hostLeft{unlimitedCPU, unlimitedCPU}

// frag is the expected stranded milli-GPU of a node whose GPUs have
// free[i] milli free (gpus[i] says which product; nil = any) and host
// CPU and memory unrequested. For each group, the classes whose CPU
// fits strand the GPUs too small for them (all of the node's free GPU
// when too few GPUs fit); the classes whose CPU does not fit strand all.
// The result is at least the free GPU capacity the node's free CPU or
// memory cannot carry at the mix's CPU and memory per GPU.
func (fm *fragModel) frag(free []int, gpus []gpunode.GPU, host hostLeft) float64 {
	total := 0
	for _, f := range free {
		total += f
	}
	if total == 0 {
		return 0
	}
	t := float64(total)
	out := 0.0
	for gi := range fm.groups {
		g := &fm.groups[gi]
		need, per := g.whole, g.milli
		if per == 0 {
			per = fullGPU
		} else {
			need = 1
		}
		fits, usable := 0, 0
		for i, f := range free {
			if g.models != nil && gpus != nil && !slices.Contains(g.models, gpus[i].Product) {
				continue
			}
			if f >= per {
				fits++
				usable += f
			}
		}
		if fits < need {
			out += g.p * t
			continue
		}
		pf := 0.0
		if j, _ := slices.BinarySearch(g.cpu, host.cpu+1); j > 0 {
			pf = g.cum[j-1]
		}
		out += pf*float64(total-usable) + (g.p-pf)*t
	}
	// A node's free CPU and memory carry only so much GPU: at the mix's
	// CPU and memory per GPU, the free GPU capacity beyond what they carry
	// is stranded whatever the classes' shapes. The per-class test above
	// sees CPU only when a class no longer fits at all; this floor grows
	// smoothly as CPU or memory runs short, so a pod's CPU and memory
	// (CPU-only pods' too) weigh on where it goes before the GPUs are cut
	// off.
	if host.cpu != unlimitedCPU && fm.gpuPerCPU > 0 {
		out = max(out, t-float64(max(host.cpu, 0))*fm.gpuPerCPU)
	}
	if host.mem != unlimitedCPU && fm.gpuPerMem > 0 {
		out = max(out, t-float64(max(host.mem, 0))*fm.gpuPerMem)
	}
	return out
}
