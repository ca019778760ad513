package sim

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The trace readers take files users download and edit; whatever they
// hold, a reader must return rows the simulator can use or an error that
// names the file, never panic. What they accept must also survive a write
// and a re-read unchanged (the CSV is the only encoding, so the test writes
// it with encoding/csv).

func FuzzReadNodes(f *testing.F) {
	header := "sn,cpu_milli,memory_mib,gpu,model\n"
	f.Add(header + "n0,64000,262144,2,P100\nn1,96000,1,8,G2\n")
	f.Add(header + "n0,1,1,0,\n")
	f.Add("\ufeffmodel,gpu,sn,memory_mib,cpu_milli,extra\nV100M16,8,x,786432,96000,1\n")
	f.Add(header + "n0,1,1,2,\"P\"\"100\"\n")
	f.Add(header + "\"n0\n\",1,1,2,P100\n")
	f.Add(header + "n0,1,1\n")
	f.Add(header + "n0,\"1,1,2,P100\n")
	f.Fuzz(func(t *testing.T, in string) {
		nodes, err := ReadNodes("nodes.csv", strings.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "nodes.csv") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(nodes) == 0 {
			t.Fatal("no nodes and no error")
		}
		seen := map[string]bool{}
		for _, n := range nodes {
			if n.Name == "" || seen[n.Name] {
				t.Fatalf("accepted empty or duplicate name %q", n.Name)
			}
			seen[n.Name] = true
			if n.GPUs < 0 || n.GPUs > MaxGPUsPerNode || n.CPUMilli < 0 || n.MemoryMiB < 0 {
				t.Fatalf("accepted out-of-range node %+v", n)
			}
			if n.GPUs > 0 && n.Model == "" {
				t.Fatalf("accepted GPU node without model %+v", n)
			}
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Write([]string{"sn", "cpu_milli", "memory_mib", "gpu", "model"})
		for _, n := range nodes {
			w.Write([]string{n.Name, itoa(n.CPUMilli), itoa(n.MemoryMiB), strconv.Itoa(n.GPUs), n.Model})
		}
		w.Flush()
		again, err := ReadNodes("nodes.csv", &buf)
		if err != nil {
			t.Fatalf("re-read of accepted nodes: %v\n%s", err, buf.String())
		}
		if !slices.Equal(nodes, again) {
			t.Fatalf("round trip differs:\n%+v\n%+v", nodes, again)
		}
	})
}

func FuzzReadPods(f *testing.F) {
	header := "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
	f.Add(header + "a,1000,2048,1,500,\nb,2000,4096,2,1000,T4|P100\nc,500,100,0,0,\n")
	f.Add("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,1000\n")
	f.Add("gpu_milli,num_gpu,name,memory_mib,cpu_milli\n250,1,x,3,4\n")
	f.Add(header + "a,1,1,1,100, T4 || V100M16 \n")
	f.Add(header + "a,1,1,2,500,\n")
	f.Add(header + "a,\"1,1,1,100,\n")
	f.Add(header + "a,1,1\n")
	f.Fuzz(func(t *testing.T, in string) {
		pods, err := ReadPods("pods.csv", strings.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pods.csv") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(pods) == 0 {
			t.Fatal("no pods and no error")
		}
		for _, p := range pods {
			if p.CPUMilli < 0 || p.MemoryMiB < 0 || p.NumGPU < 0 || p.NumGPU > MaxGPUsPerNode {
				t.Fatalf("accepted out-of-range pod %+v", p)
			}
			switch {
			case p.NumGPU == 0:
				if p.GPUMilli != 0 || p.GPURequest() != 0 {
					t.Fatalf("CPU-only pod with GPU milli %+v", p)
				}
			case p.Share():
				if p.GPUMilli < 1 || p.GPUMilli > 999 {
					t.Fatalf("share outside 1-999: %+v", p)
				}
			default:
				if p.GPUMilli != 1000 || p.GPURequest() != int64(p.NumGPU)*1000 {
					t.Fatalf("whole-GPU pod not in whole GPUs: %+v", p)
				}
			}
			for _, m := range p.Spec {
				if m == "" || m != strings.TrimSpace(m) || strings.Contains(m, "|") || !p.Accepts(m) {
					t.Fatalf("bad GPU model %q in %+v", m, p)
				}
			}
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Write([]string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"})
		for _, p := range pods {
			w.Write([]string{p.Name, itoa(p.CPUMilli), itoa(p.MemoryMiB), strconv.Itoa(p.NumGPU), strconv.Itoa(p.GPUMilli), strings.Join(p.Spec, "|")})
		}
		w.Flush()
		again, err := ReadPods("pods.csv", &buf)
		if err != nil {
			t.Fatalf("re-read of accepted pods: %v\n%s", err, buf.String())
		}
		if !slices.EqualFunc(pods, again, func(a, b Pod) bool {
			return a.Name == b.Name && a.CPUMilli == b.CPUMilli && a.MemoryMiB == b.MemoryMiB &&
				a.NumGPU == b.NumGPU && a.GPUMilli == b.GPUMilli && slices.Equal(a.Spec, b.Spec)
		}) {
			t.Fatalf("round trip differs:\n%+v\n%+v", pods, again)
		}
	})
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
