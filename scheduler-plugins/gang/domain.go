package gang

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	fwk "k8s.io/kube-scheduler/framework"
)

// nodeCap is one node as the gang logic sees it: its labels and how many
// more members of the gang fit on its free GPUs.
type nodeCap struct {
	name   string
	labels map[string]string
	slots  int
}

// domain is one network domain: the nodes whose label key has value.
type domain struct {
	key, value string
}

func (d *domain) String() string {
	if d == nil {
		return "cluster"
	}
	return fmt.Sprintf("%s=%s", d.key, d.value)
}

func (d *domain) contains(labels map[string]string) bool {
	return d == nil || labels[d.key] == d.value
}

// nodeCaps counts, per node the pod may run on, how many members asking
// for perMember GPUs of resource still fit, from the snapshot: allocatable
// minus requested, where requested includes assumed (reserved) pods.
func nodeCaps(infos []fwk.NodeInfo, pod *v1.Pod, resource v1.ResourceName, perMember int64) []nodeCap {
	affinity := nodeaffinity.GetRequiredNodeAffinity(pod)
	caps := make([]nodeCap, 0, len(infos))
	for _, info := range infos {
		node := info.Node()
		if node == nil || node.Spec.Unschedulable {
			continue
		}
		if ok, err := affinity.Match(node); err != nil || !ok {
			continue
		}
		c := nodeCap{name: node.Name, labels: node.Labels}
		if perMember > 0 {
			free := info.GetAllocatable().GetScalarResources()[resource] - info.GetRequested().GetScalarResources()[resource]
			c.slots = int(max(free, 0) / perMember)
		}
		caps = append(caps, c)
	}
	return caps
}

func totalSlots(caps []nodeCap) int {
	n := 0
	for _, c := range caps {
		n += c.slots
	}
	return n
}

// chooseDomain returns the smallest domain that can hold need more
// members whole, nil when no domain can. keys run from the largest
// domain to the smallest. Members already placed pin the choice: the
// domain must contain every node in placed (their labels). Among the
// domains of the smallest level that fit, the tightest fit wins (fewest
// free slots, then the lowest value), so larger holes stay open for
// larger gangs.
func chooseDomain(keys []string, caps []nodeCap, need int, placed []map[string]string) *domain {
	for i := len(keys) - 1; i >= 0; i-- {
		key := keys[i]
		slots := map[string]int{}
		for _, c := range caps {
			if v, ok := c.labels[key]; ok {
				slots[v] += c.slots
			}
		}
		var best *domain
		bestSlots := 0
	values:
		for v, s := range slots {
			if s < need {
				continue
			}
			for _, l := range placed {
				if l[key] != v {
					continue values
				}
			}
			if best == nil || s < bestSlots || (s == bestSlots && v < best.value) {
				best, bestSlots = &domain{key: key, value: v}, s
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// affinityScore rates a node by how close it sits to the nodes of members
// already placed: 100 on such a node, less for each larger shared domain,
// 0 when it shares none.
func affinityScore(keys []string, node map[string]string, nodeName string, placed map[string]map[string]string) int64 {
	if _, ok := placed[nodeName]; ok {
		return fwk.MaxNodeScore
	}
	for i := len(keys) - 1; i >= 0; i-- {
		v, ok := node[keys[i]]
		if !ok {
			continue
		}
		for _, l := range placed {
			if l[keys[i]] == v {
				return fwk.MaxNodeScore * int64(i+1) / int64(len(keys)+1)
			}
		}
	}
	return 0
}
