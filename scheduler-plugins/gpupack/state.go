package gpupack

import (
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

const fullGPU = 1000 // milli in one GPU

// nodeGPUs is one node's GPUs and what is booked on them.
type nodeGPUs struct {
	name  string
	annot string // raw topology annotation, to skip unchanged updates
	// sharing is set when the node's device plugin serves GPU shares
	// (label kubegpu.io/gpu-sharing=true); shares go nowhere else, or the
	// kubelet would reject the pod.
	sharing bool
	topo    *gpunode.Node // nil when the node has no valid inventory
	err     error         // why topo is nil, when the annotation is bad
	pos     map[string]int
	// used[i] is the milli booked on GPU i: fullGPU for a whole GPU, the
	// sum of shares otherwise.
	used []int
	// whole[i] marks GPUs handed out whole: a GPU with any share is
	// never handed out whole, and a whole one never shared.
	whole []bool
	// foreign counts whole GPUs used by pods that carry no gpu-ids
	// annotation (placed by another scheduler): we cannot tell which
	// GPUs they hold, only how many.
	foreign int
}

// booking is one pod's GPUs.
type booking struct {
	node    string
	uuids   []string
	milli   int  // 0 = whole GPUs
	assumed bool // reserved by us, not yet seen bound with the annotation
	foreign int  // whole GPUs of an unannotated pod
}

// cache is the GPU state of every node, built from informers and from
// our own reservations. One mutex: Filter and Score take it for reading.
type gpuState struct {
	mu       sync.RWMutex
	nodes    map[string]*nodeGPUs
	bookings map[types.UID]*booking
	args     *Args
}

func newGPUState(args *Args) *gpuState {
	return &gpuState{nodes: map[string]*nodeGPUs{}, bookings: map[types.UID]*booking{}, args: args}
}

// setNode records a node's inventory annotation.
func (c *gpuState) setNode(node *v1.Node) {
	annot := node.Annotations[contract.AnnotationTopology]
	sharing := node.Labels[contract.LabelGPUSharing] == "true"
	c.mu.Lock()
	defer c.mu.Unlock()
	ng := c.nodes[node.Name]
	if ng != nil && ng.annot == annot {
		ng.sharing = sharing
		return
	}
	ng = &nodeGPUs{name: node.Name, annot: annot, sharing: sharing}
	if annot != "" {
		topo, err := gpunode.Decode(annot)
		if err != nil {
			ng.err = fmt.Errorf("node %s: %w", node.Name, err)
		} else {
			ng.topo = topo
			ng.pos = make(map[string]int, len(topo.GPUs))
			for i, g := range topo.GPUs {
				ng.pos[g.UUID] = i
			}
			ng.used = make([]int, len(topo.GPUs))
			ng.whole = make([]bool, len(topo.GPUs))
		}
	}
	c.nodes[node.Name] = ng
	c.recountLocked(ng)
}

func (c *gpuState) deleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
}

// recountLocked rebuilds a node's usage from the bookings on it, so a
// changed inventory never loses or invents a booking.
func (c *gpuState) recountLocked(ng *nodeGPUs) {
	for i := range ng.used {
		ng.used[i], ng.whole[i] = 0, false
	}
	ng.foreign = 0
	for _, b := range c.bookings {
		if b.node == ng.name {
			c.applyLocked(ng, b, +1)
		}
	}
}

// applyLocked adds (sign=+1) or removes (sign=-1) a booking's usage.
// UUIDs the inventory does not know are ignored: the booking is kept and
// counts again once the inventory lists them.
func (c *gpuState) applyLocked(ng *nodeGPUs, b *booking, sign int) {
	ng.foreign += sign * b.foreign
	if ng.topo == nil {
		return
	}
	for _, u := range b.uuids {
		i, ok := ng.pos[u]
		if !ok {
			continue
		}
		if b.milli == 0 {
			ng.used[i] += sign * fullGPU
			ng.whole[i] = sign > 0
		} else {
			ng.used[i] += sign * b.milli
		}
	}
}

func (c *gpuState) putLocked(uid types.UID, b *booking) {
	if old := c.bookings[uid]; old != nil {
		if ng := c.nodes[old.node]; ng != nil {
			c.applyLocked(ng, old, -1)
		}
	}
	c.bookings[uid] = b
	if ng := c.nodes[b.node]; ng != nil {
		c.applyLocked(ng, b, +1)
	}
}

func (c *gpuState) removeLocked(uid types.UID) {
	old := c.bookings[uid]
	if old == nil {
		return
	}
	if ng := c.nodes[old.node]; ng != nil {
		c.applyLocked(ng, old, -1)
	}
	delete(c.bookings, uid)
}

// setPod follows a pod from the informer: bound, running pods hold the
// GPUs in their annotation; finished or deleted pods free them.
func (c *gpuState) setPod(pod *v1.Pod) {
	if pod.Spec.NodeName == "" {
		return // not bound: only our own Reserve books it
	}
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		c.deletePod(pod)
		return
	}
	b := &booking{node: pod.Spec.NodeName}
	if value, ok := pod.Annotations[contract.AnnotationGPUIDs]; ok {
		a, err := contract.ParseGPUIDs(value)
		if err == nil {
			b.uuids, b.milli = a.UUIDs, a.Milli
		}
		// A bound pod with an unreadable annotation still holds GPUs;
		// fall through to counting its request as foreign.
		if err != nil {
			b.foreign = c.foreignCount(pod)
		}
	} else {
		b.foreign = c.foreignCount(pod)
	}
	if len(b.uuids) == 0 && b.foreign == 0 {
		c.deletePod(pod)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(pod.UID, b)
}

func (c *gpuState) foreignCount(pod *v1.Pod) int {
	r, err := parseRequest(pod, c.args)
	if err != nil {
		return 0
	}
	return r.whole
}

func (c *gpuState) deletePod(pod *v1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(pod.UID)
}

// reserve books a choice for a pod not yet bound.
func (c *gpuState) reserve(uid types.UID, node string, uuids []string, milli int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(uid, &booking{node: node, uuids: uuids, milli: milli, assumed: true})
}

// unreserve drops our own reservation; a booking the informer confirmed
// stays.
func (c *gpuState) unreserve(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.bookings[uid]; b != nil && b.assumed {
		c.removeLocked(uid)
	}
}
