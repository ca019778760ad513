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
	"k8s.io/apimachinery/pkg/types"
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
	// Sharing also serves SharedResourceName (GPU shares in milli) on a
	// second device plugin socket.
	Sharing            bool
	SharedResourceName string
	// Ready, if set, receives the server once it is set up (tests).
	Ready func(*Plugin)
}

// Plugin is a running device plugin.
type Plugin struct {
	Inventory *inventory.Inventory
	Server    *kubelet.Server
	Chooser   *Chooser
	// ShareServer and ShareChooser serve the share resource; nil without
	// sharing.
	ShareServer  *kubelet.Server
	ShareChooser *Chooser
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
	if cfg.Sharing && cfg.SharedResourceName == "" {
		return errors.New("sharing needs a shared resource name")
	}
	claims := &claims{}
	chooser := &Chooser{Inventory: inv, Resource: cfg.ResourceName, SharedResource: cfg.SharedResourceName, Counters: counters, claims: claims}
	var shareChooser *Chooser
	if cfg.Sharing {
		c := *chooser
		c.Share = true
		shareChooser = &c
	}
	if cfg.PodResourcesSocket != "" {
		chooser.Assignments = func(ctx context.Context) (map[string]kubelet.Owner, error) {
			return podRes.Assignments(ctx, cfg.ResourceName)
		}
		usage := func(ctx context.Context) (map[string]map[string]kubelet.Owner, error) {
			return podRes.AssignmentsOf(ctx, cfg.ResourceName, cfg.SharedResourceName)
		}
		chooser.usage = usage
		if shareChooser != nil {
			shareChooser.Assignments = chooser.Assignments
			shareChooser.usage = usage
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
		if shareChooser != nil {
			shareChooser.Pods = chooser.Pods
		}
		wg.Go(func() { informer.RunWithContext(ctx) })
		wg.Go(func() { nodeinfo.Run(ctx, cfg.Client, cfg.NodeName, inv, cfg.Sharing) })
	}

	srv := kubelet.New(kubelet.Config{ResourceName: cfg.ResourceName, PluginDir: cfg.PluginDir, CDI: cfg.CDI}, inv, chooser)
	srv.OnRegister(func(time.Time) { counters.Registrations.Inc() })
	p := &Plugin{Inventory: inv, Server: srv, Chooser: chooser}
	if shareChooser != nil {
		// A second endpoint with its own socket and registration: one
		// device plugin serves one resource. It restarts independently.
		p.ShareServer = kubelet.New(kubelet.Config{ResourceName: cfg.SharedResourceName, PluginDir: cfg.PluginDir, CDI: cfg.CDI, Shares: true}, inv, shareChooser)
		p.ShareServer.OnRegister(func(time.Time) { counters.Registrations.Inc() })
		p.ShareChooser = shareChooser
	}

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
	var shareErr error
	if p.ShareServer != nil {
		wg.Go(func() {
			if shareErr = p.ShareServer.Run(ctx); shareErr != nil {
				cancel() // one endpoint down takes the plugin down, to be restarted whole
			}
		})
	}
	err = srv.Run(ctx)
	cancel()
	wg.Wait()
	if err == nil && shareErr != nil {
		err = fmt.Errorf("share endpoint: %w", shareErr)
	}
	return err
}

// Chooser answers the kubelet's allocation questions for one resource
// (whole GPUs, or shares when Share is set) from the pods bound to this
// node and the kubelet's device assignments.
type Chooser struct {
	Inventory *inventory.Inventory
	// Resource and SharedResource are the whole-GPU and share resource
	// names, as podresources reports them.
	Resource, SharedResource string
	// Share makes this the share resource's chooser: devices are slots.
	Share    bool
	Counters *metrics.Counters
	// Pods lists pods bound to this node; nil without API access.
	Pods corelisters.PodLister
	// Assignments reads the kubelet's podresources API for the whole-GPU
	// resource (metrics labels); nil or failing means unknown.
	Assignments func(ctx context.Context) (map[string]kubelet.Owner, error)
	// usage reads both resources' assignments from podresources.
	usage  func(ctx context.Context) (map[string]map[string]kubelet.Owner, error)
	claims *claims
}

// claims are the pods an Allocate was answered for, shared by the whole
// and the share chooser; see allocation.InUse.Claimed.
type claims struct {
	mu   sync.Mutex
	uids map[types.UID]bool
}

// snapshot returns the claims of pods still in pods, forgetting the rest.
func (c *claims) snapshot(pods []*v1.Pod) map[types.UID]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	present := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		present[p.UID] = true
	}
	out := map[types.UID]bool{}
	for uid := range c.uids {
		if present[uid] {
			out[uid] = true
		} else {
			delete(c.uids, uid)
		}
	}
	return out
}

