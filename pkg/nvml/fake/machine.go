// Package fake builds NVML libraries shaped like real GPU servers from
// go-nvml's mock package, for tests and demos without a GPU. The same
// discovery code that runs on the real library runs on these: a fake is an
// nvml.Interface, nothing more, plus a Machine handle that injects faults
// and health events.
package fake

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/google/uuid"
)

// Names lists the fake machines, sorted.
func Names() []string {
	names := make([]string, 0, len(machines))
	for n := range machines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SupportedEvents are the NVML event types every fake GPU can report.
const SupportedEvents = nvml.EventTypeXidCriticalError | nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError

// Calls that InjectError accepts. System calls (Init, Shutdown,
// DeviceGetCount, EventSetCreate, Wait) ignore the index; for
// DeviceGetHandleByIndex the index is the argument.
var injectable = []string{
	"Init", "Shutdown", "DeviceGetCount", "DeviceGetHandleByIndex", "EventSetCreate", "Wait",
	"GetUUID", "GetName", "GetMemoryInfo", "GetMigMode", "GetPciInfo", "GetNumaNodeId",
	"GetTopologyCommonAncestor", "GetNvLinkState", "GetNvLinkRemotePciInfo",
	"GetNvLinkRemoteDeviceType", "GetP2PStatus", "GetUtilizationRates", "GetTemperature",
	"GetPowerUsage", "GetSupportedEventTypes", "RegisterEvents",
}

var systemCalls = map[string]bool{"Init": true, "Shutdown": true, "DeviceGetCount": true, "EventSetCreate": true, "Wait": true}

// Calls returns the call names InjectError accepts.
func Calls() []string { return slices.Clone(injectable) }

type faultKey struct {
	call  string
	index int
}

// Machine is one fake GPU server. Its Interface is what the backend talks
// to; the other methods steer it from a test.
type Machine struct {
	name  string
	host  string
	shape shape
	srv   *server.Server
	devs  []*server.Device

	mu     sync.Mutex
	faults map[faultKey]nvml.Return
	util   []nvml.Utilization
	sets   map[*eventSet]bool
}

// eventSet is a mock EventSet fed by SendXid/SendEvent.
type eventSet struct {
	mock.EventSet
	events chan nvml.EventData
	// masks[i] is the event mask registered for GPU i.
	masks map[int]uint64
}

// New builds the fake machine NAME (see Names).
func New(name string) (*Machine, error) { return NewHost(name, "") }

// NewHost builds the fake machine NAME as host HOST: its GPU UUIDs are
// derived from the host name too, so several fake machines of one shape
// (a fake cluster) have distinct UUIDs, as real GPUs do. An empty host is
// New.
func NewHost(name, host string) (*Machine, error) {
	if _, ok := machines[name]; !ok {
		return nil, fmt.Errorf("unknown fake NVML machine %q (valid: %s)", name, strings.Join(Names(), ", "))
	}
	sh, err := shapeOf(name)
	if err != nil {
		return nil, err
	}
	m := &Machine{
		name:   name,
		host:   host,
		shape:  sh,
		srv:    sh.newServer(),
		faults: map[faultKey]nvml.Return{},
		sets:   map[*eventSet]bool{},
	}
	for i, d := range m.srv.Devices {
		dev := d.(*server.Device)
		// Product and memory are the shape's, whatever the mock's GPU
		// model says.
		g := sh.node.GPUs[i]
		dev.Config.Name = g.Product
		dev.Config.MemoryMB = uint64(g.MemoryMiB)
		dev.MemoryInfo = nvml.Memory{Total: uint64(g.MemoryMiB) << 20}
		m.devs = append(m.devs, dev)
		m.util = append(m.util, nvml.Utilization{Gpu: uint32(i*13+7) % 100, Memory: uint32(i*7+3) % 100})
	}
	m.wireSystem()
	for i := range m.devs {
		m.wireDevice(i)
	}
	return m, nil
}

// Name is the machine's name as New was given it.
func (m *Machine) Name() string { return m.name }

// Interface is the NVML library of this machine.
func (m *Machine) Interface() nvml.Interface { return m.srv }

// GPUCount is the number of GPUs.
func (m *Machine) GPUCount() int { return len(m.devs) }

// UUID returns GPU index's UUID, stable across runs: derived from the
// machine name (and host, see NewHost) and the index so tests and demos
// are reproducible.
func (m *Machine) UUID(index int) string { return m.devs[index].UUID }

// BusID returns GPU index's PCI bus ID (00000000:xx:00.0).
func (m *Machine) BusID(index int) string { return m.devs[index].PciBusID }

// InjectError makes call return ret for GPU index from now on (index -1:
// every GPU). ret SUCCESS removes the fault. Unknown call names are an
// error so that a typo does not silently test nothing.
func (m *Machine) InjectError(call string, index int, ret nvml.Return) error {
	if !slices.Contains(injectable, call) {
		return fmt.Errorf("fake: cannot inject into %q (valid: %s)", call, strings.Join(injectable, ", "))
	}
	if systemCalls[call] {
		index = -1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ret == nvml.SUCCESS {
		delete(m.faults, faultKey{call, index})
	} else {
		m.faults[faultKey{call, index}] = ret
	}
	return nil
}

// ClearErrors removes every injected fault.
func (m *Machine) ClearErrors() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.faults)
}

