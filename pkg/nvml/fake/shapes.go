package fake

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// shape is the hardware a fake machine imitates: what NVML would report
// about its GPUs and how they are wired.
type shape struct {
	// newServer builds the go-nvml mock server for the GPUs.
	newServer func() *server.Server
	// busIDs are the GPUs' PCI bus numbers (domain 0, device 0, function 0).
	busIDs []int
	// numa is each GPU's NUMA node.
	numa []int
	// nvlinks[i][j] is the number of direct NVLink links between GPU i and
	// GPU j; nil on machines without direct GPU-GPU NVLink.
	nvlinks [][]int
	// switchLinks is the number of NVLink links every GPU has into the
	// NVSwitch fabric, spread round-robin over switchBuses; 0 without
	// NVSwitch.
	switchLinks int
	switchBuses []int
	// pcie is the closest common PCIe ancestor of GPUs i and j (i != j).
	pcie func(i, j int) nvml.GpuTopologyLevel
	// powerMilliwatts is the idle power draw the fake reports.
	powerMilliwatts uint32
}

// GPU models the go-nvml mocks lack. Memory sizes are what NVML reports as
// the total framebuffer on these boards (MiB).
var (
	teslaV100SXM216GB = gpus.Config{
		Name:         "Tesla V100-SXM2-16GB",
		Architecture: nvml.DEVICE_ARCH_VOLTA,
		Brand:        nvml.BRAND_TESLA,
		MemoryMB:     16160,
		CudaMajor:    7,
		CudaMinor:    0,
		PciDeviceId:  0x1DB110DE,
	}
	nvidiaL4 = gpus.Config{
		Name:         "NVIDIA L4",
		Architecture: nvml.DEVICE_ARCH_ADA,
		Brand:        nvml.BRAND_NVIDIA,
		MemoryMB:     23034,
		CudaMajor:    8,
		CudaMinor:    9,
		PciDeviceId:  0x27B810DE,
	}
	nvidiaL40S = gpus.Config{
		Name:         "NVIDIA L40S",
		Architecture: nvml.DEVICE_ARCH_ADA,
		Brand:        nvml.BRAND_NVIDIA,
		MemoryMB:     46068,
		CudaMajor:    8,
		CudaMinor:    9,
		PciDeviceId:  0x26B910DE,
	}
)

// newServer builds a mock server with the same driver versions the go-nvml
// DGX mocks use, for the GPU models above.
func newServer(cfg gpus.Config, n int) func() *server.Server {
	return func() *server.Server {
		return server.NewServerWithGPUs("550.54.15", "12.550.54.15", 12040, gpus.Multiple(n, cfg)...)
	}
}

// socketOf4 puts GPUs 0-3 on socket 0 and 4-7 on socket 1.
func socketOf4(i int) int { return i / 4 }

// pairedPCIe is the common layout of 8-GPU two-socket servers: GPU pairs
// (0,1) (2,3) (4,5) (6,7) share a PCIe switch, pairs on one socket meet at
// sameSocket, and the sockets meet over the CPU interconnect.
func pairedPCIe(pair, sameSocket nvml.GpuTopologyLevel) func(i, j int) nvml.GpuTopologyLevel {
	return func(i, j int) nvml.GpuTopologyLevel {
		switch {
		case i/2 == j/2:
			return pair
		case socketOf4(i) == socketOf4(j):
			return sameSocket
		default:
			return nvml.TOPOLOGY_SYSTEM
		}
	}
}

// dgx1Links is the DGX-1 (V100) hybrid cube mesh as NVIDIA documents it
// (nvidia-smi topo -m): every GPU has 6 NVLink links; each quad 0-3 and 4-7
// is fully connected and GPU i links to GPU i+4.
var dgx1Links = [][]int{
	//0  1  2  3  4  5  6  7
	{0, 1, 1, 2, 2, 0, 0, 0}, // GPU0
	{1, 0, 2, 1, 0, 2, 0, 0}, // GPU1
	{1, 2, 0, 2, 0, 0, 1, 0}, // GPU2
	{2, 1, 2, 0, 0, 0, 0, 1}, // GPU3
	{2, 0, 0, 0, 0, 1, 1, 2}, // GPU4
	{0, 2, 0, 0, 1, 0, 2, 1}, // GPU5
	{0, 0, 1, 0, 1, 2, 0, 2}, // GPU6
	{0, 0, 0, 1, 2, 1, 2, 0}, // GPU7
}

