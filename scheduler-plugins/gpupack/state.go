package gpupack

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

const fullGPU = 1000 // milli in one GPU

// nodeGPUs is one node's GPUs and what is booked on them.
type nodeGPUs struct {
	name string
	// annotHash and annotLen identify the raw topology annotation, to
	// skip unchanged updates without keeping a copy of the JSON.
	annotHash uint64
	annotLen  int
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
	// shares[i] identifies the multiset of shares on GPU i (the sum of their
	// shareHash; 0 = none), to tell whether they keep to the plan (plan.go).
	shares []uint64
	// foreign counts whole GPUs used by pods that carry no gpu-ids
	// annotation (placed by another scheduler): we cannot tell which
	// GPUs they hold, only how many.
	foreign int
	// gen changes whenever anything above changes (under the state's
	// write lock), so memo entries of an older gen are never used.
	gen uint64
	// memo is nil on a preemption dry run's private copy (copyUsage),
	// whose answers must not be kept.
	memo *memo
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
	seed     maphash.Seed
	// interned holds one copy of what identical nodes share (link
	// matrices, product names, PCI bus IDs), so 5000 nodes of a few
	// shapes keep a few copies: a decoded 8-GPU link matrix is 1.7 KiB.
	interned internTable
	// products counts the GPUs of each product on the nodes with a valid
	// inventory: the capacity the mix's model-restricted requests draw on.
	products map[string]int
}

func newGPUState(args *Args) *gpuState {
	return &gpuState{
		nodes:    map[string]*nodeGPUs{},
		bookings: map[types.UID]*booking{},
		args:     args,
		seed:     maphash.MakeSeed(),
		interned: internTable{links: map[string][][]gpunode.Link{}, strs: map[string]string{}},
		products: map[string]int{},
	}
}

// countProductsLocked adds (sign 1) or removes (-1) a node's GPUs from
// the per-product capacity.
func (c *gpuState) countProductsLocked(ng *nodeGPUs, sign int) {
	if ng == nil || ng.topo == nil {
		return
	}
	for i := range ng.topo.GPUs {
		p := ng.topo.GPUs[i].Product
		c.products[p] += sign
		if c.products[p] <= 0 {
			delete(c.products, p)
		}
	}
}

// productCapacity copies the per-product GPU counts.
func (c *gpuState) productCapacity() map[string]int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]int, len(c.products))
	for p, n := range c.products {
		out[p] = n
	}
	return out
}

// internTable maps values to their shared copy. It is bounded: a cluster
// of unusual nodes simply keeps its own copies past the limit.
type internTable struct {
	links map[string][][]gpunode.Link
	strs  map[string]string
}

const maxInterned = 4096

func (t *internTable) str(s string) string {
	if v, ok := t.strs[s]; ok {
		return v
	}
	if len(t.strs) < maxInterned {
		s = strings.Clone(s) // do not pin the annotation JSON it came from
		t.strs[s] = s
	}
	return s
}

// intern replaces the node's link matrix and repeated strings by shared
// copies. Safe because a decoded Node is read-only and its prepared
// set-selection tables depend only on the (equal) matrix.
func (t *internTable) intern(n *gpunode.Node) {
	key := make([]byte, 0, 1+len(n.Links)*len(n.Links)*12)
	key = append(key, byte(len(n.Links)))
	for _, row := range n.Links {
		for _, l := range row {
			nvs := byte(0)
			if l.NVSwitch {
				nvs = 1
			}
			key = binary.AppendVarint(key, int64(l.NVLinks))
			key = append(key, nvs)
			key = binary.AppendVarint(key, int64(l.PCIe))
		}
	}
	if links, ok := t.links[string(key)]; ok {
		n.Links = links
	} else if len(t.links) < maxInterned {
		t.links[string(key)] = n.Links
	}
	for i := range n.GPUs {
		n.GPUs[i].Product = t.str(n.GPUs[i].Product)
		n.GPUs[i].PCIBusID = t.str(n.GPUs[i].PCIBusID)
	}
}

// setNode records a node's inventory annotation.
func (c *gpuState) setNode(node *v1.Node) {
	annot := node.Annotations[contract.AnnotationTopology]
	hash := maphash.String(c.seed, annot)
	sharing := node.Labels[contract.LabelGPUSharing] == "true"
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.nodes[node.Name]
	if old != nil && old.annotHash == hash && old.annotLen == len(annot) {
		if old.sharing != sharing {
			old.sharing = sharing
			old.gen++
		}
		return
	}
	ng := &nodeGPUs{name: node.Name, annotHash: hash, annotLen: len(annot), sharing: sharing, memo: &memo{}}
	if annot != "" {
		topo, err := gpunode.Decode(annot)
		if err != nil {
			ng.err = fmt.Errorf("node %s: %w", node.Name, err)
		} else {
			c.interned.intern(topo)
			ng.topo = topo
			ng.pos = make(map[string]int, len(topo.GPUs))
			for i, g := range topo.GPUs {
				ng.pos[g.UUID] = i
			}
			ng.used = make([]int, len(topo.GPUs))
			ng.whole = make([]bool, len(topo.GPUs))
			ng.shares = make([]uint64, len(topo.GPUs))
		}
	}
	c.countProductsLocked(old, -1)
	c.countProductsLocked(ng, 1)
	c.nodes[node.Name] = ng
	c.recountLocked(ng)
}

func (c *gpuState) deleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ng := c.nodes[name]; ng != nil {
		c.countProductsLocked(ng, -1)
	}
	delete(c.nodes, name)
}

// recountLocked rebuilds a node's usage from the bookings on it, so a
// changed inventory never loses or invents a booking.
func (c *gpuState) recountLocked(ng *nodeGPUs) {
	ng.gen++
	for i := range ng.used {
		ng.used[i], ng.whole[i], ng.shares[i] = 0, false, 0
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
	ng.gen++
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
			if sign > 0 {
				ng.shares[i] += shareHash(b.milli)
			} else {
				ng.shares[i] -= shareHash(b.milli)
			}
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
