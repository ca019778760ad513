// Package sim is the packing simulator: it replays the Alibaba GPU
// cluster trace (openb, published with Weng et al., "Beware of
// Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
// Gradient Descent", USENIX ATC'23) through placement policies, among
// them the GPUPack plugin's own PreFilter/Filter/Score/Reserve code, and
// measures the share of GPU capacity each keeps allocated as demand
// arrives.
package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Node is one row of openb_node_list_gpu_node.csv.
type Node struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	GPUs      int
	Model     string
}

// Pod is one row of an openb_pod_list_*.csv.
type Pod struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	// NumGPU is the GPU count; with NumGPU 1 and GPUMilli below 1000 the
	// pod asks for a share of one GPU, otherwise for whole GPUs.
	NumGPU   int
	GPUMilli int
	// Spec lists the GPU models the pod accepts; empty = any.
	Spec []string
}

// Share reports whether the pod asks for part of one GPU.
func (p *Pod) Share() bool { return p.NumGPU == 1 && p.GPUMilli < 1000 }

// GPURequest is the pod's requested milli-GPU (num_gpu x gpu_milli), the
// unit of the protocol's arrived demand.
func (p *Pod) GPURequest() int64 { return int64(p.NumGPU) * int64(p.GPUMilli) }

// Accepts reports whether the pod may run on GPUs of the model.
func (p *Pod) Accepts(model string) bool {
	if len(p.Spec) == 0 {
		return true
	}
	for _, m := range p.Spec {
		if m == model {
			return true
		}
	}
	return false
}

// table reads a CSV with a header and looks columns up by name, so
// traces with extra or reordered columns load, and errors name the line
// and column.
type table struct {
	name string
	r    *csv.Reader
	col  map[string]int
	rec  []string
	line int
}

func newTable(name string, r io.Reader, need ...string) (*table, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty file, want a header", name)
		}
		return nil, fmt.Errorf("%s: header: %w", name, err)
	}
	t := &table{name: name, r: cr, col: map[string]int{}}
	for i, h := range header {
		t.col[strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))] = i
	}
	for _, c := range need {
		if _, ok := t.col[c]; !ok {
			return nil, fmt.Errorf("%s:1: missing column %q (have %s)", name, c, strings.Join(header, ","))
		}
	}
	return t, nil
}

// next reads a row; false at the end.
func (t *table) next() (bool, error) {
	rec, err := t.r.Read()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		// A *csv.ParseError names its own line. FieldPos must not be
		// asked here: after some errors (an unterminated quote at the
		// end of the file) there is no field and it panics; found by
		// FuzzReadPods, input kept in testdata/fuzz.
		return false, fmt.Errorf("%s: %w", t.name, err)
	}
	t.line, _ = t.r.FieldPos(0)
	t.rec = rec
	return true, nil
}

func (t *table) str(c string) (string, error) {
	i := t.col[c]
	if i >= len(t.rec) {
		return "", fmt.Errorf("%s:%d: column %q: row has %d fields", t.name, t.line, c, len(t.rec))
	}
	return strings.TrimSpace(t.rec[i]), nil
}

func (t *table) int(c string, lo, hi int64) (int64, error) {
	s, err := t.str(c)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s:%d: column %q: %w", t.name, t.line, c, err)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%s:%d: column %q: %d out of range %d-%d", t.name, t.line, c, v, lo, hi)
	}
	return v, nil
}

// MaxGPUsPerNode bounds a node's GPU count (the plugin's model holds up to
// 64; openb nodes have at most 8).
const MaxGPUsPerNode = 64

// ReadNodes parses a node list.
func ReadNodes(name string, r io.Reader) ([]Node, error) {
	t, err := newTable(name, r, "sn", "cpu_milli", "memory_mib", "gpu", "model")
	if err != nil {
		return nil, err
	}
	var out []Node
	seen := map[string]int{}
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var n Node
		if n.Name, err = t.str("sn"); err != nil {
			return nil, err
		}
		if n.Name == "" {
			return nil, fmt.Errorf("%s:%d: column %q: empty node name", name, t.line, "sn")
		}
		if prev, dup := seen[n.Name]; dup {
			return nil, fmt.Errorf("%s:%d: column %q: node %q already on line %d", name, t.line, "sn", n.Name, prev)
		}
		seen[n.Name] = t.line
		if n.CPUMilli, err = t.int("cpu_milli", 0, 1<<40); err != nil {
			return nil, err
		}
		if n.MemoryMiB, err = t.int("memory_mib", 0, 1<<40); err != nil {
			return nil, err
		}
		g, err := t.int("gpu", 0, MaxGPUsPerNode)
		if err != nil {
			return nil, err
		}
		n.GPUs = int(g)
		if n.Model, err = t.str("model"); err != nil {
			return nil, err
		}
		if n.GPUs > 0 && n.Model == "" {
			return nil, fmt.Errorf("%s:%d: column %q: node with GPUs needs a model", name, t.line, "model")
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no nodes", name)
	}
	return out, nil
}

// ReadPods parses a pod list. Only the columns the protocol uses are
// required (multigpu20 has no gpu_spec column).
func ReadPods(name string, r io.Reader) ([]Pod, error) {
	t, err := newTable(name, r, "name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
	if err != nil {
		return nil, err
	}
	_, hasSpec := t.col["gpu_spec"]
	var out []Pod
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var p Pod
		if p.Name, err = t.str("name"); err != nil {
			return nil, err
		}
		if p.CPUMilli, err = t.int("cpu_milli", 0, 1<<40); err != nil {
			return nil, err
		}
		if p.MemoryMiB, err = t.int("memory_mib", 0, 1<<40); err != nil {
			return nil, err
		}
		n, err := t.int("num_gpu", 0, MaxGPUsPerNode)
		if err != nil {
			return nil, err
		}
		m, err := t.int("gpu_milli", 0, 1000)
		if err != nil {
			return nil, err
		}
		p.NumGPU, p.GPUMilli = int(n), int(m)
		switch {
		case p.NumGPU == 0 && p.GPUMilli != 0:
			return nil, fmt.Errorf("%s:%d: column %q: %d milli-GPU with num_gpu 0", name, t.line, "gpu_milli", p.GPUMilli)
		case p.NumGPU > 0 && p.GPUMilli == 0:
			return nil, fmt.Errorf("%s:%d: column %q: num_gpu %d with 0 milli-GPU", name, t.line, "gpu_milli", p.NumGPU)
		case p.NumGPU > 1 && p.GPUMilli != 1000:
			return nil, fmt.Errorf("%s:%d: column %q: %d GPUs must be whole (1000), got %d", name, t.line, "gpu_milli", p.NumGPU, p.GPUMilli)
		}
		if hasSpec {
			s, err := t.str("gpu_spec")
			if err != nil {
				return nil, err
			}
			for _, m := range strings.Split(s, "|") {
				if m = strings.TrimSpace(m); m != "" {
					p.Spec = append(p.Spec, m)
				}
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no pods", name)
	}
	return out, nil
}

// LoadNodes reads a node list file.
func LoadNodes(path string) ([]Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadNodes(path, f)
}

// LoadPods reads a pod list file.
func LoadPods(path string) ([]Pod, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPods(path, f)
}