// SetUtilization sets what GetUtilizationRates reports for GPU index.
func (m *Machine) SetUtilization(index int, gpu, memory uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.util[index] = nvml.Utilization{Gpu: gpu, Memory: memory}
}

// SendXid raises an Xid critical error on GPU index. It returns the number
// of event sets that receive it: like the real library, an event reaches
// only sets registered for that GPU and event type.
func (m *Machine) SendXid(index int, xid uint64) int {
	return m.SendEvent(index, nvml.EventTypeXidCriticalError, xid)
}

// SendEvent raises an NVML event of eventType with data on GPU index.
func (m *Machine) SendEvent(index int, eventType, data uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for es := range m.sets {
		if es.masks[index]&eventType == 0 {
			continue
		}
		ev := nvml.EventData{Device: m.devs[index], EventType: eventType, EventData: data}
		select {
		case es.events <- ev:
			n++
		default: // a full set drops events, as NVML's bounded queue does
		}
	}
	return n
}

// fault returns the injected Return for call on GPU index, or SUCCESS.
func (m *Machine) fault(call string, index int) nvml.Return {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.faults[faultKey{call, index}]; ok {
		return r
	}
	if r, ok := m.faults[faultKey{call, -1}]; ok {
		return r
	}
	return nvml.SUCCESS
}

// indexOf finds one of this machine's devices; -1 for a foreign handle.
func (m *Machine) indexOf(d nvml.Device) int {
	for i, dev := range m.devs {
		if nvml.Device(dev) == d {
			return i
		}
	}
	return -1
}

func busID(bus int) string { return fmt.Sprintf("00000000:%02x:00.0", bus) }

// pciInfo is what NVML fills in for a device at bus.
func pciInfo(bus int, deviceID uint32) nvml.PciInfo {
	p := nvml.PciInfo{Domain: 0, Bus: uint32(bus), Device: 0, PciDeviceId: deviceID}
	copyCString(p.BusId[:], busID(bus))
	copyCString(p.BusIdLegacy[:], fmt.Sprintf("0000:%02x:00.0", bus))
	return p
}

func copyCString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

// nvSwitchDeviceID is the PCI device ID the fakes give NVSwitches.
const nvSwitchDeviceID = 0x1AF110DE