func (c *claims) add(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.uids == nil {
		c.uids = map[types.UID]bool{}
	}
	c.uids[uid] = true
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
	if c.claims != nil {
		inUse.Claimed = c.claims.snapshot(pods)
	}
	if c.usage != nil {
		if a, err := c.usage(ctx); err == nil {
			inUse.Known = true
			inUse.Devices, inUse.Slots, inUse.Holders = map[string]bool{}, map[string]bool{}, map[string]bool{}
			for id := range a[c.Resource] {
				inUse.Devices[id] = true
			}
			for id, o := range a[c.SharedResource] {
				inUse.Slots[id] = true
				inUse.Holders[o.Namespace+"/"+o.Pod] = true
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
	var ids []string
	var src allocation.Source
	if c.Share {
		ids, src, _ = allocation.PreferredShare(node, pods, inUse, available, mustInclude, size)
	} else {
		ids, src = allocation.Preferred(node, pods, inUse, available, mustInclude, size)
	}
	c.Counters.PreferredAllocations.WithLabelValues(string(src)).Inc()
	klog.FromContext(ctx).V(2).Info("Preferred allocation", "share", c.Share, "size", size, "ids", len(ids), "source", src)
	return ids
}

func (c *Chooser) Allocating(ctx context.Context, ids []string) (kubelet.Grant, error) {
	logger := klog.FromContext(ctx)
	pods, inUse := c.state(ctx)
	var (
		verdict allocation.Verdict
		served  *v1.Pod
		grant   kubelet.Grant
	)
	if c.Share {
		gpu, v, p, err := allocation.CheckShare(pods, inUse, ids)
		if err != nil {
			c.Counters.Allocations.WithLabelValues("refused").Inc()
			return grant, err
		}
		verdict, served = v, p
		node, _ := c.Inventory.Snapshot()
		var mem int64
		for _, g := range node.GPUs {
			if g.UUID == gpu {
				mem = g.MemoryMiB
			}
		}
		grant = kubelet.Grant{GPUs: []string{gpu}, Env: kubelet.ShareEnv(len(ids), mem)}
	} else {
		if err := allocation.CheckWhole(pods, inUse, ids); err != nil {
			c.Counters.Allocations.WithLabelValues("refused").Inc()
			return grant, err
		}
		var sets [][]string
		verdict, sets, served = allocation.Check(pods, inUse, ids)
		if verdict == allocation.Mismatch {
			logger.Info("WARNING: kubelet allocates GPUs other than the scheduler recorded; allocating what the kubelet asked for", "requested", ids, "annotated", sets)
		}
		grant = kubelet.Grant{GPUs: ids}
	}
	switch verdict {
	case allocation.Honoured:
		c.Counters.Allocations.WithLabelValues("honoured").Inc()
		if c.claims != nil {
			c.claims.add(served.UID)
		}
	case allocation.Mismatch:
		c.Counters.Allocations.WithLabelValues("mismatch").Inc()
		if c.Share {
			logger.Info("WARNING: kubelet allocates a share on a GPU other than the scheduler recorded", "gpu", grant.GPUs[0], "milli", len(ids))
		}
	default:
		c.Counters.Allocations.WithLabelValues("unannotated").Inc()
	}
	return grant, nil
}
