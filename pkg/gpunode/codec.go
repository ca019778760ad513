package gpunode

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Version is the version of the kubegpu.io/gpu-topology annotation format
// that Encode writes and Decode reads (see docs/topology-annotation.md).
const Version = 1

// Limits that keep the annotation small and the selection code bounded.
const (
	MaxGPUs        = 64      // GPUs per node
	MaxNVLinks     = 64      // NVLinks per pair
	maxAnnotation  = 1 << 20 // bytes; the API server caps all annotations at 256 KiB anyway
	maxUUIDLen     = 128
	maxProductLen  = 256
	maxPCIBusIDLen = 64
)

var (
	// ErrInvalid is wrapped by every validation error of a Node or annotation.
	ErrInvalid = errors.New("invalid gpu topology")
	// ErrVersion is wrapped when the annotation has a version Decode does not know.
	ErrVersion = errors.New("unsupported gpu topology version")
)

var pcieNames = map[PCIeLevel]string{
	PCIeSameBoard:    "same-board",
	PCIeSingleSwitch: "single-switch",
	PCIeMultiSwitch:  "multi-switch",
	PCIeHostBridge:   "host-bridge",
	PCIeSameNUMA:     "same-numa",
	PCIeCrossCPU:     "cross-cpu",
}

// String is the annotation spelling of the level, e.g. "single-switch".
func (l PCIeLevel) String() string {
	if s, ok := pcieNames[l]; ok {
		return s
	}
	return fmt.Sprintf("PCIeLevel(%d)", int(l))
}

// Valid reports whether l is one of the known NVML topology levels.
func (l PCIeLevel) Valid() bool {
	_, ok := pcieNames[l]
	return ok
}

// ParsePCIeLevel is the inverse of PCIeLevel.String.
func ParsePCIeLevel(s string) (PCIeLevel, error) {
	for l, name := range pcieNames {
		if name == s {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown pcie level %q", ErrInvalid, s)
}

// Validate checks everything Encode and Decode rely on: at most MaxGPUs
// GPUs, unique non-negative indices and unique non-empty UUIDs, sane memory
// and NUMA values, a square symmetric link matrix with known PCIe levels.
// The diagonal Links[i][i] is not used and not checked.
func (n *Node) Validate() error {
	if n == nil {
		return fmt.Errorf("%w: nil node", ErrInvalid)
	}
	if len(n.GPUs) > MaxGPUs {
		return fmt.Errorf("%w: %d gpus, at most %d", ErrInvalid, len(n.GPUs), MaxGPUs)
	}
	indices := make(map[int]int, len(n.GPUs))
	uuids := make(map[string]int, len(n.GPUs))
	for i, g := range n.GPUs {
		switch {
		case g.Index < 0:
			return fmt.Errorf("%w: gpu %d: negative index %d", ErrInvalid, i, g.Index)
		case g.UUID == "":
			return fmt.Errorf("%w: gpu %d: empty uuid", ErrInvalid, i)
		case len(g.UUID) > maxUUIDLen, len(g.Product) > maxProductLen, len(g.PCIBusID) > maxPCIBusIDLen:
			return fmt.Errorf("%w: gpu %d: uuid, product or pci bus id too long", ErrInvalid, i)
		case g.MemoryMiB < 0:
			return fmt.Errorf("%w: gpu %d: negative memory %d MiB", ErrInvalid, i, g.MemoryMiB)
		case g.NUMANode < -1:
			return fmt.Errorf("%w: gpu %d: numa node %d (use -1 for unknown)", ErrInvalid, i, g.NUMANode)
		}
		if j, dup := indices[g.Index]; dup {
			return fmt.Errorf("%w: gpus %d and %d have the same index %d", ErrInvalid, j, i, g.Index)
		}
		indices[g.Index] = i
		if j, dup := uuids[g.UUID]; dup {
			return fmt.Errorf("%w: gpus %d and %d have the same uuid %q", ErrInvalid, j, i, g.UUID)
		}
		uuids[g.UUID] = i
	}
	if len(n.Links) != len(n.GPUs) {
		return fmt.Errorf("%w: link matrix has %d rows for %d gpus", ErrInvalid, len(n.Links), len(n.GPUs))
	}
	for i, row := range n.Links {
		if len(row) != len(n.GPUs) {
			return fmt.Errorf("%w: link matrix row %d has %d entries for %d gpus", ErrInvalid, i, len(row), len(n.GPUs))
		}
	}
	for i := range n.Links {
		for j := i + 1; j < len(n.Links); j++ {
			l := n.Links[i][j]
			if l != n.Links[j][i] {
				return fmt.Errorf("%w: links %d-%d and %d-%d differ", ErrInvalid, i, j, j, i)
			}
			if l.NVLinks < 0 || l.NVLinks > MaxNVLinks {
				return fmt.Errorf("%w: link %d-%d: %d nvlinks, want 0-%d", ErrInvalid, i, j, l.NVLinks, MaxNVLinks)
			}
			if !l.PCIe.Valid() {
				return fmt.Errorf("%w: link %d-%d: unknown pcie level %d", ErrInvalid, i, j, int(l.PCIe))
			}
		}
	}
	return nil
}

// Equal reports whether two nodes have the same GPUs and the same links
// (off the diagonal, which is unused).
func (n *Node) Equal(o *Node) bool {
	if n == nil || o == nil {
		return n == o
	}
	if !slices.Equal(n.GPUs, o.GPUs) || len(n.Links) != len(o.Links) {
		return false
	}
	for i := range n.Links {
		if len(n.Links[i]) != len(o.Links[i]) {
			return false
		}
		for j := range n.Links[i] {
			if i != j && n.Links[i][j] != o.Links[i][j] {
				return false
			}
		}
	}
	return true
}

// The wire form. Field names are part of the annotation contract.
type wireNode struct {
	Version int        `json:"version"`
	GPUs    []wireGPU  `json:"gpus"`
	Links   []wireLink `json:"links"`
}

type wireGPU struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid"`
	Product   string `json:"product"`
	MemoryMiB int64  `json:"memoryMiB"`
	NUMANode  int    `json:"numaNode"`
	PCIBusID  string `json:"pciBusID,omitempty"`
	Healthy   bool   `json:"healthy"`
	MIG       bool   `json:"mig,omitempty"`
}

// wireLink is one unordered pair; A and B are positions in "gpus".
type wireLink struct {
	A        int    `json:"a"`
	B        int    `json:"b"`
	NVLinks  int    `json:"nvlinks,omitempty"`
	NVSwitch bool   `json:"nvswitch,omitempty"`
	PCIe     string `json:"pcie"`
}

// Encode validates n and writes the kubegpu.io/gpu-topology annotation
// value. The output is deterministic: GPUs in Node order, pairs (a<b) in
// row-major order.
func Encode(n *Node) (string, error) {
	if err := n.Validate(); err != nil {
		return "", fmt.Errorf("encode: %w", err)
	}
	w := wireNode{Version: Version, GPUs: make([]wireGPU, len(n.GPUs)), Links: []wireLink{}}
	for i, g := range n.GPUs {
		w.GPUs[i] = wireGPU(g)
	}
	for i := range n.GPUs {
		for j := i + 1; j < len(n.GPUs); j++ {
			l := n.Links[i][j]
			w.Links = append(w.Links, wireLink{A: i, B: j, NVLinks: l.NVLinks, NVSwitch: l.NVSwitch, PCIe: l.PCIe.String()})
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("encode: %w", err)
	}
	return string(b), nil
}

// Decode parses and validates an annotation value and returns a prepared
// Node (see Prepare). Unknown JSON fields are ignored so that optional
// fields can be added within version 1; any change of meaning bumps the
// version, which Decode then rejects with ErrVersion.
func Decode(s string) (*Node, error) {
	if len(s) > maxAnnotation {
		return nil, fmt.Errorf("decode: %w: annotation is %d bytes, at most %d", ErrInvalid, len(s), maxAnnotation)
	}
	// Read the version first so that a future format gets a version error,
	// not a confusing field error.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("decode: %w: %w", ErrInvalid, err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("decode: %w: version %d, want %d", ErrVersion, v.Version, Version)
	}
	var w wireNode
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return nil, fmt.Errorf("decode: %w: %w", ErrInvalid, err)
	}
	n, err := fromWire(&w)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := n.Prepare(); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return n, nil
}

