// Package contract holds the names the parts of kubegpu agree on: resource
// names, labels and annotations (see docs/ and DESIGN.md). The parts never
// import each other; they meet through these names on API objects.
package contract

const (
	// ResourceGPU is the default whole-GPU resource name, the same as
	// NVIDIA's device plugin so existing manifests work unchanged.
	ResourceGPU = "nvidia.com/gpu"
	// ResourceGPUMilli is a share of one GPU in thousandths (1-999).
	ResourceGPUMilli = "kubegpu.io/gpu-milli"

	// LabelGPUProduct, LabelGPUMemory and LabelGPUCount are the GPU Feature
	// Discovery compatible node labels (memory in MiB).
	LabelGPUProduct = "nvidia.com/gpu.product"
	LabelGPUMemory  = "nvidia.com/gpu.memory"
	LabelGPUCount   = "nvidia.com/gpu.count"
	// LabelGPUSharing is "true" on nodes whose device plugin advertises
	// ResourceGPUMilli (GPU sharing enabled); absent elsewhere.
	LabelGPUSharing = "kubegpu.io/gpu-sharing"

	// AnnotationTopology is the node annotation with the versioned JSON GPU
	// inventory and link matrix, written by the device plugin.
	AnnotationTopology = "kubegpu.io/gpu-topology"
	// AnnotationGPUIDs is the pod annotation where the scheduler records the
	// GPUs it chose (comma-separated UUIDs) before binding.
	AnnotationGPUIDs = "kubegpu.io/gpu-ids"
	// AnnotationGPUMemoryMin asks for GPUs with at least this much memory
	// (a Kubernetes quantity such as 40Gi).
	AnnotationGPUMemoryMin = "kubegpu.io/gpu-memory-min"

	// LabelGang names a gang; AnnotationGangSize gives its member count and
	// AnnotationGangTimeout how long members wait for each other.
	LabelGang             = "kubegpu.io/gang"
	AnnotationGangSize    = "kubegpu.io/gang-size"
	AnnotationGangTimeout = "kubegpu.io/gang-timeout"

	// SchedulerName is the schedulerName pods use to be placed by kubegpu.
	SchedulerName = "kubegpu-scheduler"
)
