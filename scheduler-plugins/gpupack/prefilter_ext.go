package gpupack

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// simState is a cycle's private changes to node GPU usage: the pods a
// preemption dry run removes (candidate victims) or adds (reprieved
// victims, nominated pods), and the nodes they changed, copied from the
// shared state on first change. It hangs off GPUPack's cycle state in a
// cloned CycleState, so the shared informer state and the original cycle
// never see it.
type simState struct {
	nodes   map[string]*nodeGPUs
	removed map[types.UID]bool     // bound pods taken off their node
	added   map[types.UID]*booking // unbound pods (nominated) booked here
}

// Clone deep-copies the changed nodes: each dry run changes its own copy.
func (s *simState) Clone() fwk.StateData {
	c := &simState{
		nodes:   make(map[string]*nodeGPUs, len(s.nodes)),
		removed: maps.Clone(s.removed),
		added:   maps.Clone(s.added),
	}
	for k, ng := range s.nodes {
		c.nodes[k] = ng.copyUsage()
	}
	return c
}

// copyUsage copies a node's usage; the inventory is read-only and shared.
func (ng *nodeGPUs) copyUsage() *nodeGPUs {
	c := *ng
	c.used = slices.Clone(ng.used)
	c.whole = slices.Clone(ng.whole)
	c.shares = slices.Clone(ng.shares)
	c.memo = nil // the copy's answers differ from the live node's
	return &c
}

// readSim is the cycle's private GPU usage, nil when no dry run changed
// any. It lives in GPUPack's cycle state (one state read per Filter),
// which Clone copies, so a dry run's changes stay in its clone.
func readSim(state fwk.CycleState) *simState {
	if cs, ok := getState(state); ok {
		return cs.sim
	}
	return nil
}

// nodeFor returns the node's GPUs as this cycle sees them. The caller
// holds p.gpus.mu for reading.
func (p *Plugin) nodeFor(cs *cycleState, name string) *nodeGPUs {
	if cs.sim != nil {
		if ng, ok := cs.sim.nodes[name]; ok {
			return ng
		}
	}
	return p.gpus.nodes[name]
}

// PreFilterExtensions lets the scheduler's preemption dry runs and its
// nominated-pod checks change the GPU usage one cycle sees.
func (p *Plugin) PreFilterExtensions() fwk.PreFilterExtensions { return p }

// simNodeLocked returns the cycle's writable copy of the node's usage,
// creating the sim state and the copy on first use. The caller holds
// p.gpus.mu for reading.
func (p *Plugin) simNodeLocked(state fwk.CycleState, name string) (*simState, *nodeGPUs) {
	cs, ok := getState(state)
	if !ok {
		return nil, nil // the pod skipped GPUPack: nothing to change
	}
	s := cs.sim
	if s == nil {
		s = &simState{nodes: map[string]*nodeGPUs{}, removed: map[types.UID]bool{}, added: map[types.UID]*booking{}}
		cs.sim = s
	}
	ng, ok := s.nodes[name]
	if !ok {
		live := p.gpus.nodes[name]
		if live == nil {
			return s, nil
		}
		ng = live.copyUsage()
		s.nodes[name] = ng
	}
	return s, ng
}

// RemovePod takes a pod's GPUs off its node for this cycle only.
func (p *Plugin) RemovePod(_ context.Context, state fwk.CycleState, _ *v1.Pod, podInfo fwk.PodInfo, nodeInfo fwk.NodeInfo) *fwk.Status {
	pod := podInfo.GetPod()
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	if s := readSim(state); s != nil {
		if b, ok := s.added[pod.UID]; ok {
			if _, ng := p.simNodeLocked(state, b.node); ng != nil {
				p.gpus.applyLocked(ng, b, -1)
			}
			delete(s.added, pod.UID)
			return nil
		}
		if s.removed[pod.UID] {
			return nil
		}
	}
	b := p.gpus.bookings[pod.UID]
	if b == nil {
		return nil // holds no GPUs we know of
	}
	s, ng := p.simNodeLocked(state, b.node)
	if s == nil {
		return nil
	}
	if ng != nil {
		p.gpus.applyLocked(ng, b, -1)
	}
	s.removed[pod.UID] = true
	return nil
}

// AddPod puts a pod's GPUs on the node for this cycle only: a removed
// pod gets its own GPUs back; a pod that holds none yet (a nominated
// pod) books the set it would get now, or counts as GPUs somewhere on
// the node when no set is free.
func (p *Plugin) AddPod(_ context.Context, state fwk.CycleState, _ *v1.Pod, podInfo fwk.PodInfo, nodeInfo fwk.NodeInfo) *fwk.Status {
	pod := podInfo.GetPod()
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	if s := readSim(state); s != nil && s.removed[pod.UID] {
		b := p.gpus.bookings[pod.UID]
		if b != nil {
			if _, ng := p.simNodeLocked(state, b.node); ng != nil {
				p.gpus.applyLocked(ng, b, +1)
			}
		}
		delete(s.removed, pod.UID)
		return nil
	}
	if s := readSim(state); s != nil {
		if _, ok := s.added[pod.UID]; ok {
			return nil
		}
	}
	if p.gpus.bookings[pod.UID] != nil {
		return nil // already counted in the shared state
	}
	req, err := parseRequest(pod, &p.args)
	if err != nil || !req.wantsGPU() {
		return nil
	}
	name := nodeInfo.Node().Name
	s, ng := p.simNodeLocked(state, name)
	if s == nil || ng == nil || ng.topo == nil {
		return nil
	}
	b := &booking{node: name, milli: req.milli}
	if c, reason := ng.fit(req, &p.args, nil); reason == "" {
		b.uuids = ng.uuids(c)
	} else if req.milli == 0 {
		b.foreign = req.whole
	} else {
		return nil
	}
	p.gpus.applyLocked(ng, b, +1)
	s.added[pod.UID] = b
	return nil
}

