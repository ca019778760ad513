package nvml

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// requireRealGPU opens the real library on a machine that has a GPU. The
// test runs only when KUBEGPU_REAL_GPU=1, so that a machine without one
// (CI) neither fails nor silently passes it.
func requireRealGPU(t *testing.T) Backend {
	t.Helper()
	if os.Getenv("KUBEGPU_REAL_GPU") != "1" {
		t.Skip("set KUBEGPU_REAL_GPU=1 on a machine with an NVIDIA GPU")
	}
	b, err := Open("real")
	if err != nil {
		t.Fatalf("Open(real): %v", err)
	}
	t.Cleanup(func() {
		if err := b.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b
}

// smiGPU is one row of nvidia-smi's query output: the driver's own tool,
// an independent reading to compare Discover with.
type smiGPU struct {
	index     int
	uuid      string
	name      string
	memoryMiB int64
	busID     string
}

func nvidiaSMI(t *testing.T) []smiGPU {
	t.Helper()
	out, err := exec.Command("nvidia-smi", "--query-gpu=index,uuid,name,memory.total,pci.bus_id",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		t.Fatalf("nvidia-smi: %v", err)
	}
	var gpus []smiGPU
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 5 {
			t.Fatalf("nvidia-smi line %q", line)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		idx, err1 := strconv.Atoi(f[0])
		mem, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("nvidia-smi line %q: %v %v", line, err1, err2)
		}
		gpus = append(gpus, smiGPU{index: idx, uuid: f[1], name: f[2], memoryMiB: mem, busID: f[4]})
	}
	return gpus
}

// TestRealGPUDiscover checks Discover, Telemetry and WatchHealth on the
// real library against what nvidia-smi reports.
func TestRealGPUDiscover(t *testing.T) {
	b := requireRealGPU(t)
	ctx := context.Background()
	node, err := b.Discover(ctx)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	smi := nvidiaSMI(t)
	if len(node.GPUs) != len(smi) {
		t.Fatalf("Discover found %d GPUs, nvidia-smi %d", len(node.GPUs), len(smi))
	}
	for i, g := range node.GPUs {
		s := smi[i]
		t.Logf("GPU %d: %s %q %d MiB NUMA %d bus %s healthy=%v MIG=%v (nvidia-smi: %s %q %d MiB %s)",
			g.Index, g.UUID, g.Product, g.MemoryMiB, g.NUMANode, g.PCIBusID, g.Healthy, g.MIG,
			s.uuid, s.name, s.memoryMiB, s.busID)
		if g.Index != s.index || g.UUID != s.uuid || g.Product != s.name || g.MemoryMiB != s.memoryMiB {
			t.Errorf("GPU %d differs from nvidia-smi", i)
		}
		if !strings.EqualFold(g.PCIBusID, s.busID) {
			t.Errorf("GPU %d bus %q, nvidia-smi %q", i, g.PCIBusID, s.busID)
		}
		if !g.Healthy {
			t.Errorf("GPU %d reported unhealthy by Discover", i)
		}
	}
	// The discovered node survives the annotation codec unchanged.
	doc, err := gpunode.Encode(node)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	back, err := gpunode.Decode(doc)
	if err != nil || len(back.GPUs) != len(node.GPUs) || back.GPUs[0].UUID != node.GPUs[0].UUID {
		t.Fatalf("Decode(Encode(node)) = %+v, %v", back, err)
	}
	t.Logf("topology annotation (%d bytes): %s", len(doc), doc)
	var table strings.Builder
	if err := gpunode.WriteTable(&table, node); err != nil {
		t.Fatal(err)
	}
	t.Logf("inventory:\n%s", table.String())

	tel, err := b.Telemetry(ctx)
	if err != nil {
		t.Errorf("Telemetry: %v", err)
	}
	if len(tel) != len(smi) {
		t.Fatalf("Telemetry for %d GPUs, want %d", len(tel), len(smi))
	}
	for _, m := range tel {
		if m.TemperatureC == nil || *m.TemperatureC == 0 || *m.TemperatureC > 120 {
			t.Errorf("GPU %d temperature %v", m.Index, m.TemperatureC)
		}
		if m.PowerWatts == nil || *m.PowerWatts <= 0 || *m.PowerWatts > 2000 {
			t.Errorf("GPU %d power %v", m.Index, m.PowerWatts)
		}
		if m.MemoryTotalMiB == nil || m.MemoryUsedMiB == nil || *m.MemoryUsedMiB > *m.MemoryTotalMiB {
			t.Errorf("GPU %d memory used %v of %v", m.Index, m.MemoryUsedMiB, m.MemoryTotalMiB)
		}
		if m.GPUUtilPercent == nil || *m.GPUUtilPercent > 100 {
			t.Errorf("GPU %d utilisation %v", m.Index, m.GPUUtilPercent)
		}
		t.Logf("GPU %d telemetry: util %s%% memutil %s%% mem %s/%s MiB %s°C %sW", m.Index,
			show(m.GPUUtilPercent), show(m.MemUtilPercent), show(m.MemoryUsedMiB), show(m.MemoryTotalMiB),
			show(m.TemperatureC), show(m.PowerWatts))
	}

	// A healthy idle GPU raises no health event during a few event waits.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ch, err := b.WatchHealth(wctx, HealthConfig{WaitTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("WatchHealth: %v", err)
	}
	for ev := range ch {
		t.Errorf("health event on an idle healthy GPU: %+v", ev)
	}
}

func show[T any](p *T) string {
	if p == nil {
		return "n/a"
	}
	switch v := any(*p).(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return "?"
}
