package gpunode

import (
	"fmt"
	"hash/crc32"
	"slices"
	"sort"
)

// shape describes a machine by its layout, so that every machine is a few
// numbers instead of a hand-written 8x8 matrix.
type shape struct {
	product   string
	memoryMiB int64
	gpus      int
	sockets   int // GPUs are split evenly over CPU sockets, in index order
	perSwitch int // GPUs under one PCIe switch, in index order
	// switchPCIe and socketPCIe are the PCIe levels NVML reports for GPUs
	// under one switch and for GPUs on one socket under different
	// switches; zero means PCIeSingleSwitch and PCIeSameNUMA.
	switchPCIe, socketPCIe PCIeLevel
	// NVSwitch planes: GPUs [0,plane), [plane,2*plane)... share a fabric;
	// 0 means no NVSwitch. Pairs on a fabric have no direct NVLinks.
	plane   int
	nvlinks [][3]int // direct NVLinks: gpu a, gpu b, links
}

// dgx1NVLinks is NVIDIA's published DGX-1 (V100) hybrid cube mesh: two
// fully connected quads 0-3 and 4-7 with one or two links per pair, and
// cross links i <-> i+4.
var dgx1NVLinks = [][3]int{
	{0, 1, 1}, {0, 2, 1}, {0, 3, 2}, {0, 4, 2},
	{1, 2, 2}, {1, 3, 1}, {1, 5, 2},
	{2, 3, 2}, {2, 6, 1},
	{3, 7, 1},
	{4, 5, 1}, {4, 6, 1}, {4, 7, 2},
	{5, 6, 2}, {5, 7, 1},
	{6, 7, 2},
}

// Memory sizes are the framebuffer totals nvidia-smi reports on these
// boards (MiB), not the marketing sizes.
var shapes = map[string]shape{
	// DGX A100: GPU pairs behind two levels of PCIe switches (PXB); the
	// AMD sockets simplified to one NUMA node each.
	"dgx-a100": {product: "NVIDIA A100-SXM4-80GB", memoryMiB: 81920, gpus: 8, sockets: 2, perSwitch: 2, switchPCIe: PCIeMultiSwitch, plane: 8},
	// DGX H100: one PCIe switch per GPU, so GPUs meet at the socket.
	"dgx-h100": {product: "NVIDIA H100 80GB HBM3", memoryMiB: 81559, gpus: 8, sockets: 2, perSwitch: 1, plane: 8},
	// DGX-1: pairs behind one PCIe switch, each quad on one Xeon host bridge.
	"dgx1-v100":    {product: "Tesla V100-SXM2-32GB", memoryMiB: 32510, gpus: 8, sockets: 2, perSwitch: 2, socketPCIe: PCIeHostBridge, nvlinks: dgx1NVLinks},
	"dgx2-v100":    {product: "Tesla V100-SXM3-32GB", memoryMiB: 32510, gpus: 16, sockets: 2, perSwitch: 2, plane: 16},
	"nvswitch-2x8": {product: "NVIDIA A100-SXM4-80GB", memoryMiB: 81920, gpus: 16, sockets: 2, perSwitch: 2, plane: 8},
	// 4x L4: two PCIe switches under the same host bridge.
	"pcie-4xl4":        {product: "NVIDIA L4", memoryMiB: 23034, gpus: 4, sockets: 1, perSwitch: 2, socketPCIe: PCIeHostBridge},
	"pcie-8x-2socket":  {product: "NVIDIA L40S", memoryMiB: 46068, gpus: 8, sockets: 2, perSwitch: 2},
	"pcie-16x-2socket": {product: "NVIDIA L4", memoryMiB: 23034, gpus: 16, sockets: 2, perSwitch: 2},
}

// ShapeNames lists the machine shapes Shape knows, sorted.
func ShapeNames() []string {
	names := make([]string, 0, len(shapes))
	for name := range shapes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Shape returns a prepared Node of a known machine shape, for fake NVML
// backends, tests and simulators, so they all share one definition of each
// machine's links:
//
//	dgx-a100, dgx-h100   8 GPUs on NVSwitch
//	dgx1-v100            8 GPUs, NVLink hybrid cube mesh
//	dgx2-v100            16 GPUs on one NVSwitch fabric (NV6)
//	nvswitch-2x8         16 GPUs, two 8-GPU NVSwitch planes, PCIe between
//	pcie-4xl4            4 L4 on one socket, pairs under a PCIe switch
//	pcie-8x-2socket      8 L40S on two sockets, pairs under a PCIe switch
//	pcie-16x-2socket     16 L4 on two sockets, pairs under a PCIe switch
//
// PCIe levels are single-switch (or the shape's switch level) for GPUs
// under the same switch, same-numa (or the shape's socket level) within a
// socket and cross-cpu otherwise. The fake NVML machines (pkg/nvml/fake)
// are built from these shapes, so discovery on a fake returns this Node. UUIDs are
// derived from the shape name and index; fakes of several nodes should
// rewrite them (and need not Prepare again: links are unchanged).
func Shape(name string) (*Node, error) {
	s, ok := shapes[name]
	if !ok {
		return nil, fmt.Errorf("unknown gpu node shape %q (known: %v)", name, ShapeNames())
	}
	return s.node(name)
}

func (s shape) node(name string) (*Node, error) {
	perSocket := s.gpus / s.sockets
	switchPCIe, socketPCIe := PCIeSingleSwitch, PCIeSameNUMA
	if s.switchPCIe != 0 {
		switchPCIe = s.switchPCIe
	}
	if s.socketPCIe != 0 {
		socketPCIe = s.socketPCIe
	}
	n := &Node{GPUs: make([]GPU, s.gpus), Links: make([][]Link, s.gpus)}
	h := crc32.ChecksumIEEE([]byte(name))
	for i := range s.gpus {
		n.GPUs[i] = GPU{
			Index:     i,
			UUID:      fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", h, i),
			Product:   s.product,
			MemoryMiB: s.memoryMiB,
			NUMANode:  i / perSocket,
			PCIBusID:  fmt.Sprintf("00000000:%02X:00.0", 0x07+0x0C*i),
			Healthy:   true,
		}
		n.Links[i] = make([]Link, s.gpus)
		for j := range s.gpus {
			if i == j {
				continue
			}
			l := &n.Links[i][j]
			switch {
			case i/s.perSwitch == j/s.perSwitch:
				l.PCIe = switchPCIe
			case i/perSocket == j/perSocket:
				l.PCIe = socketPCIe
			default:
				l.PCIe = PCIeCrossCPU
			}
			if s.plane > 0 && i/s.plane == j/s.plane {
				l.NVSwitch = true
			}
		}
	}
	for _, nl := range s.nvlinks {
		a, b := nl[0], nl[1]
		n.Links[a][b].NVLinks, n.Links[b][a].NVLinks = nl[2], nl[2]
	}
	if err := n.Prepare(); err != nil {
		return nil, fmt.Errorf("shape %q: %w", name, err)
	}
	return n, nil
}

// MustShape is Shape for tests and fixed tables; it panics on an unknown name.
func MustShape(name string) *Node {
	n, err := Shape(name)
	if err != nil {
		panic(err)
	}
	return n
}

// Clone returns a deep copy of n sharing only the immutable prepared tables.
func (n *Node) Clone() *Node {
	if n == nil {
		return nil
	}
	c := &Node{GPUs: slices.Clone(n.GPUs), Links: make([][]Link, len(n.Links)), prep: n.prep}
	for i, row := range n.Links {
		c.Links[i] = slices.Clone(row)
	}
	return c
}