// Fit is the GPU set GPUPack would give the cycle's pod on a node.
type Fit struct {
	// GPUs names the set (UUIDs); empty when the pod asks for none.
	GPUs    []string
	Milli   int // share of one GPU; 0 for whole GPUs
	Quality gpunode.SetQuality
}

// CycleFit answers, for the pod of this cycle, which GPUs it would get on
// the node as the cycle sees it (preemption changes included). ok is
// false with the reason when no set fits; wants is false for pods without
// a GPU request. Preemption uses it to rank the sets victims free.
func (p *Plugin) CycleFit(state fwk.CycleState, node string) (fit Fit, wants bool, reason string) {
	s, ok := getState(state)
	if !ok || !s.req.wantsGPU() {
		return Fit{}, false, ""
	}
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	ng := p.nodeFor(s, node)
	c, reason := ng.fit(s.req, &p.args, s.pinned)
	if reason != "" {
		return Fit{}, true, reason
	}
	return Fit{GPUs: ng.uuids(c), Milli: s.req.milli, Quality: c.quality}, true, ""
}

// HeldGPUs names the GPUs a pod holds and their node, as the shared state
// knows them (whole GPUs of pods placed by another scheduler are counted,
// not named).
func (p *Plugin) HeldGPUs(uid types.UID) (node string, uuids []string, milli, unnamed int) {
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	b := p.gpus.bookings[uid]
	if b == nil {
		return "", nil, 0, 0
	}
	return b.node, slices.Clone(b.uuids), b.milli, b.foreign
}

// instances maps a framework handle to the GPUPack plugin built with it,
// so another plugin of the same profile (preemption) can ask GPUPack
// about GPU sets. The framework hands every plugin of a profile the same
// handle.
var instances sync.Map

func register(ctx context.Context, h fwk.Handle, p *Plugin) {
	instances.Store(h, p)
	context.AfterFunc(ctx, func() { instances.CompareAndDelete(h, p) })
}

// Lookup returns the GPUPack plugin of the profile that owns h.
func Lookup(h fwk.Handle) (*Plugin, error) {
	v, ok := instances.Load(h)
	if !ok {
		return nil, fmt.Errorf("%s is not enabled in this scheduler profile", Name)
	}
	return v.(*Plugin), nil
}

// NodeView is a node's GPUs and who holds them, for preemption.
type NodeView struct {
	Topo    *gpunode.Node
	Sharing bool
	// Used is the milli booked per GPU (1000 for a whole GPU); Whole
	// marks GPUs handed out whole.
	Used  []int
	Whole []bool
	// Unnamed counts whole GPUs of pods without kubegpu.io/gpu-ids.
	Unnamed int
}

// NodeView returns the node's GPUs as the shared state holds them (who
// holds which: HeldGPUs); ok is false when the node has no valid
// inventory.
func (p *Plugin) NodeView(node string) (NodeView, bool) {
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	ng := p.gpus.nodes[node]
	if ng == nil || ng.topo == nil {
		return NodeView{}, false
	}
	v := NodeView{Topo: ng.topo, Sharing: ng.sharing, Used: slices.Clone(ng.used), Whole: slices.Clone(ng.whole),
		Unnamed: ng.foreign}
	return v, true
}

// Request is a pod's GPU request as GPUPack parsed it in this cycle.
type Request struct {
	Whole     int   // exclusive GPUs
	Milli     int   // share of one GPU; 0 when Whole
	MemoryMiB int64 // minimum memory per GPU; 0 = any
}

// CycleRequest returns the GPU request of the cycle's pod; ok is false
// when the pod asks for no GPU (or GPUPack did not run PreFilter).
func CycleRequest(state fwk.CycleState) (Request, bool) {
	s, ok := getState(state)
	if !ok || !s.req.wantsGPU() {
		return Request{}, false
	}
	return Request{Whole: s.req.whole, Milli: s.req.milli, MemoryMiB: s.req.memoryMiB}, true
}

// BookedOn lists the pods whose GPUs GPUPack counts on the node. Its
// informer handler may lag the scheduler's cache by a moment: preemption
// drops bookings of pods the cycle's snapshot no longer has, so a victim
// being deleted is not mistaken for one still holding its GPUs.
func (p *Plugin) BookedOn(node string) []types.UID {
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	var out []types.UID
	for uid, b := range p.gpus.bookings {
		if b.node == node {
			out = append(out, uid)
		}
	}
	return out
}
