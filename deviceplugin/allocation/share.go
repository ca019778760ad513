package allocation

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// SlotsPerGPU is how many share slots (kubelet devices of the share
// resource) one GPU is cut into: one per milli, so that a request for
// kubegpu.io/gpu-milli: M is exactly M slots, as the kubelet counts
// devices. A coarser cut would change what the resource's numbers mean.
const SlotsPerGPU = 1000

// slotSep separates the GPU UUID from the slot number in a slot ID; NVML
// UUIDs ("GPU-<hex>-...", "MIG-...") never contain it.
const slotSep = "::"

// SlotID is the device ID of share slot n (0-999) of GPU uuid.
func SlotID(uuid string, n int) string { return uuid + slotSep + strconv.Itoa(n) }

// ParseSlot splits a slot ID into its GPU UUID and slot number.
func ParseSlot(id string) (uuid string, n int, ok bool) {
	uuid, num, ok := strings.Cut(id, slotSep)
	if !ok || uuid == "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n >= SlotsPerGPU || strconv.Itoa(n) != num {
		return "", 0, false
	}
	return uuid, n, true
}

// AnnotatedShare reads a share assignment ("UUID:MILLI") from a pod's
// kubegpu.io/gpu-ids annotation; ok is false for whole-GPU, missing or
// malformed annotations.
func AnnotatedShare(pod *v1.Pod) (uuid string, milli int, ok bool) {
	raw, found := pod.Annotations[contract.AnnotationGPUIDs]
	if !found {
		return "", 0, false
	}
	a, err := contract.ParseGPUIDs(raw)
	if err != nil || !a.Shared() {
		return "", 0, false
	}
	return a.UUIDs[0], a.Milli, true
}

// GPUUsage says which GPUs are taken whole and which carry shares.
type GPUUsage struct {
	Whole  map[string]bool
	Shared map[string]bool
}

// Usage combines the kubelet's assignments with the annotations of the
// live pods on the node: a GPU is whole-taken when a container holds it or
// a pod is annotated with it whole, and shared when a container holds one
// of its slots or a pod is annotated with a share of it. Annotations count
// for waiting pods too, so that neither kind is handed out between the
// scheduler's choice and the other pod's container start.
func Usage(pods []*v1.Pod, inUse InUse) GPUUsage {
	u := GPUUsage{Whole: map[string]bool{}, Shared: map[string]bool{}}
	for id := range inUse.Devices {
		u.Whole[id] = true
	}
	for id := range inUse.Slots {
		if uuid, _, ok := ParseSlot(id); ok {
			u.Shared[uuid] = true
		}
	}
	for _, pod := range pods {
		if !live(pod) {
			continue
		}
		if uuid, _, ok := AnnotatedShare(pod); ok {
			u.Shared[uuid] = true
			continue
		}
		for _, id := range AnnotatedIDs(pod) {
			u.Whole[id] = true
		}
	}
	return u
}

// waitingShare reports whether pod still waits for its share's slots.
func waitingShare(pod *v1.Pod, inUse InUse) bool {
	if !live(pod) || inUse.Claimed[pod.UID] {
		return false
	}
	if !inUse.Known {
		return pod.Status.Phase != v1.PodRunning
	}
	return !inUse.Holders[pod.Namespace+"/"+pod.Name]
}

// shareCandidates are the waiting pods annotated with a share of milli,
// oldest first (the kubelet's admission order).
func shareCandidates(pods []*v1.Pod, inUse InUse, milli int) []*v1.Pod {
	var out []*v1.Pod
	for _, pod := range pods {
		if _, m, ok := AnnotatedShare(pod); ok && m == milli && waitingShare(pod, inUse) {
			out = append(out, pod)
		}
	}
	slices.SortFunc(out, byAge)
	return out
}

