// Package kubeletdm runs the kubelet's own device manager
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager) in-process on a folder
// of the caller's choosing, so device plugins register with and are called
// by the real kubelet code without a kubelet: the device plugin tests, the
// end-to-end tests and the embedded demo use it.
//
// Never point it at /var/lib/kubelet/device-plugins on a machine with a
// real kubelet: the device manager's Start deletes every file in its
// folder except the checkpoint.
package kubeletdm

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	_ "unsafe" // for go:linkname

	cadvisorapi "github.com/google/cadvisor/lib/model"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
)

// newManagerImpl is the device manager's constructor that takes the
// registration socket path; the exported one hard-codes
// /var/lib/kubelet/device-plugins. Kept in this one place because a k8s
// upgrade may rename it.
//
//go:linkname newManagerImpl k8s.io/kubernetes/pkg/kubelet/cm/devicemanager.newManagerImpl
func newManagerImpl(logger klog.Logger, socketPath string, topology []cadvisorapi.Node, store topologymanager.Store) (*devicemanager.ManagerImpl, error)

// NewManagerImpl returns the kubelet's device manager listening for
// registrations on socketPath (kubelet.sock in the plugin folder), not
// started. Unix socket paths must stay under 108 bytes.
func NewManagerImpl(logger klog.Logger, socketPath string) (*devicemanager.ManagerImpl, error) {
	if len(socketPath) >= 108 {
		return nil, fmt.Errorf("kubelet socket path %q is %d bytes, unix sockets allow 107", socketPath, len(socketPath))
	}
	m, err := newManagerImpl(logger, socketPath, nil, topologymanager.NewFakeManager(logger))
	if err != nil {
		return nil, fmt.Errorf("device manager: %w", err)
	}
	return m, nil
}

// Manager is a started device manager with the pods it treats as active
// (the kubelet frees the devices of pods that are not).
type Manager struct {
	// Dir is the plugin folder: kubelet.sock and the plugins' sockets.
	Dir string
	// Impl is the kubelet's device manager itself.
	Impl *devicemanager.ManagerImpl

	mu   sync.Mutex
	pods []*v1.Pod
}

// Start runs a device manager on dir, as a (re)started kubelet does: it
// deletes the folder's sockets and creates kubelet.sock.
func Start(dir string) (*Manager, error) {
	logger := klog.Background()
	impl, err := NewManagerImpl(logger, filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		return nil, err
	}
	m := &Manager{Dir: dir, Impl: impl}
	active := func() []*v1.Pod {
		m.mu.Lock()
		defer m.mu.Unlock()
		return slices.Clone(m.pods)
	}
	ready := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	if err := impl.Start(logger, active, ready, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		return nil, fmt.Errorf("device manager start: %w", err)
	}
	return m, nil
}

// Stop stops the device manager.
func (m *Manager) Stop() error {
	if err := m.Impl.Stop(klog.Background()); err != nil {
		return fmt.Errorf("device manager stop: %w", err)
	}
	return nil
}

// Allocatable is the kubelet's allocatable of each device plugin
// resource, as it reports them on its Node.
func (m *Manager) Allocatable() v1.ResourceList {
	_, a, _ := m.Impl.GetCapacity(klog.Background())
	return a
}

// Admit does what the kubelet does when it admits pod and starts its
// containers: device allocation (the device plugins'
// GetPreferredAllocation and Allocate), then each container's run
// options. It returns each container's environment by container name.
// The pod stays active until Forget.
func (m *Manager) Admit(ctx context.Context, pod *v1.Pod) (map[string]map[string]string, error) {
	m.mu.Lock()
	if !slices.ContainsFunc(m.pods, func(p *v1.Pod) bool { return p.UID == pod.UID }) {
		m.pods = append(m.pods, pod)
	}
	m.mu.Unlock()
	envs := map[string]map[string]string{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if err := m.Impl.Allocate(ctx, pod, c, lifecycle.AddOperation); err != nil {
			return nil, fmt.Errorf("pod %s/%s container %s: allocate: %w", pod.Namespace, pod.Name, c.Name, err)
		}
		opts, err := m.Impl.GetDeviceRunContainerOptions(ctx, pod, c)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s container %s: run options: %w", pod.Namespace, pod.Name, c.Name, err)
		}
		env := map[string]string{}
		if opts != nil {
			for _, e := range opts.Envs {
				env[e.Name] = e.Value
			}
		}
		envs[c.Name] = env
	}
	return envs, nil
}

// Forget makes the pod inactive, as when it ends: the device manager
// frees its devices at its next allocation.
func (m *Manager) Forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pods = slices.DeleteFunc(m.pods, func(p *v1.Pod) bool { return p.UID == uid })
}
