package kubelet

import (
	"slices"
	"testing"

	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

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
