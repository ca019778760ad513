package nvml

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// backend implements Backend on any go-nvml library, real or mock.
type backend struct {
	// mu guards lib: calls hold it for reading, Shutdown for writing, so
	// the library is never shut down under a running call.
	mu   sync.RWMutex
	lib  gonvml.Interface // nil after Shutdown
	stop chan struct{}    // closed by Shutdown to end health watches
	// watches counts running health watches; Shutdown waits for them
	// because NVML must not be shut down under an EventSet.Wait.
	watches sync.WaitGroup
}

// NewWithLibrary initialises lib and returns a backend on it. When Init
// fails it returns only the error: nothing may call into a library whose
// Init failed (the real one is not even loaded then).
func NewWithLibrary(lib gonvml.Interface) (Backend, error) {
	if ret := lib.Init(); ret != gonvml.SUCCESS {
		return nil, nvmlError("Init", -1, ret)
	}
	return &backend{lib: lib, stop: make(chan struct{})}, nil
}

// acquire returns the library with mu read-locked, or ErrShutdown.
func (b *backend) acquire() (gonvml.Interface, error) {
	b.mu.RLock()
	if b.lib == nil {
		b.mu.RUnlock()
		return nil, ErrShutdown
	}
	return b.lib, nil
}

func (b *backend) release() { b.mu.RUnlock() }

func (b *backend) Shutdown() error {
	b.mu.Lock()
	lib := b.lib
	if lib == nil {
		b.mu.Unlock()
		return nil
	}
	b.lib = nil
	close(b.stop)
	b.mu.Unlock()
	b.watches.Wait()
	if ret := lib.Shutdown(); ret != gonvml.SUCCESS {
		return nvmlError("Shutdown", -1, ret)
	}
	return nil
}

// device is one GPU handle with its NVML index and UUID.
type device struct {
	index int
	uuid  string
	dev   gonvml.Device
}

func devices(ctx context.Context, lib gonvml.Interface) ([]device, error) {
	n, ret := lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, nvmlError("DeviceGetCount", -1, ret)
	}
	devs := make([]device, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			return nil, nvmlError("DeviceGetHandleByIndex", i, ret)
		}
		uuid, ret := d.GetUUID()
		if ret != gonvml.SUCCESS {
			return nil, nvmlError("GetUUID", i, ret)
		}
		devs = append(devs, device{index: i, uuid: uuid, dev: d})
	}
	return devs, nil
}

func (b *backend) Discover(ctx context.Context) (*gpunode.Node, error) {
	lib, err := b.acquire()
	if err != nil {
		return nil, err
	}
	defer b.release()

	devs, err := devices(ctx, lib)
	if err != nil {
		return nil, fmt.Errorf("discover GPUs: %w", err)
	}
	node := &gpunode.Node{GPUs: make([]gpunode.GPU, len(devs)), Links: make([][]gpunode.Link, len(devs))}
	busToPos := map[string]int{}
	for p, d := range devs {
		gpu, err := describe(d)
		if err != nil {
			return nil, fmt.Errorf("discover GPU %d: %w", d.index, err)
		}
		node.GPUs[p] = gpu
		busToPos[gpu.PCIBusID] = p
		node.Links[p] = make([]gpunode.Link, len(devs))
	}

	// NVLink: count each GPU's links per peer from its own side, and note
	// which GPUs have links into an NVSwitch fabric.
	counts := make([][]int, len(devs))
	onSwitch := make([]bool, len(devs))
	for p, d := range devs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		counts[p], onSwitch[p], err = nvlinks(d, p, busToPos)
		if err != nil {
			return nil, fmt.Errorf("discover NVLinks of GPU %d: %w", d.index, err)
		}
	}

	for p := range devs {
		for q := p + 1; q < len(devs); q++ {
			lvl, ret := devs[p].dev.GetTopologyCommonAncestor(devs[q].dev)
			if ret != gonvml.SUCCESS {
				return nil, fmt.Errorf("discover link GPU %d-%d: %w", devs[p].index, devs[q].index, nvmlError("GetTopologyCommonAncestor", devs[p].index, ret))
			}
			// Both ends report the same links; take the larger count so
			// that one side's disabled link does not hide the pair.
			l := gpunode.Link{
				NVLinks:  max(counts[p][q], counts[q][p]),
				NVSwitch: onSwitch[p] && onSwitch[q],
				PCIe:     pcieLevel(lvl),
			}
			node.Links[p][q], node.Links[q][p] = l, l
		}
	}
	return node, nil
}

