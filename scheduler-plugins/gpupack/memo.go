package gpupack

import (
	"slices"
	"sync"
)

// Filter and Score results are kept per node across scheduling cycles.
// Between two visits of a node most of the cluster is unchanged: a cycle
// books GPUs on one node, and consecutive pods repeat a few request
// shapes. So a node's answer for a request is computed once per change
// of the node's bookings (gen), of the request shape, or of the request
// mix the score weighs (the fragModel snapshot), and looked up after.
// On 5000 nodes this turns GPUPack's per-node cost from a set search and
// two fragmentation sums into a short key compare.
//
// The memo is advisory: Reserve always searches again under the write
// lock, so a stale entry could at worst admit a node whose Reserve then
// fails; keys include every input, so it does not happen.

// memoKey is everything fit reads besides the node. The score also
// reads the pod's CPU and the node's free CPU, kept beside it in the
// entry: pods of one GPU shape but different CPU share the fit.
type memoKey struct {
	gen       uint64 // nodeGPUs.gen at computation
	whole     int
	milli     int
	memoryMiB int64
	frag      *fragModel
}

func keyOf(ng *nodeGPUs, r request) memoKey {
	return memoKey{gen: ng.gen, whole: r.whole, milli: r.milli, memoryMiB: r.memoryMiB, frag: r.frag}
}

type memoEntry struct {
	key memoKey
	// fitted: c and reason are fit's answer for key (a Score-only entry
	// holds the choice it scored, which Filter must not reuse).
	fitted bool
	c      choice
	reason string
	// scored: score is scoreChoice(c) for a pod of cpuMilli CPU and
	// memMiB memory on a node with host free.
	scored   bool
	cpuMilli int64
	memMiB   int64
	host     hostLeft
	score    int64
}

// memoWays bounds the entries per node: a few request shapes alternate.
const memoWays = 4

// memo is one node's entries. Its own small lock lets Filter and Score,
// which hold the state's read lock, fill it from parallel goroutines.
type memo struct {
	mu      sync.Mutex
	next    uint8
	entries [memoWays]memoEntry
}

func (m *memo) find(k memoKey) *memoEntry {
	for i := range m.entries {
		if e := &m.entries[i]; (e.fitted || e.scored) && e.key == k {
			return e
		}
	}
	return nil
}

// slot returns the entry for k, taking over the oldest one if needed.
func (m *memo) slot(k memoKey) *memoEntry {
	if e := m.find(k); e != nil {
		return e
	}
	e := &m.entries[m.next]
	m.next = (m.next + 1) % memoWays
	*e = memoEntry{key: k}
	return e
}

// fitMemo is fit, answered from the memo when the node and request are
// unchanged since it was last computed. Pinned requests are not kept:
// their answer depends on the annotation, not only on the shape. The
// caller holds the state's lock for reading.
func (ng *nodeGPUs) fitMemo(r request, args *Args, pinned []string) (choice, string) {
	if ng == nil || ng.topo == nil || ng.memo == nil || pinned != nil {
		return ng.fit(r, args, pinned)
	}
	k := keyOf(ng, r)
	ng.memo.mu.Lock()
	if e := ng.memo.find(k); e != nil && e.fitted {
		c, reason := e.c, e.reason
		ng.memo.mu.Unlock()
		return c, reason
	}
	ng.memo.mu.Unlock()
	c, reason := ng.fit(r, args, nil)
	ng.memo.mu.Lock()
	e := ng.memo.slot(k)
	if !e.fitted || !sameChoice(e.c, c) {
		e.scored = false
	}
	e.fitted, e.c, e.reason = true, c, reason
	ng.memo.mu.Unlock()
	return c, reason
}

// scoreMemo is scoreChoice, answered from the memo for the same node
// state, request, choice and free CPU. The caller holds the state's lock
// for reading.
func (p *Plugin) scoreMemo(ng *nodeGPUs, r request, c choice, host hostLeft, pinned bool) int64 {
	if ng == nil || ng.topo == nil || ng.memo == nil || pinned {
		return p.scoreChoice(ng, r, c, host)
	}
	k := keyOf(ng, r)
	ng.memo.mu.Lock()
	if e := ng.memo.find(k); e != nil && e.scoredFor(r, host) && sameChoice(e.c, c) {
		s := e.score
		ng.memo.mu.Unlock()
		return s
	}
	ng.memo.mu.Unlock()
	s := p.scoreChoice(ng, r, c, host)
	ng.memo.mu.Lock()
	e := ng.memo.slot(k)
	if e.fitted && !sameChoice(e.c, c) {
		// Filter's choice in this cycle was made before the node last
		// changed; keep the newer fit, do not pair it with this score.
		ng.memo.mu.Unlock()
		return s
	}
	e.c, e.scored, e.cpuMilli, e.memMiB, e.host, e.score = c, true, r.cpuMilli, r.memReqMiB, host, s
	ng.memo.mu.Unlock()
	return s
}

// memoScore is Score's fast path: the memo's score for the request on
// this node, when Filter's fit and a score for the same pod CPU, memory
// and node free resources are both there. Pinned requests are never
// kept. The caller holds the state's lock for reading.
func (ng *nodeGPUs) memoScore(r request, host hostLeft, pinned bool) (int64, bool) {
	if ng == nil || ng.topo == nil || ng.memo == nil || pinned {
		return 0, false
	}
	k := keyOf(ng, r)
	ng.memo.mu.Lock()
	defer ng.memo.mu.Unlock()
	// A scored entry that is also fitted holds the score of the fitted
	// choice: fitMemo drops the score when the choice changes, and
	// scoreMemo does not store a score for another choice.
	if e := ng.memo.find(k); e != nil && e.fitted && e.reason == "" && e.scoredFor(r, host) {
		return e.score, true
	}
	return 0, false
}

// scoredFor reports whether e holds a score for a pod of r's CPU and
// memory on a node with host free.
func (e *memoEntry) scoredFor(r request, host hostLeft) bool {
	return e.scored && e.cpuMilli == r.cpuMilli && e.memMiB == r.memReqMiB && e.host == host
}

func sameChoice(a, b choice) bool { return slices.Equal(a.pos, b.pos) }
