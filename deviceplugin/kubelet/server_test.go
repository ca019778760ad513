package kubelet

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kubegpu/kubegpu/deviceplugin/allocation"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func TestContainerResponse(t *testing.T) {
	tests := []struct {
		name    string
		ids     []string
		cdi     bool
		wantEnv string
		wantCDI []string
	}{
		{"plain", []string{"GPU-a", "GPU-b"}, false, "GPU-a,GPU-b", nil},
		{"cdi", []string{"GPU-a"}, true, "GPU-a", []string{"nvidia.com/gpu=GPU-a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ContainerResponse(tt.ids, "compute,utility", tt.cdi)
			if r.Envs["NVIDIA_VISIBLE_DEVICES"] != tt.wantEnv || r.Envs["NVIDIA_DRIVER_CAPABILITIES"] != "compute,utility" {
				t.Errorf("envs %v", r.Envs)
			}
			var cdi []string
			for _, d := range r.CdiDevices {
				cdi = append(cdi, d.Name)
			}
			if !slices.Equal(cdi, tt.wantCDI) {
				t.Errorf("CDI devices %v, want %v", cdi, tt.wantCDI)
			}
		})
	}
}

func TestDevices(t *testing.T) {
	n := gpunode.MustShape("dgx-h100")
	n.GPUs[6].Healthy = false
	n.GPUs[1].NUMANode = -1
	devs := Devices(n)
	if len(devs) != 8 || devs[0].ID != n.GPUs[0].UUID || devs[6].Health != "Unhealthy" || devs[5].Health != "Healthy" {
		t.Fatalf("devices %v", devs)
	}
	if devs[5].Topology.Nodes[0].ID != 1 || devs[1].Topology != nil {
		t.Errorf("topology %v / %v", devs[5].Topology, devs[1].Topology)
	}
}

func TestAssignments(t *testing.T) {
	resp := &podresourcesapi.ListPodResourcesResponse{PodResources: []*podresourcesapi.PodResources{{
		Name: "p", Namespace: "ns", Containers: []*podresourcesapi.ContainerResources{{
			Name: "c", Devices: []*podresourcesapi.ContainerDevices{
				{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-a", "GPU-b"}},
				{ResourceName: "example.com/nic", DeviceIds: []string{"nic0"}},
			},
		}},
	}}}
	got := assignments(resp, "nvidia.com/gpu")
	if len(got) != 2 || got["GPU-b"] != (Owner{"ns", "p", "c"}) {
		t.Errorf("assignments %v", got)
	}
}

func TestSlotDevices(t *testing.T) {
	n := gpunode.MustShape("dgx-h100")
	n.GPUs[6].Healthy = false
	devs := SlotDevices(n)
	if len(devs) != 8*allocation.SlotsPerGPU {
		t.Fatalf("%d slots, want %d", len(devs), 8*allocation.SlotsPerGPU)
	}
	for _, d := range devs {
		uuid, _, ok := allocation.ParseSlot(d.ID)
		i := slices.IndexFunc(n.GPUs, func(g gpunode.GPU) bool { return g.UUID == uuid })
		if !ok || i < 0 {
			t.Fatalf("slot %q names no GPU", d.ID)
		}
		if want := map[bool]string{true: "Healthy", false: "Unhealthy"}[n.GPUs[i].Healthy]; d.Health != want {
			t.Fatalf("slot %s health %s, want %s", d.ID, d.Health, want)
		}
		if d.Topology.Nodes[0].ID != int64(n.GPUs[i].NUMANode) {
			t.Fatalf("slot %s NUMA %v", d.ID, d.Topology)
		}
	}
}

func TestShareEnv(t *testing.T) {
	tests := []struct {
		milli int
		mem   int64
		want  map[string]string
	}{
		{250, 81559, map[string]string{EnvGPUMilli: "250", EnvGPUMemoryLimit: "20389", EnvMPSThreads: "25", EnvMPSMemory: "0=20389M"}},
		{1, 16384, map[string]string{EnvGPUMilli: "1", EnvGPUMemoryLimit: "16", EnvMPSThreads: "1", EnvMPSMemory: "0=16M"}},
		{999, 1000, map[string]string{EnvGPUMilli: "999", EnvGPUMemoryLimit: "999", EnvMPSThreads: "100", EnvMPSMemory: "0=999M"}},
	}
	for _, tt := range tests {
		if got := ShareEnv(tt.milli, tt.mem); !maps.Equal(got, tt.want) {
			t.Errorf("ShareEnv(%d, %d) = %v, want %v", tt.milli, tt.mem, got, tt.want)
		}
	}
}

// BenchmarkSlotListAndWatch measures what one ListAndWatch message of the
// share resource costs on an 8- and a 16-GPU node: building it and
// marshalling it as gRPC does. It reports the message size.
func BenchmarkSlotListAndWatch(b *testing.B) {
	for _, gpus := range []int{8, 16} {
		n := gpunode.MustShape("dgx-h100")
		for len(n.GPUs) < gpus {
			g := n.GPUs[0]
			g.UUID = fmt.Sprintf("GPU-%08x-0000-0000-0000-000000000000", len(n.GPUs))
			n.GPUs = append(n.GPUs, g)
		}
		b.Run(fmt.Sprintf("gpus=%d", gpus), func(b *testing.B) {
			var size int
			for b.Loop() {
				raw, err := proto.Marshal(&pluginapi.ListAndWatchResponse{Devices: SlotDevices(n)})
				if err != nil {
					b.Fatal(err)
				}
				size = len(raw)
			}
			b.ReportMetric(float64(size), "bytes/msg")
		})
	}
}
