package nvml

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/nvml/fake"
)

func openFake(t *testing.T, name string) (Backend, *fake.Machine) {
	t.Helper()
	b, m, err := OpenFake(name)
	if err != nil {
		t.Fatalf("OpenFake(%q): %v", name, err)
	}
	t.Cleanup(func() { _ = b.Shutdown() })
	return b, m
}

// TestOpenRealWithoutGPU runs the real library's Init failure path, the
// only real-library path that is safe on a machine without the driver: a
// call after a failed Init would kill this process.
func TestOpenRealWithoutGPU(t *testing.T) {
	for range 2 { // a second Open after a failed one must be just as safe
		b, err := Open("real")
		if err == nil {
			// A machine with a GPU: the real library works, use it lightly.
			node, derr := b.Discover(context.Background())
			if derr != nil {
				t.Errorf("Discover on real NVML: %v", derr)
			} else {
				t.Logf("real NVML: %+v", *node)
			}
			tel, terr := b.Telemetry(context.Background())
			t.Logf("real NVML telemetry: %d GPUs, error %v", len(tel), terr)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ch, werr := b.WatchHealth(ctx, HealthConfig{WaitTimeout: 100 * time.Millisecond})
			if werr != nil {
				t.Errorf("WatchHealth on real NVML: %v", werr)
			} else {
				for ev := range ch {
					t.Logf("real NVML health event: %+v", ev)
				}
			}
			cancel()
			if serr := b.Shutdown(); serr != nil {
				t.Errorf("Shutdown: %v", serr)
			}
			t.Skip("NVML is present here; the GPU-less failure path cannot be tested")
		}
		if b != nil {
			t.Fatalf("Open(real) returned a backend with error %v", err)
		}
		var nerr *Error
		if !errors.As(err, &nerr) || nerr.Call != "Init" {
			t.Fatalf("Open(real) error %v is not an NVML Init error", err)
		}
		msg := err.Error()
		for _, want := range []string{"NVML", "Init", nerr.Ret.Error()} {
			if !strings.Contains(msg, want) {
				t.Errorf("Open(real) error %q does not mention %q", msg, want)
			}
		}
		if !errors.Is(err, gonvml.ERROR_LIBRARY_NOT_FOUND) {
			t.Logf("Init failed with %v rather than ERROR_LIBRARY_NOT_FOUND (driver present, no GPU?)", nerr.Ret)
		}
	}
}

func TestOpenUnknown(t *testing.T) {
	for _, spec := range []string{"", "bogus", "fake:", "fake:dgx-z900", "Real"} {
		_, err := Open(spec)
		if err == nil {
			t.Errorf("Open(%q) succeeded", spec)
			continue
		}
		for _, want := range []string{"real", "fake:dgx-a100", "fake:dgx-h100", "fake:dgx1-v100", "fake:pcie-4xl4", "fake:pcie-8x-2socket"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%q) error %q does not list %q", spec, err, want)
			}
		}
	}
}

// dgx1Mesh is the DGX-1 hybrid cube mesh as NVIDIA documents it.
var dgx1Mesh = map[int]map[int]int{
	0: {1: 1, 2: 1, 3: 2, 4: 2},
	1: {0: 1, 2: 2, 3: 1, 5: 2},
	2: {0: 1, 1: 2, 3: 2, 6: 1},
	3: {0: 2, 1: 1, 2: 2, 7: 1},
	4: {0: 2, 5: 1, 6: 1, 7: 2},
	5: {1: 2, 4: 1, 6: 2, 7: 1},
	6: {2: 1, 4: 1, 5: 2, 7: 2},
	7: {3: 1, 4: 2, 5: 1, 6: 2},
}