// describe reads one GPU's inventory.
func describe(d device) (gpunode.GPU, error) {
	gpu := gpunode.GPU{Index: d.index, UUID: d.uuid, Healthy: true, NUMANode: -1}
	var ret gonvml.Return
	if gpu.Product, ret = d.dev.GetName(); ret != gonvml.SUCCESS {
		return gpu, nvmlError("GetName", d.index, ret)
	}
	mem, ret := d.dev.GetMemoryInfo()
	if ret != gonvml.SUCCESS {
		return gpu, nvmlError("GetMemoryInfo", d.index, ret)
	}
	gpu.MemoryMiB = int64(mem.Total >> 20)
	pci, ret := d.dev.GetPciInfo()
	if ret != gonvml.SUCCESS {
		return gpu, nvmlError("GetPciInfo", d.index, ret)
	}
	gpu.PCIBusID = busID(pci)
	// NUMA affinity and MIG are missing on some platforms and older
	// GPUs; that is "unknown"/"off", not a failure.
	switch numa, ret := d.dev.GetNumaNodeId(); ret {
	case gonvml.SUCCESS:
		gpu.NUMANode = numa
	case gonvml.ERROR_NOT_SUPPORTED:
	default:
		return gpu, nvmlError("GetNumaNodeId", d.index, ret)
	}
	switch current, _, ret := d.dev.GetMigMode(); ret {
	case gonvml.SUCCESS:
		gpu.MIG = current == gonvml.DEVICE_MIG_ENABLE
	case gonvml.ERROR_NOT_SUPPORTED:
	default:
		return gpu, nvmlError("GetMigMode", d.index, ret)
	}
	return gpu, nil
}

// nvlinks walks GPU d's NVLink links. It returns the number of links to
// each peer (by position in busToPos) and whether d has links into an
// NVSwitch.
//
// A link's far end is a peer GPU when its PCI bus ID is one of the node's
// GPUs. Otherwise GetNvLinkRemoteDeviceType says what it is; where NVML
// cannot tell (NOT_SUPPORTED, older drivers) we take it for an NVSwitch:
// on x86 nodes the only NVLink peers besides GPUs are NVSwitches (IBM
// POWER NPUs never run Kubernetes GPU nodes we target).
func nvlinks(d device, self int, busToPos map[string]int) ([]int, bool, error) {
	counts := make([]int, len(busToPos))
	onSwitch := false
	for link := range gonvml.NVLINK_MAX_LINKS {
		state, ret := d.dev.GetNvLinkState(link)
		if ret == gonvml.ERROR_NOT_SUPPORTED || ret == gonvml.ERROR_INVALID_ARGUMENT {
			// No NVLink on this GPU, or no such link. Keep looking, as
			// go-gpuallocator does: link numbers need not be dense.
			continue
		}
		if ret != gonvml.SUCCESS {
			return nil, false, fmt.Errorf("link %d: %w", link, nvmlError("GetNvLinkState", d.index, ret))
		}
		if state != gonvml.FEATURE_ENABLED {
			continue
		}
		pci, ret := d.dev.GetNvLinkRemotePciInfo(link)
		if ret != gonvml.SUCCESS {
			return nil, false, fmt.Errorf("link %d: %w", link, nvmlError("GetNvLinkRemotePciInfo", d.index, ret))
		}
		if p, ok := busToPos[busID(pci)]; ok && p != self {
			counts[p]++
			continue
		}
		switch typ, ret := d.dev.GetNvLinkRemoteDeviceType(link); ret {
		case gonvml.SUCCESS:
			onSwitch = onSwitch || typ == gonvml.NVLINK_DEVICE_TYPE_SWITCH
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
			onSwitch = true
		default:
			return nil, false, fmt.Errorf("link %d: %w", link, nvmlError("GetNvLinkRemoteDeviceType", d.index, ret))
		}
	}
	return counts, onSwitch, nil
}

