package fake

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// hardware is what NVML needs of a fake machine beyond its layout. The
// layout (GPU count, product names, memory, NUMA nodes, NVLink counts,
// NVSwitch, PCIe levels) comes from gpunode.Shape of the same name, so a
// machine is described once and discovery on the fake returns that Node.
type hardware struct {
	// newServer builds the go-nvml mock server for the GPUs; the GPU
	// names and memory it reports are overwritten from the shape.
	newServer func() *server.Server
	// busIDs are the GPUs' PCI bus numbers (domain 0, device 0, function 0).
	busIDs []int
	// switchLinks is the number of NVLink links every GPU has into the
	// NVSwitch fabric, spread round-robin over switchBuses; 0 without
	// NVSwitch.
	switchLinks int
	switchBuses []int
	// powerMilliwatts is the idle power draw the fake reports.
	powerMilliwatts uint32
}

// shape is a fake machine: its hardware plus the layout from gpunode.
type shape struct {
	hardware
	node *gpunode.Node
	// numa is each GPU's NUMA node.
	numa []int
	// nvlinks[i][j] is the number of direct NVLink links between GPU i and
	// GPU j; nil on machines without direct GPU-GPU NVLink.
	nvlinks [][]int
}

// pcie is the closest common PCIe ancestor of GPUs i and j (i != j); the
// model's levels are NVML's numbers.
func (s shape) pcie(i, j int) nvml.GpuTopologyLevel {
	return nvml.GpuTopologyLevel(s.node.Links[i][j].PCIe)
}

// shapeOf joins machine name's hardware with its gpunode layout.
func shapeOf(name string) (shape, error) {
	hw, ok := machines[name]
	if !ok {
		return shape{}, fmt.Errorf("no fake hardware for %q", name)
	}
	node, err := gpunode.Shape(name)
	if err != nil {
		return shape{}, fmt.Errorf("fake machine %q: %w", name, err)
	}
	n := len(node.GPUs)
	if len(hw.busIDs) != n {
		return shape{}, fmt.Errorf("fake machine %q: %d bus IDs for %d GPUs", name, len(hw.busIDs), n)
	}
	s := shape{hardware: hw, node: node, numa: make([]int, n)}
	direct := false
	onSwitch := false
	for i, g := range node.GPUs {
		s.numa[i] = g.NUMANode
		for j := range n {
			direct = direct || node.Links[i][j].NVLinks > 0
			onSwitch = onSwitch || node.Links[i][j].NVSwitch
		}
	}
	if onSwitch != (hw.switchLinks > 0) {
		return shape{}, fmt.Errorf("fake machine %q: NVSwitch in the shape is %v but the hardware has %d switch links", name, onSwitch, hw.switchLinks)
	}
	if direct {
		s.nvlinks = make([][]int, n)
		for i := range n {
			s.nvlinks[i] = make([]int, n)
			for j := range n {
				s.nvlinks[i][j] = node.Links[i][j].NVLinks
			}
		}
	}
	return s, nil
}

// GPU models the go-nvml mocks lack (names and memory come from the shape).
var (
	teslaV100SXM2 = gpus.Config{
		Architecture: nvml.DEVICE_ARCH_VOLTA,
		Brand:        nvml.BRAND_TESLA,
		CudaMajor:    7,
		CudaMinor:    0,
		PciDeviceId:  0x1DB510DE, // V100-SXM2-32GB
	}
	nvidiaL4 = gpus.Config{
		Architecture: nvml.DEVICE_ARCH_ADA,
		Brand:        nvml.BRAND_NVIDIA,
		CudaMajor:    8,
		CudaMinor:    9,
		PciDeviceId:  0x27B810DE,
	}
	nvidiaL40S = gpus.Config{
		Architecture: nvml.DEVICE_ARCH_ADA,
		Brand:        nvml.BRAND_NVIDIA,
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

// machines are the fake machines by name (the NAME in --nvml=fake:NAME).
var machines = map[string]hardware{
	// DGX A100: 12 NVLink links per GPU into 6 NVSwitches.
	"dgx-a100": {
		newServer: func() *server.Server {
			return dgxa100.NewWithGPUs(gpus.Multiple(8, gpus.A100_SXM4_80GB)...)
		},
		busIDs:          []int{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd},
		switchLinks:     12,
		switchBuses:     []int{0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9},
		powerMilliwatts: 62000,
	},
	// DGX H100: 18 NVLink links per GPU into 4 NVSwitches (5+4+4+5 on the
	// real board; round-robin here).
	"dgx-h100": {
		newServer:       dgxh100.New,
		busIDs:          []int{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb},
		switchLinks:     18,
		switchBuses:     []int{0x05, 0x06, 0x07, 0x08},
		powerMilliwatts: 71000,
	},
	// DGX-1 with V100: the hybrid cube mesh is gpunode's.
	"dgx1-v100": {
		newServer:       newServer(teslaV100SXM2, 8),
		busIDs:          []int{0x06, 0x07, 0x0a, 0x0b, 0x85, 0x86, 0x89, 0x8a},
		powerMilliwatts: 43000,
	},
	"pcie-4xl4": {
		newServer:       newServer(nvidiaL4, 4),
		busIDs:          []int{0x01, 0x02, 0x41, 0x42},
		powerMilliwatts: 16000,
	},
	"pcie-8x-2socket": {
		newServer:       newServer(nvidiaL40S, 8),
		busIDs:          []int{0x17, 0x18, 0x3a, 0x3b, 0x98, 0x99, 0xb1, 0xb2},
		powerMilliwatts: 35000,
	},
}