func fromWire(w *wireNode) (*Node, error) {
	g := len(w.GPUs)
	if g > MaxGPUs {
		return nil, fmt.Errorf("%w: %d gpus, at most %d", ErrInvalid, g, MaxGPUs)
	}
	n := &Node{GPUs: make([]GPU, g), Links: make([][]Link, g)}
	for i, wg := range w.GPUs {
		n.GPUs[i] = GPU(wg)
	}
	seen := make([][]bool, g)
	for i := range n.Links {
		n.Links[i] = make([]Link, g)
		seen[i] = make([]bool, g)
	}
	for k, wl := range w.Links {
		a, b := wl.A, wl.B
		if a < 0 || b < 0 || a >= g || b >= g {
			return nil, fmt.Errorf("%w: link %d: pair %d-%d out of range for %d gpus", ErrInvalid, k, a, b, g)
		}
		if a == b {
			return nil, fmt.Errorf("%w: link %d: gpu %d linked to itself", ErrInvalid, k, a)
		}
		if seen[a][b] {
			return nil, fmt.Errorf("%w: link %d: pair %d-%d given twice", ErrInvalid, k, a, b)
		}
		level, err := ParsePCIeLevel(wl.PCIe)
		if err != nil {
			return nil, fmt.Errorf("link %d: pair %d-%d: %w", k, a, b, err)
		}
		l := Link{NVLinks: wl.NVLinks, NVSwitch: wl.NVSwitch, PCIe: level}
		n.Links[a][b], n.Links[b][a] = l, l
		seen[a][b], seen[b][a] = true, true
	}
	for a := range g {
		for b := a + 1; b < g; b++ {
			if !seen[a][b] {
				return nil, fmt.Errorf("%w: missing link for pair %d-%d", ErrInvalid, a, b)
			}
		}
	}
	return n, n.Validate()
}
