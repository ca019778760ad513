package fake

import (
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestNames(t *testing.T) {
	want := []string{"dgx-a100", "dgx-h100", "dgx1-v100", "pcie-4xl4", "pcie-8x-2socket"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if _, err := New("dgx-z900"); err == nil || !strings.Contains(err.Error(), "pcie-4xl4") {
		t.Errorf("New(unknown) error %v does not list the machines", err)
	}
}

// TestShapes checks the raw NVML answers every fake gives, below the
// backend: bus IDs in NVML's 8-digit form, NVLink counts that add up, and
// a symmetric PCIe topology.
func TestShapes(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			m, err := New(name)
			if err != nil {
				t.Fatal(err)
			}
			sh, err := shapeOf(name)
			if err != nil {
				t.Fatal(err)
			}
			lib := m.Interface()
			n, ret := lib.DeviceGetCount()
			if ret != nvml.SUCCESS || n != len(sh.busIDs) || n != m.GPUCount() {
				t.Fatalf("DeviceGetCount = %d, %v", n, ret)
			}
			for i := range n {
				d, _ := lib.DeviceGetHandleByIndex(i)
				if d2, ret := lib.DeviceGetHandleByUUID(m.UUID(i)); ret != nvml.SUCCESS || d2 != d {
					t.Errorf("GPU %d: DeviceGetHandleByUUID: %v", i, ret)
				}
				if d2, ret := lib.DeviceGetHandleByPciBusId(m.BusID(i)); ret != nvml.SUCCESS || d2 != d {
					t.Errorf("GPU %d: DeviceGetHandleByPciBusId: %v", i, ret)
				}
				if !strings.HasPrefix(m.BusID(i), "00000000:") {
					t.Errorf("GPU %d: bus ID %s", i, m.BusID(i))
				}
				links := 0
				for l := 0; ; l++ {
					_, ret := d.GetNvLinkState(l)
					if ret != nvml.SUCCESS {
						break
					}
					links++
				}
				want := sh.switchLinks
				if sh.nvlinks != nil {
					for _, k := range sh.nvlinks[i] {
						want += k
					}
				}
				if links != want {
					t.Errorf("GPU %d: %d NVLink links, want %d", i, links, want)
				}
				for j := range n {
					o, _ := lib.DeviceGetHandleByIndex(j)
					a, _ := d.GetTopologyCommonAncestor(o)
					b, _ := o.GetTopologyCommonAncestor(d)
					if a != b || (i == j) != (a == nvml.TOPOLOGY_INTERNAL) {
						t.Errorf("GPU %d-%d: topology %d / %d", i, j, a, b)
					}
				}
			}
		})
	}
}

func TestInjectAndSend(t *testing.T) {
	m, err := New("pcie-4xl4")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InjectError("GetFrobnication", 0, nvml.ERROR_UNKNOWN); err == nil {
		t.Error("InjectError accepted an unknown call")
	}
	d, _ := m.Interface().DeviceGetHandleByIndex(1)
	if err := m.InjectError("GetName", 1, nvml.ERROR_GPU_IS_LOST); err != nil {
		t.Fatal(err)
	}
	if _, ret := d.GetName(); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("GetName after injection: %v", ret)
	}
	if err := m.InjectError("GetName", 1, nvml.SUCCESS); err != nil {
		t.Fatal(err)
	}
	if name, ret := d.GetName(); ret != nvml.SUCCESS || name != "NVIDIA L4" {
		t.Errorf("GetName after removing the fault: %q %v", name, ret)
	}

	// Events reach only sets registered for the GPU and type.
	if n := m.SendXid(1, 79); n != 0 {
		t.Errorf("Xid before registration reached %d sets", n)
	}
	set, _ := m.Interface().EventSetCreate()
	if ret := d.RegisterEvents(nvml.EventTypeXidCriticalError, set); ret != nvml.SUCCESS {
		t.Fatalf("RegisterEvents: %v", ret)
	}
	if ret := d.RegisterEvents(nvml.EventTypePState, set); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("RegisterEvents(unsupported) = %v", ret)
	}
	if n := m.SendXid(0, 79); n != 0 {
		t.Errorf("Xid on an unregistered GPU reached %d sets", n)
	}
	if n := m.SendXid(1, 79); n != 1 {
		t.Errorf("Xid reached %d sets, want 1", n)
	}
	ev, ret := set.Wait(1000)
	if ret != nvml.SUCCESS || ev.Device != d || ev.EventData != 79 || ev.EventType != nvml.EventTypeXidCriticalError {
		t.Errorf("Wait = %+v, %v", ev, ret)
	}
	if _, ret := set.Wait(1); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("empty Wait = %v, want ERROR_TIMEOUT", ret)
	}
	set.Free()
	if n := m.SendXid(1, 79); n != 0 {
		t.Errorf("Xid after Free reached %d sets", n)
	}
}

// TestHostUUIDs checks that fake machines of one shape on different hosts
// have distinct UUIDs, stable per host, and that no host is New.
func TestHostUUIDs(t *testing.T) {
	uuids := func(m *Machine) []string {
		var out []string
		for i := range m.GPUCount() {
			out = append(out, m.UUID(i))
		}
		return out
	}
	mk := func(host string) *Machine {
		m, err := NewHost("dgx-h100", host)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	plain, err := New("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	a, a2, b := uuids(mk("node-a")), uuids(mk("node-a")), uuids(mk("node-b"))
	if !slices.Equal(uuids(mk("")), uuids(plain)) {
		t.Errorf("NewHost with no host differs from New")
	}
	if !slices.Equal(a, a2) {
		t.Errorf("UUIDs of one host differ between builds: %v vs %v", a, a2)
	}
	seen := map[string]bool{}
	for _, id := range slices.Concat(a, b, uuids(plain)) {
		if seen[id] {
			t.Errorf("UUID %s on two machines", id)
		}
		seen[id] = true
	}
}
