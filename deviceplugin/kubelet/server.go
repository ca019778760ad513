// Package kubelet speaks to the kubelet: it serves the device plugin API
// (v1beta1) on a socket in the device plugin folder, registers with the
// kubelet's Registration service, re-registers when the kubelet restarts,
// and reads the kubelet's podresources API. Which devices exist and which
// ones a container should get are decided elsewhere (inventory, Chooser).
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/kubegpu/kubegpu/deviceplugin/allocation"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// Chooser decides device sets for the kubelet's requests.
type Chooser interface {
	// Preferred returns size IDs out of available, including mustInclude.
	Preferred(ctx context.Context, available, mustInclude []string, size int) []string
	// Allocating is told about every container allocation, to compare it
	// with the scheduler's choice. It returns what the container gets, or
	// an error to refuse the allocation (the kubelet then fails the pod).
	Allocating(ctx context.Context, ids []string) (Grant, error)
}

// Grant is what one container receives: the GPUs it sees and, for a
// share, the environment that describes the share.
type Grant struct {
	GPUs []string
	Env  map[string]string
}

// Config configures the Server.
type Config struct {
	ResourceName string // e.g. nvidia.com/gpu
	PluginDir    string // the kubelet's device plugin folder
	// CDI adds CDI device names (nvidia.com/gpu=UUID) to Allocate answers.
	CDI bool
	// Shares serves the GPU-share resource: the devices are share slots
	// (allocation.SlotsPerGPU per GPU) instead of whole GPUs.
	Shares bool
	// DriverCapabilities is NVIDIA_DRIVER_CAPABILITIES (default
	// "compute,utility").
	DriverCapabilities string
	// Resync re-checks the sockets this often besides file events, in
	// case an event was lost (default 2s).
	Resync time.Duration
}

// Server is the device plugin gRPC server and its kubelet registration.
type Server struct {
	pluginapi.UnimplementedDevicePluginServer

	cfg     Config
	inv     *inventory.Inventory
	chooser Chooser
	socket  string // our socket's path

	mu            sync.Mutex
	registrations int
	onRegister    []func(time.Time)
}

// New returns a server for inv's GPUs; Run starts it.
func New(cfg Config, inv *inventory.Inventory, chooser Chooser) *Server {
	if cfg.DriverCapabilities == "" {
		cfg.DriverCapabilities = "compute,utility"
	}
	// fsnotify names files by the watched path: keep it clean so that
	// event names compare equal to our paths.
	cfg.PluginDir = filepath.Clean(cfg.PluginDir)
	if cfg.Resync <= 0 {
		cfg.Resync = 2 * time.Second
	}
	name := "kubegpu-" + strings.NewReplacer("/", "-", ".", "-").Replace(cfg.ResourceName) + ".sock"
	return &Server{cfg: cfg, inv: inv, chooser: chooser, socket: filepath.Join(cfg.PluginDir, name)}
}

// SocketPath is where the server listens.
func (s *Server) SocketPath() string { return s.socket }

// Registrations counts successful registrations with the kubelet.
func (s *Server) Registrations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registrations
}

// OnRegister adds a callback run after every successful registration.
func (s *Server) OnRegister(f func(time.Time)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onRegister = append(s.onRegister, f)
}

// inode identifies a socket file, so that a recreated file is noticed
// even under the same name; 0 when missing.
func inode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 1
}

