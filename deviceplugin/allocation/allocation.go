// Package allocation decides which GPUs a container gets: the set the
// scheduler recorded on the pod (annotation kubegpu.io/gpu-ids) when the
// pod can be identified, else the topology-best set from gpunode.
//
// The kubelet's GetPreferredAllocation and Allocate calls carry no pod
// identity, so the pod is inferred: among the pods bound to this node that
// carry the annotation and whose GPUs are not in use yet, the ones whose
// annotated set fits the request. This package holds only that decision;
// where the pods and the in-use devices come from is the caller's.
package allocation

import (
	"cmp"
	"slices"
	"sort"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// Source says where a preferred set came from.
type Source string

const (
	SourceAnnotation Source = "annotation" // the scheduler's recorded choice
	SourceTopology   Source = "topology"   // gpunode best set
	SourceMostFree   Source = "most-free"  // share: the GPU with the most free slots
	SourceNone       Source = "none"       // no valid set (request too large)
)

// InUse is what is known about the devices already assigned to
// containers. When Known is false (the kubelet's podresources API was not
// reachable), a pod's devices count as in use once the pod is Running.
type InUse struct {
	Known bool
	// Devices are the whole-GPU device IDs (UUIDs) assigned to containers.
	Devices map[string]bool
	// Slots are the share slot IDs (SlotID) assigned to containers.
	Slots map[string]bool
	// Holders are the pods ("namespace/name") holding share slots: slots
	// do not name a pod's annotated GPU set, so a share pod is matched by
	// name.
	Holders map[string]bool
	// Claimed are pods this plugin already answered an Allocate for. It
	// covers the moment before podresources shows the assignment, and runs
	// without podresources, where a share pod's GPU would otherwise look
	// free for it again until the pod is Running.
	Claimed map[types.UID]bool
}

// live reports whether pod still holds or waits for its GPUs.
func live(pod *v1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != v1.PodSucceeded && pod.Status.Phase != v1.PodFailed
}

// byAge orders pods oldest first, as the kubelet admits a batch of new
// pods in creation order; name and UID break ties so every call agrees.
func byAge(a, b *v1.Pod) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
}

// AnnotatedIDs reads a pod's kubegpu.io/gpu-ids annotation with the
// contract's parser, sorted. nil when the pod has none, when it is
// malformed (never honoured: it could name a GPU twice) or when it is a
// GPU share, which the whole-GPU resource does not serve.
func AnnotatedIDs(pod *v1.Pod) []string {
	raw, ok := pod.Annotations[contract.AnnotationGPUIDs]
	if !ok {
		return nil
	}
	a, err := contract.ParseGPUIDs(raw)
	if err != nil || a.Shared() {
		return nil
	}
	ids := slices.Clone(a.UUIDs)
	sort.Strings(ids)
	return ids
}

// waiting reports whether pod is still waiting for its annotated GPUs.
func waiting(pod *v1.Pod, ids []string, inUse InUse) bool {
	if !live(pod) || inUse.Claimed[pod.UID] {
		return false
	}
	if !inUse.Known {
		return pod.Status.Phase != v1.PodRunning
	}
	for _, id := range ids {
		if inUse.Devices[id] {
			return false
		}
	}
	return true
}

// Candidates returns the distinct annotated GPU sets (sorted) of the pods
// still waiting for their GPUs whose sets have size GPUs, lie within
// allowed (nil: any) and contain mustInclude, the oldest pod's set first.
func Candidates(pods []*v1.Pod, inUse InUse, allowed, mustInclude []string, size int) [][]string {
	sets, _ := candidates(pods, inUse, allowed, mustInclude, size)
	return sets
}

// candidates is Candidates with, for each set, the oldest pod waiting for it.
func candidates(pods []*v1.Pod, inUse InUse, allowed, mustInclude []string, size int) ([][]string, []*v1.Pod) {
	pods = slices.SortedFunc(slices.Values(pods), byAge)
	var allowedSet map[string]bool
	if allowed != nil {
		allowedSet = make(map[string]bool, len(allowed))
		for _, id := range allowed {
			allowedSet[id] = true
		}
	}
	var sets [][]string
	var owners []*v1.Pod
	for _, pod := range pods {
		ids := AnnotatedIDs(pod)
		if len(ids) == 0 || len(ids) != size || !waiting(pod, ids, inUse) {
			continue
		}
		if allowedSet != nil && slices.ContainsFunc(ids, func(id string) bool { return !allowedSet[id] }) {
			continue
		}
		if slices.ContainsFunc(mustInclude, func(id string) bool { return !slices.Contains(ids, id) }) {
			continue
		}
		if !slices.ContainsFunc(sets, func(s []string) bool { return slices.Equal(s, ids) }) {
			sets = append(sets, ids)
			owners = append(owners, pod)
		}
	}
	return sets, owners
}