func TestDiscover(t *testing.T) {
	twoSockets := []int{0, 0, 0, 0, 1, 1, 1, 1}
	tests := []struct {
		name    string
		product string
		memMiB  int64
		numa    []int
		// link checks every pair i<j.
		link func(t *testing.T, i, j int, l gpunode.Link)
	}{
		{
			name: "dgx-a100", product: "NVIDIA A100-SXM4-80GB", memMiB: 81920, numa: twoSockets,
			link: func(t *testing.T, i, j int, l gpunode.Link) {
				if !l.NVSwitch || l.NVLinks != 0 {
					t.Errorf("GPU %d-%d: %+v, want NVSwitch without direct links", i, j, l)
				}
				want := gpunode.PCIeCrossCPU
				switch {
				case i/2 == j/2:
					want = gpunode.PCIeMultiSwitch
				case i/4 == j/4:
					want = gpunode.PCIeSameNUMA
				}
				if l.PCIe != want {
					t.Errorf("GPU %d-%d: PCIe %d, want %d", i, j, l.PCIe, want)
				}
			},
		},
		{
			name: "dgx-h100", product: "NVIDIA H100 80GB HBM3", memMiB: 81559, numa: twoSockets,
			link: func(t *testing.T, i, j int, l gpunode.Link) {
				if !l.NVSwitch || l.NVLinks != 0 {
					t.Errorf("GPU %d-%d: %+v, want NVSwitch without direct links", i, j, l)
				}
				want := gpunode.PCIeCrossCPU
				if i/4 == j/4 {
					want = gpunode.PCIeSameNUMA
				}
				if l.PCIe != want {
					t.Errorf("GPU %d-%d: PCIe %d, want %d", i, j, l.PCIe, want)
				}
			},
		},
		{
			name: "dgx1-v100", product: "Tesla V100-SXM2-32GB", memMiB: 32510, numa: twoSockets,
			link: func(t *testing.T, i, j int, l gpunode.Link) {
				if l.NVSwitch {
					t.Errorf("GPU %d-%d: NVSwitch on a DGX-1", i, j)
				}
				if want := dgx1Mesh[i][j]; l.NVLinks != want {
					t.Errorf("GPU %d-%d: NV%d, want NV%d", i, j, l.NVLinks, want)
				}
				if i/4 == j/4 && l.NVLinks == 0 {
					t.Errorf("GPU %d-%d: quad not fully NVLinked", i, j)
				}
				want := gpunode.PCIeCrossCPU
				switch {
				case i/2 == j/2:
					want = gpunode.PCIeSingleSwitch
				case i/4 == j/4:
					want = gpunode.PCIeHostBridge
				}
				if l.PCIe != want {
					t.Errorf("GPU %d-%d: PCIe %d, want %d", i, j, l.PCIe, want)
				}
			},
		},
		{
			name: "pcie-4xl4", product: "NVIDIA L4", memMiB: 23034, numa: []int{0, 0, 0, 0},
			link: func(t *testing.T, i, j int, l gpunode.Link) {
				want := gpunode.Link{PCIe: gpunode.PCIeHostBridge}
				if i/2 == j/2 {
					want.PCIe = gpunode.PCIeSingleSwitch
				}
				if l != want {
					t.Errorf("GPU %d-%d: %+v, want %+v", i, j, l, want)
				}
			},
		},
		{
			name: "pcie-8x-2socket", product: "NVIDIA L40S", memMiB: 46068, numa: twoSockets,
			link: func(t *testing.T, i, j int, l gpunode.Link) {
				want := gpunode.Link{PCIe: gpunode.PCIeCrossCPU}
				switch {
				case i/2 == j/2:
					want.PCIe = gpunode.PCIeSingleSwitch
				case i/4 == j/4:
					want.PCIe = gpunode.PCIeSameNUMA
				}
				if l != want {
					t.Errorf("GPU %d-%d: %+v, want %+v", i, j, l, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, m := openFake(t, tc.name)
			node, err := b.Discover(context.Background())
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if len(node.GPUs) != len(tc.numa) || len(node.Links) != len(tc.numa) {
				t.Fatalf("%d GPUs, %d link rows; want %d", len(node.GPUs), len(node.Links), len(tc.numa))
			}
			_, m2, _ := OpenFake(tc.name)
			seen := map[string]bool{}
			for i, g := range node.GPUs {
				if g.Index != i || g.Product != tc.product || g.MemoryMiB != tc.memMiB || g.NUMANode != tc.numa[i] || !g.Healthy || g.MIG {
					t.Errorf("GPU %d: %+v", i, g)
				}
				if !strings.HasPrefix(g.UUID, "GPU-") || len(g.UUID) != len("GPU-")+36 || seen[g.UUID] {
					t.Errorf("GPU %d: bad or duplicate UUID %q", i, g.UUID)
				}
				seen[g.UUID] = true
				if g.UUID != m.UUID(i) || g.UUID != m2.UUID(i) {
					t.Errorf("GPU %d: UUID %q not deterministic (%q, %q)", i, g.UUID, m.UUID(i), m2.UUID(i))
				}
				if len(g.PCIBusID) != len("00000000:07:00.0") || !strings.HasPrefix(g.PCIBusID, "00000000:") || g.PCIBusID != m.BusID(i) {
					t.Errorf("GPU %d: PCI bus ID %q", i, g.PCIBusID)
				}
			}
			for i := range node.Links {
				if node.Links[i][i] != (gpunode.Link{}) {
					t.Errorf("GPU %d: self link %+v", i, node.Links[i][i])
				}
				for j := i + 1; j < len(node.Links); j++ {
					if node.Links[i][j] != node.Links[j][i] {
						t.Errorf("GPU %d-%d: asymmetric %+v / %+v", i, j, node.Links[i][j], node.Links[j][i])
					}
					tc.link(t, i, j, node.Links[i][j])
				}
			}
		})
	}
}

// TestDiscoverMatchesShape: a fake machine is built from gpunode.Shape of
// the same name, so discovery through NVML calls must give back that Node:
// one definition of each machine for the fakes, the scheduler and the
// simulators. Only UUIDs and bus IDs are the fake's own.
func TestDiscoverMatchesShape(t *testing.T) {
	for _, name := range fake.Names() {
		t.Run(name, func(t *testing.T) {
			b, _ := openFake(t, name)
			got, err := b.Discover(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := gpunode.MustShape(name)
			if len(got.GPUs) != len(want.GPUs) {
				t.Fatalf("%d GPUs, shape has %d", len(got.GPUs), len(want.GPUs))
			}
			for i := range want.GPUs {
				g, w := got.GPUs[i], want.GPUs[i]
				g.UUID, g.PCIBusID = w.UUID, w.PCIBusID
				if g != w {
					t.Errorf("GPU %d: discovered %+v, shape %+v", i, g, w)
				}
				for j := range want.GPUs {
					if got.Links[i][j] != want.Links[i][j] {
						t.Errorf("GPU %d-%d: discovered %+v, shape %+v", i, j, got.Links[i][j], want.Links[i][j])
					}
				}
			}
		})
	}
}

// TestDiscoverNVSwitchHeuristic: where NVML cannot name the far end of a
// link, a far end that is not one of the node's GPUs is an NVSwitch, and
// direct GPU links are still counted.
func TestDiscoverNVSwitchHeuristic(t *testing.T) {
	for _, name := range []string{"dgx-h100", "dgx1-v100"} {
		t.Run(name, func(t *testing.T) {
			b, m := openFake(t, name)
			if err := m.InjectError("GetNvLinkRemoteDeviceType", -1, gonvml.ERROR_NOT_SUPPORTED); err != nil {
				t.Fatal(err)
			}
			node, err := b.Discover(context.Background())
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			for i := range node.GPUs {
				for j := range node.GPUs {
					if i == j {
						continue
					}
					l := node.Links[i][j]
					if name == "dgx-h100" && !l.NVSwitch {
						t.Errorf("GPU %d-%d: no NVSwitch", i, j)
					}
					if name == "dgx1-v100" && (l.NVSwitch || l.NVLinks != dgx1Mesh[i][j]) {
						t.Errorf("GPU %d-%d: %+v", i, j, l)
					}
				}
			}
		})
	}
}

// TestInjectedErrors: a failing NVML call surfaces as an *Error naming the
// call and the GPU, never as a panic or a silently wrong node.
func TestInjectedErrors(t *testing.T) {
	tests := []struct {
		machine string
		call    string
		index   int // GPU the fault is injected on and the error must name
		ret     gonvml.Return
		op      string // discover, telemetry, watch
	}{
		{"dgx-a100", "DeviceGetCount", -1, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx-a100", "DeviceGetHandleByIndex", 3, gonvml.ERROR_GPU_IS_LOST, "discover"},
		{"dgx-h100", "GetUUID", 2, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx-h100", "GetName", 1, gonvml.ERROR_NO_PERMISSION, "discover"},
		{"pcie-4xl4", "GetMemoryInfo", 0, gonvml.ERROR_UNKNOWN, "discover"},
		{"pcie-8x-2socket", "GetPciInfo", 5, gonvml.ERROR_UNKNOWN, "discover"},
		{"pcie-8x-2socket", "GetNumaNodeId", 4, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx-a100", "GetMigMode", 6, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx1-v100", "GetTopologyCommonAncestor", 2, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx1-v100", "GetNvLinkState", 3, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx1-v100", "GetNvLinkRemotePciInfo", 6, gonvml.ERROR_GPU_IS_LOST, "discover"},
		{"dgx-a100", "GetNvLinkRemoteDeviceType", 7, gonvml.ERROR_UNKNOWN, "discover"},
		{"dgx-h100", "GetUtilizationRates", 1, gonvml.ERROR_UNKNOWN, "telemetry"},
		{"dgx-h100", "GetTemperature", 0, gonvml.ERROR_GPU_IS_LOST, "telemetry"},
		{"pcie-4xl4", "GetPowerUsage", 3, gonvml.ERROR_UNKNOWN, "telemetry"},
		{"pcie-4xl4", "EventSetCreate", -1, gonvml.ERROR_UNKNOWN, "watch"},
		{"pcie-4xl4", "GetUUID", 1, gonvml.ERROR_UNKNOWN, "watch"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s/%d", tc.machine, tc.call, tc.index), func(t *testing.T) {
			b, m := openFake(t, tc.machine)
			if err := m.InjectError(tc.call, tc.index, tc.ret); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var err error
			switch tc.op {
			case "discover":
				var node *gpunode.Node
				if node, err = b.Discover(ctx); node != nil {
					t.Errorf("Discover returned a node with error %v", err)
				}
			case "telemetry":
				var tel []Telemetry
				tel, err = b.Telemetry(ctx)
				if len(tel) != m.GPUCount() {
					t.Errorf("Telemetry returned %d GPUs, want the %d readable ones", len(tel), m.GPUCount())
				}
			case "watch":
				_, err = b.WatchHealth(ctx, HealthConfig{})
			}
			var nerr *Error
			if !errors.As(err, &nerr) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if nerr.Call != tc.call || nerr.Device != tc.index || !errors.Is(err, tc.ret) {
				t.Errorf("error %v: call %q GPU %d, want %q GPU %d %v", err, nerr.Call, nerr.Device, tc.call, tc.index, tc.ret)
			}
			want := "NVML " + tc.call
			if tc.index >= 0 {
				want += fmt.Sprintf(" (GPU %d)", tc.index)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			// The fault gone, the same backend works again.
			m.ClearErrors()
			if _, err := b.Discover(ctx); err != nil {
				t.Errorf("Discover after ClearErrors: %v", err)
			}
		})
	}
}

// TestEveryCallFaultNoPanic fails each injectable call in turn on every
// GPU and runs every operation: errors are fine, panics are not.
func TestEveryCallFaultNoPanic(t *testing.T) {
	for _, call := range fake.Calls() {
		t.Run(call, func(t *testing.T) {
			m, err := fake.New("dgx1-v100")
			if err != nil {
				t.Fatal(err)
			}
			if err := m.InjectError(call, -1, gonvml.ERROR_UNKNOWN); err != nil {
				t.Fatal(err)
			}
			b, err := NewWithLibrary(m.Interface())
			if call == "Init" {
				if err == nil || b != nil || !strings.Contains(err.Error(), "NVML Init") {
					t.Fatalf("NewWithLibrary with failing Init: %v, %v", b, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, derr := b.Discover(ctx)
			_, terr := b.Telemetry(ctx)
			ch, werr := b.WatchHealth(ctx, HealthConfig{WaitTimeout: 10 * time.Millisecond})
			name := "NVML " + call
			if call == "Wait" {
				name = "NVML EventSet.Wait" // WatchHealth probes the wait before it returns
			}
			for _, err := range []error{derr, terr, werr} {
				if err != nil && !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, call)
				}
			}
			if ch != nil {
				cancel()
				for range ch {
				}
			}
			serr := b.Shutdown()
			if (serr != nil) != (call == "Shutdown") {
				t.Errorf("Shutdown: %v", serr)
			}
		})
	}
}

func TestTelemetry(t *testing.T) {
	b, m := openFake(t, "dgx-h100")
	m.SetUtilization(2, 97, 41)
	// Unsupported metrics are left out, not errors.
	if err := m.InjectError("GetPowerUsage", 5, gonvml.ERROR_NOT_SUPPORTED); err != nil {
		t.Fatal(err)
	}
	if err := m.InjectError("GetTemperature", -1, gonvml.ERROR_NOT_SUPPORTED); err != nil {
		t.Fatal(err)
	}
	tel, err := b.Telemetry(context.Background())
	if err != nil {
		t.Fatalf("Telemetry: %v", err)
	}
	if len(tel) != 8 {
		t.Fatalf("%d GPUs", len(tel))
	}
	for i, g := range tel {
		if g.Index != i || g.UUID != m.UUID(i) {
			t.Errorf("GPU %d: index %d UUID %s", i, g.Index, g.UUID)
		}
		if g.GPUUtilPercent == nil || g.MemUtilPercent == nil || g.MemoryUsedMiB == nil || g.MemoryTotalMiB == nil {
			t.Fatalf("GPU %d: missing metric %+v", i, g)
		}
		if *g.MemoryTotalMiB != 81559 || *g.MemoryUsedMiB != int64(i+1)*512 {
			t.Errorf("GPU %d: memory %d/%d MiB", i, *g.MemoryUsedMiB, *g.MemoryTotalMiB)
		}
		if g.TemperatureC != nil {
			t.Errorf("GPU %d: temperature %d despite NOT_SUPPORTED", i, *g.TemperatureC)
		}
		if (g.PowerWatts == nil) != (i == 5) {
			t.Errorf("GPU %d: power %v", i, g.PowerWatts)
		}
		if g.PowerWatts != nil && *g.PowerWatts != 71+float64(i)*0.25 {
			t.Errorf("GPU %d: power %v W", i, *g.PowerWatts)
		}
	}
	if *tel[2].GPUUtilPercent != 97 || *tel[2].MemUtilPercent != 41 {
		t.Errorf("GPU 2 utilisation %d/%d, want 97/41", *tel[2].GPUUtilPercent, *tel[2].MemUtilPercent)
	}
}

// next receives one health event or fails after a while.
func next(t *testing.T, ch <-chan HealthEvent) HealthEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("health channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no health event")
	}
	return HealthEvent{}
}

func TestHealthEvents(t *testing.T) {
	tests := []struct {
		name    string
		ignored []uint64
		send    func(m *fake.Machine)
		want    HealthEvent // Reason is matched as a substring
	}{
		{
			name: "xid 79 fell off the bus",
			send: func(m *fake.Machine) { m.SendXid(3, 79) },
			want: HealthEvent{Index: 3, EventType: gonvml.EventTypeXidCriticalError, Xid: 79, Reason: "Xid 79"},
		},
		{
			name: "default application xids skipped",
			send: func(m *fake.Machine) {
				for _, x := range DefaultIgnoredXids() {
					m.SendXid(1, x)
				}
				m.SendXid(6, 48)
			},
			want: HealthEvent{Index: 6, EventType: gonvml.EventTypeXidCriticalError, Xid: 48, Reason: "Xid 48"},
		},
		{
			name:    "configured ignore list",
			ignored: []uint64{79},
			send:    func(m *fake.Machine) { m.SendXid(0, 79); m.SendXid(0, 13) },
			want:    HealthEvent{Index: 0, EventType: gonvml.EventTypeXidCriticalError, Xid: 13, Reason: "Xid 13"},
		},
		{
			name: "double-bit ECC",
			send: func(m *fake.Machine) {
				m.SendEvent(2, gonvml.EventTypeSingleBitEccError, 0) // not registered: never delivered
				m.SendEvent(2, gonvml.EventTypeDoubleBitEccError, 0)
			},
			want: HealthEvent{Index: 2, EventType: gonvml.EventTypeDoubleBitEccError, Reason: "double-bit ECC"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, m := openFake(t, "dgx-a100")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := b.WatchHealth(ctx, HealthConfig{IgnoredXids: tc.ignored, WaitTimeout: 20 * time.Millisecond})
			if err != nil {
				t.Fatalf("WatchHealth: %v", err)
			}
			tc.send(m)
			ev := next(t, ch)
			tc.want.UUID = m.UUID(tc.want.Index)
			if !strings.Contains(ev.Reason, tc.want.Reason) {
				t.Errorf("reason %q does not contain %q", ev.Reason, tc.want.Reason)
			}
			ev.Reason, tc.want.Reason = "", ""
			if ev != tc.want {
				t.Errorf("event %+v, want %+v", ev, tc.want)
			}
			select {
			case ev, ok := <-ch:
				if ok {
					t.Errorf("unexpected second event %+v", ev)
				}
			case <-time.After(100 * time.Millisecond):
			}
			cancel()
			for range ch { // closes once the watch sees the cancel
			}
		})
	}
}

func TestHealthReason(t *testing.T) {
	b, m := openFake(t, "dgx-h100")
	ch, err := b.WatchHealth(context.Background(), HealthConfig{WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n := m.SendXid(4, 94); n != 1 {
		t.Fatalf("SendXid reached %d event sets, want 1", n)
	}
	if ev := next(t, ch); ev.UUID != m.UUID(4) || !strings.Contains(ev.Reason, "Xid 94") {
		t.Errorf("event %+v", ev)
	}
	// Shutdown ends the watch and closes the channel.
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Error("channel still open after Shutdown")
	}
}

// TestHealthRegisterFailure: a GPU whose events cannot be registered is
// reported unhealthy, as NVIDIA's device plugin does.
func TestHealthRegisterFailure(t *testing.T) {
	b, m := openFake(t, "pcie-8x-2socket")
	if err := m.InjectError("RegisterEvents", 2, gonvml.ERROR_UNKNOWN); err != nil {
		t.Fatal(err)
	}
	ch, err := b.WatchHealth(context.Background(), HealthConfig{WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Index != 2 || ev.UUID != m.UUID(2) || !strings.Contains(ev.Reason, "NVML RegisterEvents (GPU 2)") {
		t.Errorf("event %+v", ev)
	}
	// The other GPUs are still watched.
	m.SendXid(7, 79)
	if ev := next(t, ch); ev.UUID != m.UUID(7) || ev.Xid != 79 {
		t.Errorf("event %+v", ev)
	}
}

// TestHealthWaitFailure: when NVML's event wait fails, every GPU is
// reported unhealthy and the watch ends.
func TestHealthWaitFailure(t *testing.T) {
	b, m := openFake(t, "pcie-4xl4")
	ch, err := b.WatchHealth(context.Background(), HealthConfig{WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InjectError("Wait", 0, gonvml.ERROR_GPU_IS_LOST); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 4 {
		ev := next(t, ch)
		if !strings.Contains(ev.Reason, "EventSet.Wait") || !strings.Contains(ev.Reason, "ERROR_GPU_IS_LOST") {
			t.Errorf("event %+v", ev)
		}
		seen[ev.UUID] = true
	}
	for i := range 4 {
		if !seen[m.UUID(i)] {
			t.Errorf("GPU %d not reported", i)
		}
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("watch goes on after a failed wait")
		}
	case <-time.After(5 * time.Second):
		t.Error("channel not closed after a failed wait")
	}
}

func TestShutdown(t *testing.T) {
	b, _ := openFake(t, "dgx1-v100")
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := b.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := b.Discover(context.Background()); !errors.Is(err, ErrShutdown) {
		t.Errorf("Discover after Shutdown: %v", err)
	}
	if _, err := b.Telemetry(context.Background()); !errors.Is(err, ErrShutdown) {
		t.Errorf("Telemetry after Shutdown: %v", err)
	}
	if _, err := b.WatchHealth(context.Background(), HealthConfig{}); !errors.Is(err, ErrShutdown) {
		t.Errorf("WatchHealth after Shutdown: %v", err)
	}
}

// TestWatchHealthProbesWait: a watch whose event wait fails is not
// reported armed (so the device plugin keeps the GPUs unhealthy instead of
// restoring them at every retry); once the wait works, it arms and
// delivers events.
func TestWatchHealthProbesWait(t *testing.T) {
	b, m := openFake(t, "pcie-4xl4")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.InjectError("Wait", -1, gonvml.ERROR_UNKNOWN); err != nil {
		t.Fatal(err)
	}
	ch, err := b.WatchHealth(ctx, HealthConfig{WaitTimeout: 10 * time.Millisecond})
	if err == nil || ch != nil || !errors.Is(err, gonvml.ERROR_UNKNOWN) || !strings.Contains(err.Error(), "NVML EventSet.Wait") {
		t.Fatalf("WatchHealth with a failing wait: %v, %v; want no channel and an error naming EventSet.Wait", ch, err)
	}
	m.ClearErrors()
	ch, err = b.WatchHealth(ctx, HealthConfig{WaitTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("WatchHealth after the wait works: %v", err)
	}
	if n := m.SendXid(1, 79); n != 1 {
		t.Fatalf("Xid reached %d event sets, want 1 (the failed probe's set must be freed)", n)
	}
	select {
	case ev := <-ch:
		if ev.Index != 1 || ev.Xid != 79 {
			t.Errorf("event %+v, want Xid 79 on GPU 1", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("no event within 1s")
	}
}
