package gpupack

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// maxGPUMemoryMin bounds kubegpu.io/gpu-memory-min (1 PiB).
var maxGPUMemoryMin = resource.MustParse("1Pi")

// request is what a pod asks of GPUs, parsed once per scheduling cycle.
type request struct {
	whole     int   // exclusive GPUs
	milli     int   // share of one GPU, 1-999; 0 when whole
	memoryMiB int64 // minimum memory per GPU; 0 = any
	memoryStr string
	cpuMilli  int64  // the pod's CPU request, for the fragmentation mix
	memReqMiB int64  // the pod's memory request, for the fragmentation mix
	models    string // GPU products the pod's node affinity allows ("|"-joined, sorted); "" = any
	// frag is the request mix of this cycle (set by PreFilter), which
	// fitShare uses to pick the GPU; nil falls back to the tightest fit.
	frag *fragModel
}

func (r request) wantsGPU() bool { return r.whole > 0 || r.milli > 0 }

// gpuMilli is the request in milli-GPU.
func (r request) gpuMilli() int {
	if r.milli > 0 {
		return r.milli
	}
	return r.whole * fullGPU
}

// parseRequest reads the pod's GPU resources (effective requests, as the
// kubelet computes them: init containers and sidecars included) and the
// memory annotation. Errors name the field so the pod's Unschedulable
// condition tells the user what to fix.
func parseRequest(pod *v1.Pod, args *Args) (request, error) {
	reqs := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	var r request
	if q, ok := reqs[v1.ResourceName(args.ResourceName)]; ok {
		n, ok := q.AsInt64()
		if !ok || n < 0 || n > 64 {
			return request{}, fmt.Errorf("%s: %s is not a whole number of GPUs (0-64)", args.ResourceName, q.String())
		}
		r.whole = int(n)
	}
	if q, ok := reqs[v1.ResourceName(args.SharedResourceName)]; ok {
		m, ok := q.AsInt64()
		if !ok || m < 1 || m > 999 {
			return request{}, fmt.Errorf("%s: %s is not a share of one GPU in thousandths (1-999)", args.SharedResourceName, q.String())
		}
		r.milli = int(m)
	}
	if r.whole > 0 && r.milli > 0 {
		return request{}, fmt.Errorf("pod asks for both %s and %s; use one", args.ResourceName, args.SharedResourceName)
	}
	if q, ok := reqs[v1.ResourceCPU]; ok {
		r.cpuMilli = q.MilliValue()
	}
	if q, ok := reqs[v1.ResourceMemory]; ok {
		r.memReqMiB = q.Value() >> 20
	}
	r.models = acceptedProducts(pod)
	if s, ok := pod.Annotations[contract.AnnotationGPUMemoryMin]; ok {
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return request{}, fmt.Errorf("annotation %s=%q: %w", contract.AnnotationGPUMemoryMin, s, err)
		}
		if q.Sign() <= 0 {
			return request{}, fmt.Errorf("annotation %s=%q: must be positive", contract.AnnotationGPUMemoryMin, s)
		}
		// Bounded so the rounding below cannot overflow: 8Ei once wrapped
		// to a negative floor that every GPU met (found by
		// FuzzParseRequest).
		if q.Cmp(maxGPUMemoryMin) > 0 {
			return request{}, fmt.Errorf("annotation %s=%q: more than %s, which no GPU has", contract.AnnotationGPUMemoryMin, s, maxGPUMemoryMin.String())
		}
		r.memoryMiB = (q.Value() + (1<<20 - 1)) >> 20
		r.memoryStr = s
	}
	return r, nil
}

// acceptedProducts reads the GPU products a pod's required node affinity
// allows (nvidia.com/gpu.product In ...); "" when any product will do.
// Terms are ORed, so a term without the key allows any product.
func acceptedProducts(pod *v1.Pod) string {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	var out []string
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		found := false
		for _, e := range t.MatchExpressions {
			if e.Key == contract.LabelGPUProduct && e.Operator == v1.NodeSelectorOpIn {
				out = append(out, e.Values...)
				found = true
			}
		}
		if !found {
			return ""
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), "|")
}