func (m *Machine) wireSystem() {
	s := m.srv
	initFn, shutdownFn, countFn, byIndexFn := s.InitFunc, s.ShutdownFunc, s.DeviceGetCountFunc, s.DeviceGetHandleByIndexFunc
	s.InitFunc = func() nvml.Return {
		if r := m.fault("Init", -1); r != nvml.SUCCESS {
			return r
		}
		return initFn()
	}
	s.ShutdownFunc = func() nvml.Return {
		if r := m.fault("Shutdown", -1); r != nvml.SUCCESS {
			return r
		}
		return shutdownFn()
	}
	s.DeviceGetCountFunc = func() (int, nvml.Return) {
		if r := m.fault("DeviceGetCount", -1); r != nvml.SUCCESS {
			return 0, r
		}
		return countFn()
	}
	s.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if r := m.fault("DeviceGetHandleByIndex", i); r != nvml.SUCCESS {
			return nil, r
		}
		return byIndexFn(i)
	}
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		if r := m.fault("EventSetCreate", -1); r != nvml.SUCCESS {
			return nil, r
		}
		es := &eventSet{events: make(chan nvml.EventData, 64), masks: map[int]uint64{}}
		es.WaitFunc = func(timeoutMs uint32) (nvml.EventData, nvml.Return) {
			if r := m.fault("Wait", -1); r != nvml.SUCCESS {
				return nvml.EventData{}, r
			}
			t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
			defer t.Stop()
			select {
			case ev := <-es.events:
				return ev, nvml.SUCCESS
			case <-t.C:
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		}
		es.FreeFunc = func() nvml.Return {
			m.mu.Lock()
			defer m.mu.Unlock()
			delete(m.sets, es)
			return nvml.SUCCESS
		}
		m.mu.Lock()
		m.sets[es] = true
		m.mu.Unlock()
		return es, nvml.SUCCESS
	}
}

// remote is the far end of one NVLink link.
type remote struct {
	bus      int
	nvSwitch bool
}

// linksOf lists GPU i's NVLink links in link-number order: direct links to
// other GPUs first (by GPU index), then links into the NVSwitch fabric.
func (m *Machine) linksOf(i int) []remote {
	var out []remote
	if m.shape.nvlinks != nil {
		for j, n := range m.shape.nvlinks[i] {
			for range n {
				out = append(out, remote{bus: m.shape.busIDs[j]})
			}
		}
	}
	for l := range m.shape.switchLinks {
		out = append(out, remote{bus: m.shape.switchBuses[l%len(m.shape.switchBuses)], nvSwitch: true})
	}
	return out
}