// Preferred picks size GPUs out of available for a GetPreferredAllocation
// request: the annotated set of the oldest waiting pod whose set fits (the
// request carries no pod identity, and the kubelet admits new pods oldest
// first), else the best set on node among available that contains
// mustInclude. GPUs holding or reserved for shares are never offered
// whole. node may be nil (then the first available IDs).
func Preferred(node *gpunode.Node, pods []*v1.Pod, inUse InUse, available, mustInclude []string, size int) ([]string, Source) {
	shared := Usage(pods, inUse).Shared
	available = slices.DeleteFunc(slices.Clone(available), func(id string) bool { return shared[id] && !slices.Contains(mustInclude, id) })
	if size <= 0 || size > len(available) || len(mustInclude) > size {
		return nil, SourceNone
	}
	if c := Candidates(pods, inUse, available, mustInclude, size); len(c) > 0 {
		return c[0], SourceAnnotation
	}
	if set, ok := BestSet(node, available, mustInclude, size); ok {
		return set, SourceTopology
	}
	return nil, SourceNone
}

// Verdict is how an Allocate request compares with the scheduler's choice.
type Verdict int

const (
	// Unannotated: no waiting pod of this size has an annotation.
	Unannotated Verdict = iota
	// Honoured: the requested set is a waiting pod's annotated set.
	Honoured
	// Mismatch: pods of this size wait for annotated sets, but the
	// request is none of them.
	Mismatch
)

// Check compares the IDs the kubelet asked Allocate for with the waiting
// pods' annotated sets, returning the sets it was compared with and, when
// honoured, the oldest pod waiting for that set (the one served).
func Check(pods []*v1.Pod, inUse InUse, requested []string) (Verdict, [][]string, *v1.Pod) {
	req := slices.Clone(requested)
	sort.Strings(req)
	c, owners := candidates(pods, inUse, nil, nil, len(req))
	if len(c) == 0 {
		return Unannotated, nil, nil
	}
	if i := slices.IndexFunc(c, func(s []string) bool { return slices.Equal(s, req) }); i >= 0 {
		return Honoured, c, owners[i]
	}
	return Mismatch, c, nil
}

// maxCombinations bounds the exhaustive search for sets with mustInclude;
// C(16,8) is 12870, so real nodes stay exact.
const maxCombinations = 20000

// BestSet is gpunode's best set of size GPUs among available that
// contains mustInclude, as UUIDs. IDs unknown to node are ignored; a nil
// node yields the first IDs in order.
func BestSet(node *gpunode.Node, available, mustInclude []string, size int) ([]string, bool) {
	if node == nil {
		out := slices.Clone(mustInclude)
		for _, id := range available {
			if len(out) == size {
				break
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		return out, len(out) == size
	}
	pos := make(map[string]int, len(node.GPUs))
	for p, g := range node.GPUs {
		pos[g.UUID] = p
	}
	var free, must []int
	for _, id := range available {
		if p, ok := pos[id]; ok && !slices.Contains(free, p) {
			free = append(free, p)
		}
	}
	for _, id := range mustInclude {
		p, ok := pos[id]
		if !ok || !slices.Contains(free, p) {
			return nil, false
		}
		if !slices.Contains(must, p) {
			must = append(must, p)
		}
	}
	var set []int
	if len(must) == 0 {
		s, _, ok := node.BestSet(free, size)
		if !ok {
			return nil, false
		}
		set = s
	} else {
		s, ok := bestWith(node, free, must, size)
		if !ok {
			return nil, false
		}
		set = s
	}
	out := make([]string, len(set))
	for i, p := range set {
		out[i] = node.GPUs[p].UUID
	}
	return out, true
}

// bestWith finds the best size-set of positions from free containing
// must: exhaustively while that is cheap, else greedily adding the GPU
// that keeps the set's quality highest.
func bestWith(node *gpunode.Node, free, must []int, size int) ([]int, bool) {
	rest := slices.DeleteFunc(slices.Clone(free), func(p int) bool { return slices.Contains(must, p) })
	need := size - len(must)
	if need < 0 || need > len(rest) {
		return nil, false
	}
	slices.Sort(rest)
	if binomial(len(rest), need) <= maxCombinations {
		var best []int
		var bestQ gpunode.SetQuality
		var pick func(start int, cur []int)
		pick = func(start int, cur []int) {
			if len(cur) == need {
				set := append(slices.Clone(must), cur...)
				q, err := node.Quality(set)
				if err == nil && (best == nil || q.Compare(bestQ) > 0) {
					best, bestQ = set, q
				}
				return
			}
			for i := start; i <= len(rest)-(need-len(cur)); i++ {
				pick(i+1, append(cur, rest[i]))
			}
		}
		pick(0, make([]int, 0, need))
		slices.Sort(best)
		return best, best != nil
	}
	set := slices.Clone(must)
	for len(set) < size {
		bestP, bestQ := -1, gpunode.SetQuality{}
		for _, p := range rest {
			if slices.Contains(set, p) {
				continue
			}
			q, err := node.Quality(append(slices.Clone(set), p))
			if err == nil && (bestP < 0 || q.Compare(bestQ) > 0) {
				bestP, bestQ = p, q
			}
		}
		set = append(set, bestP)
	}
	slices.Sort(set)
	return set, true
}

func binomial(n, k int) int {
	r := 1
	for i := 1; i <= k; i++ {
		r = r * (n - k + i) / i
		if r > maxCombinations {
			return r
		}
	}
	return r
}
