// Package nvml is the device plugin's narrow view of NVML: which GPUs a
// node has and how they are wired (Discover), how busy they are
// (Telemetry), and when one turns unhealthy (WatchHealth). How the kubelet
// is spoken to is not its business.
//
// One implementation talks to any go-nvml nvml.Interface: the real library
// (Open("real")) or a fake machine built from go-nvml's mocks
// (Open("fake:dgx-h100")), so the code tested on fakes is the code that runs
// on GPUs.
package nvml

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/nvml/fake"
)

// Backend is what the device plugin needs from NVML.
type Backend interface {
	// Discover returns every GPU (healthy) and the link matrix between them.
	Discover(ctx context.Context) (*gpunode.Node, error)
	// Telemetry reads the current metrics of every GPU. Metrics a GPU does
	// not support are left nil; other failures are returned (joined) next
	// to whatever could be read.
	Telemetry(ctx context.Context) ([]Telemetry, error)
	// WatchHealth registers for Xid and double-bit ECC events on every GPU
	// and sends each one that makes a GPU unhealthy on the channel. The
	// channel closes when ctx ends, on Shutdown, or after NVML's event wait
	// fails (then every GPU is reported unhealthy first, as NVIDIA's device
	// plugin does; call WatchHealth again to resume).
	WatchHealth(ctx context.Context, cfg HealthConfig) (<-chan HealthEvent, error)
	// Shutdown stops the health watches and releases NVML. Every later call
	// returns ErrShutdown instead of reaching the library.
	Shutdown() error
}

// Telemetry is one GPU's metrics; nil means the GPU does not report it.
type Telemetry struct {
	Index          int
	UUID           string
	GPUUtilPercent *uint32 // percent of time a kernel ran, last sample period
	MemUtilPercent *uint32 // percent of time device memory was read or written
	MemoryUsedMiB  *int64
	MemoryTotalMiB *int64
	TemperatureC   *uint32
	PowerWatts     *float64
}

// HealthConfig tunes WatchHealth.
type HealthConfig struct {
	// IgnoredXids are Xids caused by applications, not by the GPU; they do
	// not mark a GPU unhealthy. nil means DefaultIgnoredXids; an empty,
	// non-nil slice ignores none.
	IgnoredXids []uint64
	// WaitTimeout bounds each NVML event wait, and so how long Shutdown
	// and cancellation wait for a watch to notice (default 1s).
	WaitTimeout time.Duration
}

// DefaultIgnoredXids are the application Xids NVIDIA's device plugin skips:
// 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped
// processing, 45 preemptive cleanup, 68 video processor exception,
// 109 context switch timeout.
func DefaultIgnoredXids() []uint64 { return []uint64{13, 31, 43, 45, 68, 109} }

// HealthEvent says which GPU turned unhealthy and why.
type HealthEvent struct {
	Index     int
	UUID      string
	EventType uint64 // NVML event type bits (gonvml.EventTypeXidCriticalError ...); 0 when the wait failed
	Xid       uint64 // for Xid events
	Reason    string
}

// ErrShutdown is returned by calls on a backend after Shutdown.
var ErrShutdown = errors.New("nvml: backend is shut down")

// Error is a failed NVML call. It unwraps to the gonvml.Return, so
// errors.Is(err, gonvml.ERROR_NOT_SUPPORTED) works.
type Error struct {
	Call   string // NVML call, e.g. "GetNvLinkState"
	Device int    // GPU index, -1 for calls that are not about one GPU
	Ret    gonvml.Return
	// msg is the library's text for Ret, read when the error is made:
	// Return.Error calls into libnvidia-ml once it is loaded, which must
	// not happen after Shutdown unloads it.
	msg string
}

func nvmlError(call string, device int, ret gonvml.Return) *Error {
	return &Error{Call: call, Device: device, Ret: ret, msg: ret.Error()}
}

func (e *Error) Error() string {
	if e.Device < 0 {
		return fmt.Sprintf("NVML %s: %s (%d)", e.Call, e.msg, int32(e.Ret))
	}
	return fmt.Sprintf("NVML %s (GPU %d): %s (%d)", e.Call, e.Device, e.msg, int32(e.Ret))
}

func (e *Error) Unwrap() error { return e.Ret }

// Specs lists the values Open accepts.
func Specs() []string {
	specs := []string{"real"}
	for _, n := range fake.Names() {
		specs = append(specs, "fake:"+n)
	}
	return specs
}

// Open chooses a backend by flag value: "real" for the host's NVML library,
// "fake:NAME" for a fake machine (see Specs).
func Open(spec string) (Backend, error) {
	switch {
	case spec == "real":
		return OpenReal()
	case strings.HasPrefix(spec, "fake:") && slices.Contains(fake.Names(), strings.TrimPrefix(spec, "fake:")):
		b, _, err := OpenFake(strings.TrimPrefix(spec, "fake:"))
		return b, err
	}
	return nil, fmt.Errorf("unknown NVML backend %q (valid: %s)", spec, strings.Join(Specs(), ", "))
}

// OpenReal initialises the host's NVML library. On a machine without the
// NVIDIA driver this fails with ERROR_LIBRARY_NOT_FOUND, and no backend is
// returned: after a failed Init any further NVML call would kill the
// process with a symbol lookup error.
func OpenReal() (Backend, error) {
	b, err := NewWithLibrary(gonvml.New())
	if err != nil {
		return nil, fmt.Errorf("%w (is the NVIDIA driver installed and libnvidia-ml.so.1 on the library path?)", err)
	}
	return b, nil
}

// OpenFake builds the fake machine NAME and a backend on it; the Machine
// injects faults and health events.
func OpenFake(name string) (Backend, *fake.Machine, error) { return OpenFakeHost(name, "") }

// OpenFakeHost is OpenFake for one node of a fake cluster: the GPU UUIDs
// also depend on host (see fake.NewHost).
func OpenFakeHost(name, host string) (Backend, *fake.Machine, error) {
	m, err := fake.NewHost(name, host)
	if err != nil {
		return nil, nil, err
	}
	b, err := NewWithLibrary(m.Interface())
	if err != nil {
		return nil, nil, err
	}
	return b, m, nil
}
