package kubelet

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

type fakeLister struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	resp *podresourcesapi.ListPodResourcesResponse
}

func (f fakeLister) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	return f.resp, nil
}

// TestPodResourcesSocket reads assignments over a real unix socket, and
// fails cleanly where no kubelet listens.
func TestPodResourcesSocket(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "kgpr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "kubelet.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(srv, fakeLister{resp: &podresourcesapi.ListPodResourcesResponse{
		PodResources: []*podresourcesapi.PodResources{{Name: "p", Namespace: "ns", Containers: []*podresourcesapi.ContainerResources{{
			Name: "c", Devices: []*podresourcesapi.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-a"}}},
		}}}},
	}})
	go srv.Serve(lis)
	defer srv.Stop()

	tests := []struct {
		name    string
		socket  string
		want    map[string]Owner
		wantErr bool
	}{
		{"kubelet up", sock, map[string]Owner{"GPU-a": {"ns", "p", "c"}}, false},
		{"no kubelet", filepath.Join(dir, "missing.sock"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodResources{Socket: tt.socket}.Assignments(context.Background(), "nvidia.com/gpu")
			if (err != nil) != tt.wantErr || len(got) != len(tt.want) || got["GPU-a"] != tt.want["GPU-a"] {
				t.Errorf("Assignments = %v, %v", got, err)
			}
		})
	}
}
