// Package metrics exports the device plugin's GPU telemetry and its own
// counters to Prometheus.
//
// GPU metrics are read on scrape (a prometheus.Collector), not in a
// background loop: NVML reads take microseconds per GPU, scrapes are
// seconds apart, and the values are then never older than the scrape.
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/deviceplugin/kubelet"
)

// Assignments returns which container holds each device (podresources);
// an error leaves the pod labels empty.
type Assignments func(ctx context.Context) (map[string]kubelet.Owner, error)

var gpuLabels = []string{"gpu", "uuid", "model", "namespace", "pod", "container"}

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("kubegpu_gpu_"+name, help, gpuLabels, nil)
}

var (
	utilDesc     = desc("utilization_ratio", "Fraction of time a kernel ran on the GPU in the last sample period (0-1).")
	memUtilDesc  = desc("memory_utilization_ratio", "Fraction of time device memory was read or written (0-1).")
	memUsedDesc  = desc("memory_used_bytes", "GPU framebuffer memory in use.")
	memTotalDesc = desc("memory_total_bytes", "GPU framebuffer memory in total.")
	tempDesc     = desc("temperature_celsius", "GPU temperature.")
	powerDesc    = desc("power_watts", "GPU power draw.")
	xidDesc      = desc("xid_errors_total", "Critical Xid events seen since the plugin started (application Xids excluded).")
	healthDesc   = desc("healthy", "1 when the GPU is advertised healthy to the kubelet, else 0.")
	errDesc      = prometheus.NewDesc("kubegpu_gpu_telemetry_errors", "1 when the last NVML telemetry read had errors.", nil, nil)
)

// GPUCollector reads telemetry from the inventory's backend on scrape.
type GPUCollector struct {
	Inventory   *inventory.Inventory
	Assignments Assignments // may be nil
	Timeout     time.Duration
}

func (c *GPUCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{utilDesc, memUtilDesc, memUsedDesc, memTotalDesc, tempDesc, powerDesc, xidDesc, healthDesc, errDesc} {
		ch <- d
	}
}

func (c *GPUCollector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	node, _ := c.Inventory.Snapshot()
	var owners map[string]kubelet.Owner
	if c.Assignments != nil {
		var err error
		if owners, err = c.Assignments(ctx); err != nil {
			klog.V(3).InfoS("No pod labels for GPU metrics", "err", err)
		}
	}
	tel, err := c.Inventory.Backend().Telemetry(ctx)
	failed := 0.0
	if err != nil {
		failed = 1
		klog.V(2).InfoS("GPU telemetry incomplete", "err", err)
	}
	ch <- prometheus.MustNewConstMetric(errDesc, prometheus.GaugeValue, failed)
	byUUID := map[string]int{}
	for i, t := range tel {
		byUUID[t.UUID] = i
	}
	for _, g := range node.GPUs {
		o := owners[g.UUID]
		lv := []string{strconv.Itoa(g.Index), g.UUID, g.Product, o.Namespace, o.Pod, o.Container}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		healthy := 0.0
		if g.Healthy {
			healthy = 1
		}
		gauge(healthDesc, healthy)
		ch <- prometheus.MustNewConstMetric(xidDesc, prometheus.CounterValue, float64(c.Inventory.XidCount(g.UUID)), lv...)
		i, ok := byUUID[g.UUID]
		if !ok {
			continue
		}
		t := tel[i]
		if t.GPUUtilPercent != nil {
			gauge(utilDesc, float64(*t.GPUUtilPercent)/100)
		}
		if t.MemUtilPercent != nil {
			gauge(memUtilDesc, float64(*t.MemUtilPercent)/100)
		}
		if t.MemoryUsedMiB != nil {
			gauge(memUsedDesc, float64(*t.MemoryUsedMiB)*(1<<20))
		}
		if t.MemoryTotalMiB != nil {
			gauge(memTotalDesc, float64(*t.MemoryTotalMiB)*(1<<20))
		}
		if t.TemperatureC != nil {
			gauge(tempDesc, float64(*t.TemperatureC))
		}
		if t.PowerWatts != nil {
			gauge(powerDesc, *t.PowerWatts)
		}
	}
}

// Counters are the plugin's own counters. Each plugin has its own, so
// that several plugins in one process (tests) do not share state.
type Counters struct {
	Allocations          *prometheus.CounterVec
	PreferredAllocations *prometheus.CounterVec
	Registrations        prometheus.Counter
}

// NewCounters returns zeroed counters.
func NewCounters() *Counters {
	return &Counters{
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubegpu_deviceplugin_allocations_total",
			Help: "Container allocations by how they compare with the scheduler's recorded choice (honoured, mismatch, unannotated), or refused (a whole GPU that carries shares, a share on a GPU taken whole or spanning GPUs).",
		}, []string{"verdict"}),
		PreferredAllocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubegpu_deviceplugin_preferred_allocations_total",
			Help: "GetPreferredAllocation answers by source (annotation, topology, most-free for shares, none).",
		}, []string{"source"}),
		Registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubegpu_deviceplugin_registrations_total",
			Help: "Successful registrations with the kubelet.",
		}),
	}
}

// Registry returns a registry with the GPU collector, the plugin counters
// and the Go runtime and process collectors.
func Registry(c *GPUCollector, counters *Counters) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(c, counters.Allocations, counters.PreferredAllocations, counters.Registrations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}
