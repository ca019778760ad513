// Package deviceplugin is the kubegpu device plugin: it wires the GPU
// inventory (inventory), the kubelet side (kubelet), the allocation choice
// (allocation), node inventory publishing (nodeinfo) and telemetry
// (metrics) into one Run.
package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/deviceplugin/allocation"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/deviceplugin/kubelet"
	"github.com/kubegpu/kubegpu/deviceplugin/metrics"
	"github.com/kubegpu/kubegpu/deviceplugin/nodeinfo"
	"github.com/kubegpu/kubegpu/pkg/nvml"
)

// Config is everything Run needs; cmd/kubegpu-device-plugin fills it from
// flags.
type Config struct {
	Backend            nvml.Backend
	ResourceName       string
	PluginDir          string
	PodResourcesSocket string
	NodeName           string
	// Client reaches the API server; nil serves the kubelet only, without
	// inventory publishing or the scheduler's recorded choices. Only the
	// core group is needed, and the full clientset would double the
	// binary (and so the resident memory).
	Client      corev1client.CoreV1Interface
	MetricsAddr string // "" disables /metrics and /healthz
	CDI         bool
	Health      inventory.HealthOptions
	// Ready, if set, receives the server once it is set up (tests).
	Ready func(*Plugin)
}

// Plugin is a running device plugin.
type Plugin struct {
	Inventory *inventory.Inventory
	Server    *kubelet.Server
	Chooser   *Chooser
	// MetricsAddr is the address /metrics listens on, once started.
	MetricsAddr string
}

// Run runs the device plugin until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	logger := klog.FromContext(ctx)
	inv, err := inventory.New(ctx, cfg.Backend)
	if err != nil {
		return err
	}
	node, _ := inv.Snapshot()
	logger.Info("Discovered GPUs", "count", len(node.GPUs))

	podRes := kubelet.PodResources{Socket: cfg.PodResourcesSocket}
	counters := metrics.NewCounters()
	chooser := &Chooser{Inventory: inv, Resource: cfg.ResourceName, Counters: counters}
	if cfg.PodResourcesSocket != "" {
		chooser.Assignments = func(ctx context.Context) (map[string]kubelet.Owner, error) {
			return podRes.Assignments(ctx, cfg.ResourceName)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if cfg.Client == nil {
		logger.Info("WARNING: no API server access; serving the kubelet without inventory publishing or the scheduler's GPU choices")
	} else if cfg.NodeName == "" {
		logger.Info("WARNING: no node name (--node-name or NODE_NAME); serving the kubelet without inventory publishing or the scheduler's GPU choices")
	} else {
		selector := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		pods := cfg.Client.Pods(metav1.NamespaceAll)
		informer := cache.NewSharedIndexInformer(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.FieldSelector = selector
				return pods.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = selector
				return pods.Watch(ctx, o)
			},
		}, &v1.Pod{}, 10*time.Minute, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		chooser.Pods = corelisters.NewPodLister(informer.GetIndexer())
		wg.Go(func() { informer.RunWithContext(ctx) })
		wg.Go(func() { nodeinfo.Run(ctx, cfg.Client, cfg.NodeName, inv) })
	}

	srv := kubelet.New(kubelet.Config{ResourceName: cfg.ResourceName, PluginDir: cfg.PluginDir, CDI: cfg.CDI}, inv, chooser)
	srv.OnRegister(func(time.Time) { counters.Registrations.Inc() })
	p := &Plugin{Inventory: inv, Server: srv, Chooser: chooser}

	if cfg.MetricsAddr != "" {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		p.MetricsAddr = lis.Addr().String()
		reg := metrics.Registry(&metrics.GPUCollector{Inventory: inv, Assignments: chooser.Assignments}, counters)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("ok\n"))
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Metrics server failed")
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = hs.Shutdown(sctx)
		})
	}
	wg.Go(func() { inv.RunHealth(ctx, cfg.Health) })
	if cfg.Ready != nil {
		cfg.Ready(p)
	}
	err = srv.Run(ctx)
	cancel()
	return err
}

// Chooser answers the kubelet's allocation questions from the pods bound
// to this node and the kubelet's device assignments.
type Chooser struct {
	Inventory *inventory.Inventory
	Resource  string
	Counters  *metrics.Counters
	// Pods lists pods bound to this node; nil without API access.
	Pods corelisters.PodLister
	// Assignments reads the kubelet's podresources API; nil or failing
	// means in-use devices are unknown.
	Assignments func(ctx context.Context) (map[string]kubelet.Owner, error)
}

func (c *Chooser) state(ctx context.Context) ([]*v1.Pod, allocation.InUse) {
	var pods []*v1.Pod
	if c.Pods != nil {
		var err error
		if pods, err = c.Pods.List(labels.Everything()); err != nil {
			klog.FromContext(ctx).Error(err, "Listing pods")
		}
	}
	inUse := allocation.InUse{}
	if c.Assignments != nil && len(pods) > 0 {
		if a, err := c.Assignments(ctx); err == nil {
			inUse.Known, inUse.Devices = true, map[string]bool{}
			for id := range a {
				inUse.Devices[id] = true
			}
		} else {
			klog.FromContext(ctx).V(2).Info("podresources unreachable; treating pods not yet Running as waiting", "err", err)
		}
	}
	return pods, inUse
}

func (c *Chooser) Preferred(ctx context.Context, available, mustInclude []string, size int) []string {
	pods, inUse := c.state(ctx)
	node, _ := c.Inventory.Snapshot()
	ids, src := allocation.Preferred(node, pods, inUse, available, mustInclude, size)
	c.Counters.PreferredAllocations.WithLabelValues(string(src)).Inc()
	klog.FromContext(ctx).V(2).Info("Preferred allocation", "size", size, "ids", ids, "source", src)
	return ids
}

func (c *Chooser) Allocating(ctx context.Context, ids []string) {
	pods, inUse := c.state(ctx)
	verdict, sets := allocation.Check(pods, inUse, ids)
	switch verdict {
	case allocation.Honoured:
		c.Counters.Allocations.WithLabelValues("honoured").Inc()
	case allocation.Mismatch:
		c.Counters.Allocations.WithLabelValues("mismatch").Inc()
		klog.FromContext(ctx).Info("WARNING: kubelet allocates GPUs other than the scheduler recorded; allocating what the kubelet asked for", "requested", ids, "annotated", sets)
	default:
		c.Counters.Allocations.WithLabelValues("unannotated").Inc()
	}
}