// Run serves and registers until ctx ends. It watches the plugin folder
// with fsnotify, so a kubelet restart (which deletes our socket and
// recreates kubelet.sock) is handled within milliseconds; a periodic
// resync covers lost events.
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("kubelet")
	ctx = klog.NewContext(ctx, logger)
	if err := os.MkdirAll(s.cfg.PluginDir, 0o755); err != nil {
		return fmt.Errorf("device plugin dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch device plugin dir: %w", err)
	}
	defer w.Close()
	if err := w.Add(s.cfg.PluginDir); err != nil {
		return fmt.Errorf("watch device plugin dir %s: %w", s.cfg.PluginDir, err)
	}

	var (
		srv        *grpc.Server
		served     uint64 // inode of our socket
		registered uint64 // inode of the kubelet.sock we registered with
		retry      <-chan time.Time
		retryDelay = 50 * time.Millisecond
	)
	stop := func() {
		if srv != nil {
			srv.Stop()
			srv = nil
		}
	}
	defer func() {
		stop()
		_ = os.Remove(s.socket)
	}()
	kubeletSock := filepath.Join(s.cfg.PluginDir, filepath.Base(pluginapi.KubeletSocket))
	resync := func() {
		if served == 0 || inode(s.socket) != served {
			stop()
			var err error
			if srv, served, err = s.serve(ctx); err != nil {
				logger.Error(err, "Cannot serve the device plugin socket")
				retry = time.After(retryDelay)
				return
			}
			registered = 0 // a new socket must be announced again
		}
		k := inode(kubeletSock)
		if k == 0 || k == registered {
			return
		}
		start := time.Now()
		if err := s.register(ctx, kubeletSock); err != nil {
			logger.V(2).Info("Registration with the kubelet failed; retrying", "err", err)
			retry = time.After(retryDelay)
			return
		}
		registered = k
		logger.Info("Registered with the kubelet", "resource", s.cfg.ResourceName, "socket", s.socket, "took", time.Since(start))
		s.mu.Lock()
		s.registrations++
		cbs := append([]func(time.Time){}, s.onRegister...)
		s.mu.Unlock()
		for _, f := range cbs {
			f(time.Now())
		}
	}
	tick := time.NewTicker(s.cfg.Resync)
	defer tick.Stop()
	resync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("device plugin dir watch closed")
			}
			if ev.Name == kubeletSock || ev.Name == s.socket {
				resync()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("device plugin dir watch closed")
			}
			logger.Error(err, "Watching the device plugin dir")
			resync()
		case <-retry:
			retry = nil
			resync()
		case <-tick.C:
			resync()
		}
	}
}

// serve listens on a fresh socket and serves the device plugin API.
func (s *Server) serve(ctx context.Context) (*grpc.Server, uint64, error) {
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", s.socket)
	if err != nil {
		return nil, 0, fmt.Errorf("listen on %s: %w", s.socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, s)
	go func() {
		if err := srv.Serve(lis); err != nil {
			klog.FromContext(ctx).V(2).Info("Device plugin server stopped", "err", err)
		}
	}()
	return srv, inode(s.socket), nil
}

// register announces our socket to the kubelet's Registration service.
func (s *Server) register(ctx context.Context, kubeletSock string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial kubelet: %w", err)
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(s.socket),
		ResourceName: s.cfg.ResourceName,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("register with kubelet: %w", err)
	}
	return nil
}

// Devices converts the inventory's GPUs to the kubelet's device list:
// IDs are GPU UUIDs, with the GPU's NUMA node for the topology manager.
func Devices(node *gpunode.Node) []*pluginapi.Device {
	out := make([]*pluginapi.Device, 0, len(node.GPUs))
	for _, g := range node.GPUs {
		d := &pluginapi.Device{ID: g.UUID, Health: pluginapi.Healthy}
		if !g.Healthy {
			d.Health = pluginapi.Unhealthy
		}
		if g.NUMANode >= 0 {
			d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(g.NUMANode)}}}
		}
		out = append(out, d)
	}
	return out
}