// PreferredShare picks size slots out of available for a share request,
// all on one GPU: the GPU of the oldest waiting pod annotated with a share
// of exactly size whose GPU has that many slots free, else (a pod placed
// by another scheduler) the GPU with the most free slots that fits. GPUs
// taken whole are skipped. It returns the slots, where the choice came
// from and the GPU; nil slots when no single GPU fits.
func PreferredShare(node *gpunode.Node, pods []*v1.Pod, inUse InUse, available, mustInclude []string, size int) ([]string, Source, string) {
	if size <= 0 || size > SlotsPerGPU || len(mustInclude) > size {
		return nil, SourceNone, ""
	}
	whole := Usage(pods, inUse).Whole
	free := map[string][]int{}
	for _, id := range available {
		if uuid, n, ok := ParseSlot(id); ok && !whole[uuid] {
			free[uuid] = append(free[uuid], n)
		}
	}
	mustGPU := ""
	for _, id := range mustInclude {
		uuid, _, ok := ParseSlot(id)
		if !ok || (mustGPU != "" && uuid != mustGPU) {
			return nil, SourceNone, "" // a share never spans GPUs
		}
		mustGPU = uuid
	}
	fits := func(uuid string) bool { return len(free[uuid]) >= size && (mustGPU == "" || uuid == mustGPU) }

	gpu, src := "", SourceNone
	for _, pod := range shareCandidates(pods, inUse, size) {
		if uuid, _, _ := AnnotatedShare(pod); fits(uuid) {
			gpu, src = uuid, SourceAnnotation
			break
		}
	}
	if gpu == "" {
		// Node order (else UUID order) breaks ties, so answers are stable.
		order := make([]string, 0, len(free))
		if node != nil {
			for _, g := range node.GPUs {
				if _, ok := free[g.UUID]; ok {
					order = append(order, g.UUID)
				}
			}
		}
		if len(order) != len(free) {
			order = order[:0]
			for uuid := range free {
				order = append(order, uuid)
			}
			slices.Sort(order)
		}
		for _, uuid := range order {
			if fits(uuid) && (gpu == "" || len(free[uuid]) > len(free[gpu])) {
				gpu, src = uuid, SourceMostFree
			}
		}
	}
	if gpu == "" {
		return nil, SourceNone, ""
	}
	out := slices.Clone(mustInclude)
	slots := free[gpu]
	slices.Sort(slots)
	for _, n := range slots {
		if len(out) == size {
			break
		}
		if id := SlotID(gpu, n); !slices.Contains(mustInclude, id) {
			out = append(out, id)
		}
	}
	return out, src, gpu
}

// CheckShare validates the slots the kubelet asked Allocate for: they
// must lie on one GPU, and that GPU must not be taken whole. It returns
// the GPU, how the request compares with the waiting pods annotated with a
// share of that size, and, when honoured, the oldest such pod (the one
// served).
func CheckShare(pods []*v1.Pod, inUse InUse, requested []string) (string, Verdict, *v1.Pod, error) {
	if len(requested) == 0 {
		return "", Unannotated, nil, fmt.Errorf("no share slots requested")
	}
	gpu := ""
	for _, id := range requested {
		uuid, _, ok := ParseSlot(id)
		if !ok {
			return "", Unannotated, nil, fmt.Errorf("%q is not a share slot", id)
		}
		if gpu != "" && uuid != gpu {
			return "", Unannotated, nil, fmt.Errorf("share slots span GPUs %s and %s; a share is of one GPU", gpu, uuid)
		}
		gpu = uuid
	}
	if Usage(pods, inUse).Whole[gpu] {
		return "", Unannotated, nil, fmt.Errorf("GPU %s is taken whole; it cannot carry shares", gpu)
	}
	c := shareCandidates(pods, inUse, len(requested))
	if len(c) == 0 {
		return gpu, Unannotated, nil, nil
	}
	for _, pod := range c {
		if uuid, _, _ := AnnotatedShare(pod); uuid == gpu {
			return gpu, Honoured, pod, nil
		}
	}
	return gpu, Mismatch, nil, nil
}

// CheckWhole refuses whole GPUs that carry shares or are reserved for
// them: the kubelet counts the two resources separately, so only the
// plugin can keep them apart.
func CheckWhole(pods []*v1.Pod, inUse InUse, requested []string) error {
	shared := Usage(pods, inUse).Shared
	for _, id := range requested {
		if shared[id] {
			return fmt.Errorf("GPU %s carries shares; it cannot be taken whole", id)
		}
	}
	return nil
}
