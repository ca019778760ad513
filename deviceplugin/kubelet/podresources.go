package kubelet

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Owner is the container a device is assigned to.
type Owner struct {
	Namespace, Pod, Container string
}

// PodResources reads the kubelet's podresources API: which devices are
// assigned to which containers.
type PodResources struct {
	Socket  string
	Timeout time.Duration // per call, default 2s
}

// Assignments returns the devices of resource assigned to containers. An
// error means the API is not reachable (no kubelet, no permission).
func (p PodResources) Assignments(ctx context.Context, resource string) (map[string]Owner, error) {
	m, err := p.AssignmentsOf(ctx, resource)
	if err != nil {
		return nil, err
	}
	return m[resource], nil
}

// AssignmentsOf is Assignments for several resources from one List call,
// by resource name.
func (p PodResources) AssignmentsOf(ctx context.Context, resources ...string) (map[string]map[string]Owner, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("podresources: %w", err)
	}
	defer conn.Close()
	resp, err := podresourcesapi.NewPodResourcesListerClient(conn).List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("podresources list: %w", err)
	}
	out := make(map[string]map[string]Owner, len(resources))
	for _, r := range resources {
		out[r] = assignments(resp, r)
	}
	return out, nil
}

func assignments(resp *podresourcesapi.ListPodResourcesResponse, resource string) map[string]Owner {
	out := map[string]Owner{}
	for _, pod := range resp.GetPodResources() {
		for _, c := range pod.GetContainers() {
			for _, d := range c.GetDevices() {
				if d.GetResourceName() != resource {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					out[id] = Owner{Namespace: pod.GetNamespace(), Pod: pod.GetName(), Container: c.GetName()}
				}
			}
		}
	}
	return out
}
