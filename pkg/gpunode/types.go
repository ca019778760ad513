// Package gpunode is the one model of a GPU node that the device plugin,
// the scheduler plugins and the simulators share: the node's GPUs, the
// pairwise link matrix between them, and the versioned JSON codec of the
// kubegpu.io/gpu-topology node annotation.
package gpunode

// PCIeLevel is the closest common PCIe ancestor of two GPUs, in NVML's
// nvmlGpuTopologyLevel order: smaller is closer.
type PCIeLevel int

const (
	PCIeSameBoard    PCIeLevel = 0  // NVML_TOPOLOGY_INTERNAL: both on one board
	PCIeSingleSwitch PCIeLevel = 10 // NVML_TOPOLOGY_SINGLE
	PCIeMultiSwitch  PCIeLevel = 20 // NVML_TOPOLOGY_MULTIPLE
	PCIeHostBridge   PCIeLevel = 30 // NVML_TOPOLOGY_HOSTBRIDGE
	PCIeSameNUMA     PCIeLevel = 40 // NVML_TOPOLOGY_NODE
	PCIeCrossCPU     PCIeLevel = 50 // NVML_TOPOLOGY_SYSTEM
)

// GPU is one physical GPU as the device plugin discovered it.
type GPU struct {
	Index     int    // NVML index on the node
	UUID      string // NVML UUID, the device ID the kubelet sees
	Product   string // e.g. "NVIDIA A100-SXM4-80GB"
	MemoryMiB int64
	NUMANode  int // -1 when unknown
	PCIBusID  string
	Healthy   bool
	MIG       bool // MIG mode enabled
}

// Link is the connection between two GPUs.
type Link struct {
	NVLinks  int  // number of direct NVLink links between the pair
	NVSwitch bool // both GPUs reach each other through an NVSwitch fabric
	PCIe     PCIeLevel
}

// Node is a node's GPUs and the symmetric link matrix between them;
// Links[i][j] describes GPUs[i] and GPUs[j] (positions, not NVML indices).
//
// After Prepare (Decode and Shape call it) a Node is read-only and safe to
// share between goroutines; call Prepare again after changing Links.
type Node struct {
	GPUs  []GPU
	Links [][]Link

	prep *prepared // set-selection tables built by Prepare; immutable, shared
}