// shapes are the fake machines by name (the NAME in --nvml=fake:NAME).
var shapes = map[string]shape{
	// DGX A100: 8x A100-SXM4-80GB, 12 NVLink links each into 6 NVSwitches.
	// GPU pairs sit behind two levels of PCIe switches (PXB); the two AMD
	// sockets are simplified to one NUMA node each.
	"dgx-a100": {
		newServer: func() *server.Server {
			return dgxa100.NewWithGPUs(gpus.Multiple(8, gpus.A100_SXM4_80GB)...)
		},
		busIDs:          []int{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd},
		numa:            []int{0, 0, 0, 0, 1, 1, 1, 1},
		switchLinks:     12,
		switchBuses:     []int{0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9},
		pcie:            pairedPCIe(nvml.TOPOLOGY_MULTIPLE, nvml.TOPOLOGY_NODE),
		powerMilliwatts: 62000,
	},
	// DGX H100: 8x H100 80GB HBM3, 18 NVLink links each into 4 NVSwitches
	// (5+4+4+5 on the real board; round-robin here), one PCIe switch per
	// GPU, two sockets.
	"dgx-h100": {
		newServer:       dgxh100.New,
		busIDs:          []int{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb},
		numa:            []int{0, 0, 0, 0, 1, 1, 1, 1},
		switchLinks:     18,
		switchBuses:     []int{0x05, 0x06, 0x07, 0x08},
		pcie:            pairedPCIe(nvml.TOPOLOGY_NODE, nvml.TOPOLOGY_NODE),
		powerMilliwatts: 71000,
	},
	// DGX-1 with V100: hybrid cube mesh, pairs behind one PCIe switch, the
	// quads on one Xeon host bridge each.
	"dgx1-v100": {
		newServer:       newServer(teslaV100SXM216GB, 8),
		busIDs:          []int{0x06, 0x07, 0x0a, 0x0b, 0x85, 0x86, 0x89, 0x8a},
		numa:            []int{0, 0, 0, 0, 1, 1, 1, 1},
		nvlinks:         dgx1Links,
		pcie:            pairedPCIe(nvml.TOPOLOGY_SINGLE, nvml.TOPOLOGY_HOSTBRIDGE),
		powerMilliwatts: 43000,
	},
	// 4x L4 on one socket: (0,1) and (2,3) each behind one PCIe switch, the
	// two switches under the same host bridge. No NVLink.
	"pcie-4xl4": {
		newServer: newServer(nvidiaL4, 4),
		busIDs:    []int{0x01, 0x02, 0x41, 0x42},
		numa:      []int{0, 0, 0, 0},
		pcie: func(i, j int) nvml.GpuTopologyLevel {
			if i/2 == j/2 {
				return nvml.TOPOLOGY_SINGLE
			}
			return nvml.TOPOLOGY_HOSTBRIDGE
		},
		powerMilliwatts: 16000,
	},
	// 8x L40S on two sockets: pairs behind PCIe switches, switches on one
	// socket on different root ports (NODE), sockets across SYS. No NVLink.
	"pcie-8x-2socket": {
		newServer:       newServer(nvidiaL40S, 8),
		busIDs:          []int{0x17, 0x18, 0x3a, 0x3b, 0x98, 0x99, 0xb1, 0xb2},
		numa:            []int{0, 0, 0, 0, 1, 1, 1, 1},
		pcie:            pairedPCIe(nvml.TOPOLOGY_SINGLE, nvml.TOPOLOGY_NODE),
		powerMilliwatts: 35000,
	},
}