// busID is the normalised PCI bus ID of pci: the 8-digit domain form NVML
// uses ("00000000:07:00.0"), lower case, so that the GPUs' own IDs and the
// NVLink remote IDs compare equal.
func busID(pci gonvml.PciInfo) string {
	var sb strings.Builder
	for _, c := range pci.BusId {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	id := strings.ToLower(sb.String())
	if dom, rest, ok := strings.Cut(id, ":"); ok && len(dom) < 8 && strings.Count(id, ":") == 2 {
		id = strings.Repeat("0", 8-len(dom)) + dom + ":" + rest
	}
	if id == "" {
		// Some NVML builds leave BusId empty for NVLink remotes: build it
		// from the numeric fields.
		id = fmt.Sprintf("%08x:%02x:%02x.0", pci.Domain, pci.Bus, pci.Device)
	}
	return id
}

// pcieLevel maps NVML's topology level onto the model's, rounding an
// unknown level up to the next farther one.
func pcieLevel(l gonvml.GpuTopologyLevel) gpunode.PCIeLevel {
	switch {
	case l <= gonvml.TOPOLOGY_INTERNAL:
		return gpunode.PCIeSameBoard
	case l <= gonvml.TOPOLOGY_SINGLE:
		return gpunode.PCIeSingleSwitch
	case l <= gonvml.TOPOLOGY_MULTIPLE:
		return gpunode.PCIeMultiSwitch
	case l <= gonvml.TOPOLOGY_HOSTBRIDGE:
		return gpunode.PCIeHostBridge
	case l <= gonvml.TOPOLOGY_NODE:
		return gpunode.PCIeSameNUMA
	default:
		return gpunode.PCIeCrossCPU
	}
}

func (b *backend) Telemetry(ctx context.Context) ([]Telemetry, error) {
	lib, err := b.acquire()
	if err != nil {
		return nil, err
	}
	defer b.release()

	devs, err := devices(ctx, lib)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	out := make([]Telemetry, 0, len(devs))
	var errs []error
	// read records a metric's failure unless the GPU does not support it.
	read := func(call string, index int, ret gonvml.Return) bool {
		if ret == gonvml.SUCCESS {
			return true
		}
		if ret != gonvml.ERROR_NOT_SUPPORTED {
			errs = append(errs, nvmlError(call, index, ret))
		}
		return false
	}
	for _, d := range devs {
		t := Telemetry{Index: d.index, UUID: d.uuid}
		if u, ret := d.dev.GetUtilizationRates(); read("GetUtilizationRates", d.index, ret) {
			t.GPUUtilPercent, t.MemUtilPercent = &u.Gpu, &u.Memory
		}
		if m, ret := d.dev.GetMemoryInfo(); read("GetMemoryInfo", d.index, ret) {
			used, total := int64(m.Used>>20), int64(m.Total>>20)
			t.MemoryUsedMiB, t.MemoryTotalMiB = &used, &total
		}
		if c, ret := d.dev.GetTemperature(gonvml.TEMPERATURE_GPU); read("GetTemperature", d.index, ret) {
			t.TemperatureC = &c
		}
		if mw, ret := d.dev.GetPowerUsage(); read("GetPowerUsage", d.index, ret) {
			w := float64(mw) / 1000
			t.PowerWatts = &w
		}
		out = append(out, t)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("telemetry: %w", errors.Join(errs...))
	}
	return out, nil
}

// healthEvents are the NVML events that make a GPU unhealthy.
const healthEvents = gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError

func (b *backend) WatchHealth(ctx context.Context, cfg HealthConfig) (<-chan HealthEvent, error) {
	lib, err := b.acquire()
	if err != nil {
		return nil, err
	}
	defer b.release()

	ignored := cfg.IgnoredXids
	if ignored == nil {
		ignored = DefaultIgnoredXids()
	}
	timeout := cfg.WaitTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	timeoutMs := uint32(max(timeout/time.Millisecond, 1))

	devs, err := devices(ctx, lib)
	if err != nil {
		return nil, fmt.Errorf("watch health: %w", err)
	}
	set, ret := lib.EventSetCreate()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("watch health: %w", nvmlError("EventSetCreate", -1, ret))
	}
	// Room for one event per GPU from registration, and some slack, so
	// that registering never blocks on a slow reader.
	ch := make(chan HealthEvent, 2*len(devs)+8)
	for _, d := range devs {
		// As NVIDIA's device plugin does: a GPU whose events cannot be
		// registered is unhealthy, except one too old to have them.
		supported, ret := d.dev.GetSupportedEventTypes()
		if ret == gonvml.ERROR_NOT_SUPPORTED {
			continue
		}
		if ret != gonvml.SUCCESS {
			ch <- HealthEvent{Index: d.index, UUID: d.uuid, Reason: nvmlError("GetSupportedEventTypes", d.index, ret).Error()}
			continue
		}
		mask := healthEvents & supported
		if mask == 0 {
			continue
		}
		if ret := d.dev.RegisterEvents(mask, set); ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
			ch <- HealthEvent{Index: d.index, UUID: d.uuid, Reason: nvmlError("RegisterEvents", d.index, ret).Error()}
		}
	}

	// Probe the event wait once before reporting the watch armed. A
	// library whose wait fails would otherwise look healthy again at
	// every re-arm, and the GPUs would flap between healthy and not for as
	// long as the fault lasts. An event the probe returns is handled first.
	first, ret := set.Wait(0)
	if ret != gonvml.SUCCESS && ret != gonvml.ERROR_TIMEOUT {
		set.Free()
		return nil, fmt.Errorf("watch health: %w", nvmlError("EventSet.Wait", -1, ret))
	}
	pending := ret == gonvml.SUCCESS

	b.watches.Add(1)
	go func() {
		defer b.watches.Done()
		defer close(ch)
		defer set.Free()
		send := func(ev HealthEvent) bool {
			select {
			case ch <- ev:
				return true
			case <-ctx.Done():
			case <-b.stop:
			}
			return false
		}
		all := func(reason string) bool {
			for _, d := range devs {
				if !send(HealthEvent{Index: d.index, UUID: d.uuid, Reason: reason}) {
					return false
				}
			}
			return true
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.stop:
				return
			default:
			}
			ev, ret := first, gonvml.SUCCESS
			if pending {
				pending = false
			} else {
				ev, ret = set.Wait(timeoutMs)
			}
			if ret == gonvml.ERROR_TIMEOUT {
				continue
			}
			if ret != gonvml.SUCCESS {
				all(nvmlError("EventSet.Wait", -1, ret).Error() + "; marking every GPU unhealthy")
				return
			}
			if ev.EventType&healthEvents == 0 {
				continue
			}
			if ev.EventType == gonvml.EventTypeXidCriticalError && slices.Contains(ignored, ev.EventData) {
				continue
			}
			reason := describeEvent(ev)
			d, ok := lookup(devs, ev.Device)
			if !ok {
				// NVML could not say which GPU: all are suspect.
				if !all(reason + " on an unknown GPU") {
					return
				}
				continue
			}
			hev := HealthEvent{Index: d.index, UUID: d.uuid, EventType: ev.EventType, Reason: reason}
			if ev.EventType == gonvml.EventTypeXidCriticalError {
				hev.Xid = ev.EventData
			}
			if !send(hev) {
				return
			}
		}
	}()
	return ch, nil
}

func describeEvent(ev gonvml.EventData) string {
	switch ev.EventType {
	case gonvml.EventTypeXidCriticalError:
		return fmt.Sprintf("Xid %d critical error", ev.EventData)
	case gonvml.EventTypeDoubleBitEccError:
		return "double-bit ECC error"
	}
	return fmt.Sprintf("NVML event type %#x data %d", ev.EventType, ev.EventData)
}

// lookup finds the GPU an event names, by handle, else by UUID.
func lookup(devs []device, dev gonvml.Device) (device, bool) {
	if dev == nil {
		return device{}, false
	}
	for _, d := range devs {
		if d.dev == dev {
			return d, true
		}
	}
	if uuid, ret := dev.GetUUID(); ret == gonvml.SUCCESS {
		for _, d := range devs {
			if d.uuid == uuid {
				return d, true
			}
		}
	}
	return device{}, false
}