func (m *Machine) wireDevice(i int) {
	d := m.devs[i]
	sh := m.shape
	seed := "https://kubegpu.io/fake/" + m.name + "/" + strconv.Itoa(i)
	if m.host != "" {
		seed = "https://kubegpu.io/fake/" + m.host + "/" + m.name + "/" + strconv.Itoa(i)
	}
	d.UUID = "GPU-" + uuid.NewSHA1(uuid.NameSpaceURL, []byte(seed)).String()
	d.PciBusID = busID(sh.busIDs[i])
	used := uint64(i+1) * 512 << 20
	d.MemoryInfo = nvml.Memory{Total: d.MemoryInfo.Total, Used: used, Free: d.MemoryInfo.Total - used}
	links := m.linksOf(i)

	uuidFn, nameFn, memFn, migFn := d.GetUUIDFunc, d.GetNameFunc, d.GetMemoryInfoFunc, d.GetMigModeFunc
	d.GetUUIDFunc = func() (string, nvml.Return) {
		if r := m.fault("GetUUID", i); r != nvml.SUCCESS {
			return "", r
		}
		return uuidFn()
	}
	d.GetNameFunc = func() (string, nvml.Return) {
		if r := m.fault("GetName", i); r != nvml.SUCCESS {
			return "", r
		}
		return nameFn()
	}
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		if r := m.fault("GetMemoryInfo", i); r != nvml.SUCCESS {
			return nvml.Memory{}, r
		}
		return memFn()
	}
	d.GetMigModeFunc = func() (int, int, nvml.Return) {
		if r := m.fault("GetMigMode", i); r != nvml.SUCCESS {
			return 0, 0, r
		}
		return migFn()
	}
	// The mock's GetPciInfo fills only the device ID; NVML fills the bus.
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		if r := m.fault("GetPciInfo", i); r != nvml.SUCCESS {
			return nvml.PciInfo{}, r
		}
		return pciInfo(sh.busIDs[i], d.Config.PciDeviceId), nvml.SUCCESS
	}
	d.GetNumaNodeIdFunc = func() (int, nvml.Return) {
		if r := m.fault("GetNumaNodeId", i); r != nvml.SUCCESS {
			return 0, r
		}
		return sh.numa[i], nvml.SUCCESS
	}
	d.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
		if r := m.fault("GetTopologyCommonAncestor", i); r != nvml.SUCCESS {
			return 0, r
		}
		j := m.indexOf(other)
		switch {
		case j < 0:
			return 0, nvml.ERROR_INVALID_ARGUMENT
		case j == i:
			return nvml.TOPOLOGY_INTERNAL, nvml.SUCCESS
		}
		return sh.pcie(i, j), nvml.SUCCESS
	}
	// NVML answers NOT_SUPPORTED on GPUs without NVLink and
	// INVALID_ARGUMENT past the device's last link.
	linkErr := func(n int) nvml.Return {
		switch {
		case len(links) == 0:
			return nvml.ERROR_NOT_SUPPORTED
		case n < 0 || n >= len(links):
			return nvml.ERROR_INVALID_ARGUMENT
		}
		return nvml.SUCCESS
	}
	d.GetNvLinkStateFunc = func(n int) (nvml.EnableState, nvml.Return) {
		if r := m.fault("GetNvLinkState", i); r != nvml.SUCCESS {
			return 0, r
		}
		if r := linkErr(n); r != nvml.SUCCESS {
			return 0, r
		}
		return nvml.FEATURE_ENABLED, nvml.SUCCESS
	}
	d.GetNvLinkRemotePciInfoFunc = func(n int) (nvml.PciInfo, nvml.Return) {
		if r := m.fault("GetNvLinkRemotePciInfo", i); r != nvml.SUCCESS {
			return nvml.PciInfo{}, r
		}
		if r := linkErr(n); r != nvml.SUCCESS {
			return nvml.PciInfo{}, r
		}
		devID := d.Config.PciDeviceId
		if links[n].nvSwitch {
			devID = nvSwitchDeviceID
		}
		return pciInfo(links[n].bus, devID), nvml.SUCCESS
	}
	d.GetNvLinkRemoteDeviceTypeFunc = func(n int) (nvml.IntNvLinkDeviceType, nvml.Return) {
		if r := m.fault("GetNvLinkRemoteDeviceType", i); r != nvml.SUCCESS {
			return 0, r
		}
		if r := linkErr(n); r != nvml.SUCCESS {
			return 0, r
		}
		if links[n].nvSwitch {
			return nvml.NVLINK_DEVICE_TYPE_SWITCH, nvml.SUCCESS
		}
		return nvml.NVLINK_DEVICE_TYPE_GPU, nvml.SUCCESS
	}
	d.GetP2PStatusFunc = func(other nvml.Device, caps nvml.GpuP2PCapsIndex) (nvml.GpuP2PStatus, nvml.Return) {
		if r := m.fault("GetP2PStatus", i); r != nvml.SUCCESS {
			return 0, r
		}
		j := m.indexOf(other)
		if j < 0 {
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
		if caps == nvml.P2P_CAPS_INDEX_NVLINK {
			if sh.switchLinks > 0 || (sh.nvlinks != nil && sh.nvlinks[i][j] > 0) {
				return nvml.P2P_STATUS_OK, nvml.SUCCESS
			}
			return nvml.P2P_STATUS_NOT_SUPPORTED, nvml.SUCCESS
		}
		return nvml.P2P_STATUS_OK, nvml.SUCCESS
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		if r := m.fault("GetUtilizationRates", i); r != nvml.SUCCESS {
			return nvml.Utilization{}, r
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.util[i], nvml.SUCCESS
	}
	d.GetTemperatureFunc = func(sensor nvml.TemperatureSensors) (uint32, nvml.Return) {
		if r := m.fault("GetTemperature", i); r != nvml.SUCCESS {
			return 0, r
		}
		if sensor != nvml.TEMPERATURE_GPU {
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
		return uint32(34 + i), nvml.SUCCESS
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		if r := m.fault("GetPowerUsage", i); r != nvml.SUCCESS {
			return 0, r
		}
		return sh.powerMilliwatts + uint32(i)*250, nvml.SUCCESS
	}
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
		if r := m.fault("GetSupportedEventTypes", i); r != nvml.SUCCESS {
			return 0, r
		}
		return SupportedEvents, nvml.SUCCESS
	}
	d.RegisterEventsFunc = func(mask uint64, set nvml.EventSet) nvml.Return {
		if r := m.fault("RegisterEvents", i); r != nvml.SUCCESS {
			return r
		}
		es, ok := set.(*eventSet)
		if !ok {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		if mask&^SupportedEvents != 0 {
			return nvml.ERROR_NOT_SUPPORTED
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		es.masks[i] |= mask
		return nvml.SUCCESS
	}
}