func (s *Server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// SlotDevices is the share resource's device list: allocation.SlotsPerGPU
// slots per GPU, with the GPU's health and NUMA node, so that an unhealthy
// GPU takes all its slots out of the kubelet's allocatable.
func SlotDevices(node *gpunode.Node) []*pluginapi.Device {
	out := make([]*pluginapi.Device, 0, len(node.GPUs)*allocation.SlotsPerGPU)
	for _, gpu := range Devices(node) {
		for n := range allocation.SlotsPerGPU {
			// Health and topology are shared per GPU: the message is
			// serialised at once, and sharing saves 8000 allocations.
			out = append(out, &pluginapi.Device{ID: allocation.SlotID(gpu.ID, n), Health: gpu.Health, Topology: gpu.Topology})
		}
	}
	return out
}

// devices is this server's device list.
func (s *Server) devices(node *gpunode.Node) []*pluginapi.Device {
	if s.cfg.Shares {
		return SlotDevices(node)
	}
	return Devices(node)
}

// ListAndWatch sends the device list now and after every health change.
func (s *Server) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		node, changed := s.inv.Snapshot()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: s.devices(node)}); err != nil {
			return fmt.Errorf("send device list: %w", err)
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (s *Server) GetPreferredAllocation(ctx context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.ContainerRequests {
		ids := s.chooser.Preferred(ctx, c.AvailableDeviceIDs, c.MustIncludeDeviceIDs, int(c.AllocationSize))
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

func (s *Server) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	node, _ := s.inv.Snapshot()
	devs := s.devices(node)
	known := make(map[string]bool, len(devs))
	for _, d := range devs {
		known[d.ID] = true
	}
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !known[id] {
				return nil, fmt.Errorf("allocate: unknown device %q", id)
			}
		}
		g, err := s.chooser.Allocating(ctx, c.DevicesIds)
		if err != nil {
			return nil, fmt.Errorf("allocate %s: %w", s.cfg.ResourceName, err)
		}
		r := ContainerResponse(g.GPUs, s.cfg.DriverCapabilities, s.cfg.CDI)
		for k, v := range g.Env {
			r.Envs[k] = v
		}
		resp.ContainerResponses = append(resp.ContainerResponses, r)
	}
	return resp, nil
}

// Environment variables that describe a GPU share to the container. The
// plugin enforces none of them: the share is what the scheduler booked,
// and keeping to it is up to the workload (frameworks that cap memory,
// e.g. PyTorch's set_per_process_memory_fraction) or to an MPS daemon.
const (
	// EnvGPUMilli is the share in thousandths of the GPU (1-999).
	EnvGPUMilli = "KUBEGPU_GPU_MILLI"
	// EnvGPUMemoryLimit is the share of the GPU's memory in MiB
	// (memory * milli / 1000, rounded down).
	EnvGPUMemoryLimit = "KUBEGPU_GPU_MEMORY_LIMIT_MIB"
	// EnvMPSThreads is read by CUDA MPS clients: the share of the GPU's
	// SMs (percent, milli/10 rounded up) the client may use. Ignored
	// without an MPS daemon.
	EnvMPSThreads = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
	// EnvMPSMemory is read by CUDA MPS clients (Volta and later): the
	// device memory limit, "0=<MiB>M" for the one visible GPU. Ignored
	// without an MPS daemon.
	EnvMPSMemory = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
)

// ShareEnv is the environment of a container holding milli of a GPU with
// memMiB of memory.
func ShareEnv(milli int, memMiB int64) map[string]string {
	mem := memMiB * int64(milli) / 1000
	return map[string]string{
		EnvGPUMilli:       strconv.Itoa(milli),
		EnvGPUMemoryLimit: strconv.FormatInt(mem, 10),
		EnvMPSThreads:     strconv.Itoa((milli + 9) / 10),
		EnvMPSMemory:      "0=" + strconv.FormatInt(mem, 10) + "M",
	}
}

// ContainerResponse is what a container with GPUs ids gets: the NVIDIA
// container runtime reads NVIDIA_VISIBLE_DEVICES, and with CDI the runtime
// injects the named CDI devices instead.
func ContainerResponse(ids []string, capabilities string, cdi bool) *pluginapi.ContainerAllocateResponse {
	r := &pluginapi.ContainerAllocateResponse{Envs: map[string]string{
		"NVIDIA_VISIBLE_DEVICES":     strings.Join(ids, ","),
		"NVIDIA_DRIVER_CAPABILITIES": capabilities,
	}}
	if cdi {
		for _, id := range ids {
			r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: "nvidia.com/gpu=" + id})
		}
	}
	return r
}

func (s *Server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
