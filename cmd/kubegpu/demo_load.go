package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/scaler/presets"
	"github.com/kubegpu/kubegpu/scaler/server"
)

// Load shape of the inference demo. A fake vLLM replica serves slots
// requests at once, each for serviceTime after its first token; requests
// beyond that wait in its queue (vllm:num_requests_waiting), and their
// time to first token is their wait plus prefill.
const (
	replicaSlots = 4
	serviceTime  = 500 * time.Millisecond
	prefillTime  = 80 * time.Millisecond
	modelName    = "meta-llama/Llama-3.1-8B-Instruct"
	loadTick     = 50 * time.Millisecond
)

// loadPhase is one stretch of constant arrival rate.
type loadPhase struct {
	Name string
	Rate float64 // requests per second over the whole Service
	For  time.Duration
}

// scalePoint is one KEDA poll.
type scalePoint struct {
	At      time.Duration
	Phase   string
	Rate    float64
	Queue   float64 // waiting requests over all replicas (the servers' gauges)
	P95TTFT float64 // seconds, of the requests that got a first token since the last poll
	Metric  float64 // what kubegpu-scaler answered GetMetrics
	Active  bool    // what it answered IsActive
	Current int     // replicas before this poll
	Desired int     // the HPA's result
	Err     string
}

// scalingResult is what the autoscaling step saw.
type scalingResult struct {
	Min, Max, Initial, Peak, Final int
	Points                         []scalePoint
	Errors                         int
	Phases                         []loadPhase
	Overrides                      map[string]string

	// ctx ends with the demo's scaling parts: the pod cache and the
	// scaler's pollers.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	grpc   *grpc.Server
	conn   *grpc.ClientConn
	load   *loadSim
}

func (s *scalingResult) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	s.wg.Wait()
	if s.load != nil {
		s.load.stopAll()
	}
}

// fakeVLLM is one replica's model server: the vLLM metrics the scaler's
// vllm preset reads, served over HTTP on the pod's IP.
type fakeVLLM struct {
	pod, uid, ip string
	waiting      prometheus.Gauge
	running      prometheus.Gauge
	kvCache      prometheus.Gauge
	ttft, e2e    prometheus.Observer
	srv          *http.Server

	queue []time.Time // arrival times of waiting requests
	busy  []busyReq
}

type busyReq struct{ arrived, done time.Time }

// vllmBuckets are vLLM's time_to_first_token_seconds buckets.
var vllmBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}

func newFakeVLLM(pod *v1.Pod, ip string, port int) (*fakeVLLM, error) {
	p, ok := presets.Lookup(presets.VLLM)
	if !ok {
		return nil, errors.New("no vllm preset")
	}
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{"model_name": modelName}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels})
		reg.MustRegister(g)
		return g
	}
	hist := func(name, help string) prometheus.Observer {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: labels, Buckets: vllmBuckets})
		reg.MustRegister(h)
		return h
	}
	ttft, err := p.LatencyHistogram(presets.SignalTTFT)
	if err != nil {
		return nil, err
	}
	e2e, err := p.LatencyHistogram(presets.SignalE2E)
	if err != nil {
		return nil, err
	}
	f := &fakeVLLM{pod: pod.Name, uid: string(pod.UID), ip: ip,
		waiting: gauge(p.Queue, "Number of requests waiting to be processed."),
		running: gauge(p.Running, "Number of requests in model execution batches."),
		kvCache: gauge(p.KVCache[0], "KV-cache usage. 1 means 100 percent usage."),
		ttft:    hist(ttft.Name, "Histogram of time to first token in seconds."),
		e2e:     hist(e2e.Name, "Histogram of end to end request latency in seconds."),
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("replica %s metrics: %w", pod.Name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = f.srv.Serve(lis) }()
	return f, nil
}

// loadSim sends requests round-robin to the serving replicas and runs
// each replica's queue and batch.
type loadSim struct {
	mu       sync.Mutex
	replicas map[string]*fakeVLLM // by pod name
	rate     float64
	phase    string
	acc      float64
	next     int
	ttfts    []float64 // since the last take
}

func (l *loadSim) setPhase(p loadPhase) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.phase = p.Rate, p.Name
}

func (l *loadSim) add(f *fakeVLLM) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.replicas[f.pod] = f
}

// remove takes a replica out of the Service; the requests waiting on it
// are retried on the others, as a client would after the connection
// closes.
func (l *loadSim) remove(pod string) *fakeVLLM {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.replicas[pod]
	if f == nil {
		return nil
	}
	delete(l.replicas, pod)
	names := l.names()
	for i, a := range f.queue {
		if len(names) > 0 {
			o := l.replicas[names[i%len(names)]]
			o.queue = append(o.queue, a)
		}
	}
	f.queue = nil
	return f
}

func (l *loadSim) names() []string {
	return slices.Sorted(maps.Keys(l.replicas))
}

func (l *loadSim) step(now time.Time, dt time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := l.names()
	if len(names) == 0 {
		return
	}
	l.acc += l.rate * dt.Seconds()
	for ; l.acc >= 1; l.acc-- {
		f := l.replicas[names[l.next%len(names)]]
		l.next++
		f.queue = append(f.queue, now)
	}
	for _, name := range names {
		f := l.replicas[name]
		kept := f.busy[:0]
		for _, b := range f.busy {
			if b.done.After(now) {
				kept = append(kept, b)
				continue
			}
			f.e2e.Observe(b.done.Sub(b.arrived).Seconds())
		}
		f.busy = kept
		for len(f.busy) < replicaSlots && len(f.queue) > 0 {
			arrived := f.queue[0]
			f.queue = f.queue[1:]
			t := now.Sub(arrived) + prefillTime
			f.ttft.Observe(t.Seconds())
			l.ttfts = append(l.ttfts, t.Seconds())
			f.busy = append(f.busy, busyReq{arrived: arrived, done: now.Add(prefillTime + serviceTime)})
		}
		f.waiting.Set(float64(len(f.queue)))
		f.running.Set(float64(len(f.busy)))
		f.kvCache.Set(float64(len(f.busy)) / replicaSlots)
	}
}

// take returns the waiting total and the p95 TTFT since the last take.
func (l *loadSim) take() (queue, p95 float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.replicas {
		queue += float64(len(f.queue))
	}
	if len(l.ttfts) > 0 {
		sort.Float64s(l.ttfts)
		p95 = l.ttfts[int(math.Ceil(0.95*float64(len(l.ttfts))))-1]
	}
	l.ttfts = l.ttfts[:0]
	return queue, p95
}

func (l *loadSim) stopAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.replicas {
		_ = f.srv.Close()
	}
	l.replicas = map[string]*fakeVLLM{}
}

// inference is the llama Deployment as the demo runs it: the demo plays
// the Deployment and ReplicaSet controllers (no controller-manager runs)
// and the kubelet, which starts a fake vLLM server per pod.
type inference struct {
	deploy *appsv1.Deployment
	rs     *appsv1.ReplicaSet
	port   int
	nextIP int
	lister corelisters.PodLister // the scaler's pod cache
}

// applyInference applies examples/inference-vllm's Deployment and
// Service, creates the ReplicaSet and the first replica, and starts the
// scaler (scaler/server, as kubegpu-scaler wires it) with its pod cache.
func (d *demo) applyInference(ctx context.Context) error {
	objs, err := d.exampleObjects("inference-vllm/deployment.yaml")
	if err != nil {
		return err
	}
	svcObjs, err := d.exampleObjects("inference-vllm/service.yaml")
	if err != nil {
		return err
	}
	if len(objs["Deployment"]) != 1 || len(svcObjs["Service"]) != 1 {
		return errors.New("inference-vllm: want one Deployment and one Service")
	}
	deploy, err := typed[appsv1.Deployment](objs["Deployment"][0])
	if err != nil {
		return err
	}
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deploy.Namespace}}
	if _, err := d.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", deploy.Namespace, err)
	}
	if err := d.createService(ctx, svcObjs["Service"][0]); err != nil {
		return err
	}
	if deploy, err = d.client.AppsV1().Deployments(deploy.Namespace).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment: %w", err)
	}
	// The ReplicaSet the Deployment controller would create.
	hash := utilrand.String(10)
	tmpl := deploy.Spec.Template.DeepCopy()
	tmpl.Labels = maps.Clone(tmpl.Labels)
	tmpl.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	sel := deploy.Spec.Selector.DeepCopy()
	sel.MatchLabels = maps.Clone(sel.MatchLabels)
	sel.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: deploy.Name + "-" + hash, Namespace: deploy.Namespace, Labels: tmpl.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: deploy.Name, UID: deploy.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: deploy.Spec.Replicas, Selector: sel, Template: *tmpl},
	}
	if rs, err = d.client.AppsV1().ReplicaSets(rs.Namespace).Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create replicaset: %w", err)
	}

	// The scaler's pod cache, as kubegpu-scaler builds it.
	sctx, cancel := context.WithCancel(context.Background())
	s := &scalingResult{ctx: sctx, cancel: cancel, load: &loadSim{replicas: map[string]*fakeVLLM{}}}
	d.scaling = s
	factory := informers.NewSharedInformerFactoryWithOptions(d.client, 0, informers.WithNamespace(deploy.Namespace))
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(sctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer for %v did not sync", typ)
		}
	}
	d.inf = &inference{deploy: deploy, rs: rs, lister: lister, nextIP: 10}
	// All replicas serve on one port, each on its own loopback address
	// (its pod IP); the first replica picks a free port.
	lis, err := net.Listen("tcp", "127.0.0.10:0")
	if err != nil {
		return fmt.Errorf("pick a metrics port: %w", err)
	}
	d.inf.port = lis.Addr().(*net.TCPAddr).Port
	_ = lis.Close()
	if err := d.reconcileReplicas(ctx, int(ptr.Deref(deploy.Spec.Replicas, 1))); err != nil {
		return err
	}
	d.logf("Service %s/%s -> %d replica(s); each fake vLLM serves its metrics on <podIP>:%d/metrics", deploy.Namespace, deploy.Name, len(d.inf.pods()), d.inf.port)
	return nil
}

func (inf *inference) pods() []*v1.Pod {
	pods, _ := inf.lister.Pods(inf.rs.Namespace).List(labelsOf(inf.rs))
	return pods
}

// reconcileReplicas does what the ReplicaSet controller and the kubelets
// would: creates pods up to want (each placed by the scheduler, admitted
// through its node's device manager, its model server started), or
// deletes the newest ones down to want.
func (d *demo) reconcileReplicas(ctx context.Context, want int) error {
	inf := d.inf
	live := d.liveReplicas()
	if len(live) < want {
		var created []*v1.Pod
		for range want - len(live) {
			pod := &v1.Pod{
				ObjectMeta: metav1.ObjectMeta{
					Name: inf.rs.Name + "-" + utilrand.String(5), Namespace: inf.rs.Namespace,
					Labels: maps.Clone(inf.rs.Spec.Template.Labels), Annotations: maps.Clone(inf.rs.Spec.Template.Annotations),
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: inf.rs.Name, UID: inf.rs.UID,
						Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
				},
				Spec: *inf.rs.Spec.Template.Spec.DeepCopy(),
			}
			c, err := d.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create replica: %w", err)
			}
			created = append(created, c)
		}
		bound, err := d.waitBound(ctx, created, 30*time.Second)
		if err != nil {
			return fmt.Errorf("replica not placed: %w", err)
		}
		for _, pod := range bound {
			ip := fmt.Sprintf("127.0.0.%d", inf.nextIP)
			inf.nextIP = 10 + (inf.nextIP-9)%240
			f, err := newFakeVLLM(pod, ip, inf.port)
			if err != nil {
				return err
			}
			d.scaling.load.add(f)
			p, err := d.admit(ctx, pod, "inference-vllm", ip)
			if err != nil {
				return err
			}
			d.logPlacement(p)
		}
	} else if len(live) > want {
		// The ReplicaSet controller deletes the newest pods first.
		sort.SliceStable(live, func(i, j int) bool { return live[i].At > live[j].At })
		for _, p := range live[:len(live)-want] {
			f := d.scaling.load.remove(p.Name)
			if err := d.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
				return fmt.Errorf("delete replica %s: %w", p.Name, err)
			}
			// Stop serving once the scaler's cache has dropped the pod, so
			// it never scrapes a server that is gone.
			err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				_, err := inf.lister.Pods(p.Namespace).Get(p.Name)
				return err != nil, nil
			})
			if err != nil {
				return fmt.Errorf("replica %s still in the scaler's cache: %w", p.Name, err)
			}
			if f != nil {
				_ = f.srv.Close()
			}
			d.byName[p.Node].dm.Forget(types.UID(p.UID))
			p.Deleted = true
			d.logf("%-28s deleted; %s GPU %d freed", p.Namespace+"/"+p.Name, p.Node, p.GPUs[0])
		}
	}
	rs, err := d.client.AppsV1().ReplicaSets(inf.rs.Namespace).Get(ctx, inf.rs.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read replicaset: %w", err)
	}
	rs.Spec.Replicas = ptr.To(int32(want))
	if rs, err = d.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update replicaset: %w", err)
	}
	// The counts the ReplicaSet and Deployment controllers report; the
	// HPA reads the Deployment's through the scale subresource.
	n := int32(len(d.liveReplicas()))
	rs.Status = appsv1.ReplicaSetStatus{Replicas: n, FullyLabeledReplicas: n, ReadyReplicas: n, AvailableReplicas: n, ObservedGeneration: rs.Generation}
	if inf.rs, err = d.client.AppsV1().ReplicaSets(rs.Namespace).UpdateStatus(ctx, rs, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update replicaset status: %w", err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		dep, err := d.client.AppsV1().Deployments(inf.deploy.Namespace).Get(ctx, inf.deploy.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		_, err = d.client.AppsV1().Deployments(dep.Namespace).UpdateStatus(ctx, dep, metav1.UpdateOptions{})
		return err
	})
}

func (d *demo) liveReplicas() []*placement {
	var out []*placement
	for _, p := range d.livePlacements() {
		if p.Example == "inference-vllm" {
			out = append(out, p)
		}
	}
	return out
}

// autoscale reads examples/inference-vllm/scaledobject.yaml as the KEDA
// operator does, starts kubegpu-scaler's gRPC server, and then, while a
// load runs against the replicas, polls it with KEDA's externalscaler
// client (GetMetricSpec once, then GetMetrics and IsActive every poll)
// and applies the HPA's rule to the answer, writing the result through
// the Deployment's scale subresource.
func (d *demo) autoscale(ctx context.Context) error {
	s := d.scaling
	objs, err := d.exampleObjects("inference-vllm/scaledobject.yaml")
	if err != nil {
		return err
	}
	if len(objs["ScaledObject"]) != 1 {
		return errors.New("inference-vllm/scaledobject.yaml: want one ScaledObject")
	}
	so := objs["ScaledObject"][0]
	spec, err := readScaledObject(so)
	if err != nil {
		return err
	}
	s.Min, s.Max = spec.min, spec.max

	// Demo time: phases of seconds instead of minutes. The scaler gives
	// replicas back a step per scale-down stabilization window, so that
	// window is a few polls here (3 minutes in the example).
	poll, hold := time.Second, 5*time.Second
	s.Phases = []loadPhase{{"steady", 3, 6 * time.Second}, {"burst", 30, 30 * time.Second}, {"quiet", 1, 60 * time.Second}}
	if d.opts.Short {
		poll, hold = 500*time.Millisecond, 2500*time.Millisecond
		s.Phases = []loadPhase{{"steady", 3, 2 * time.Second}, {"burst", 30, 10 * time.Second}, {"quiet", 1, 40 * time.Second}}
	}
	reg := prometheus.NewRegistry()
	scaler, err := server.New(s.ctx, server.Options{
		NewSource:    server.NewSourceFactory(server.SourceOptions{PodLister: d.inf.lister, Timeout: 2 * time.Second, Window: 3 * poll}),
		PollInterval: poll / 4,
		Metrics:      server.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	s.grpc = grpc.NewServer()
	scaler.Register(s.grpc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("scaler listen: %w", err)
	}
	s.wg.Go(func() { _ = s.grpc.Serve(lis) })
	s.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("scaler client: %w", err)
	}
	keda := pb.NewExternalScalerClient(s.conn)

	md := maps.Clone(spec.metadata)
	s.Overrides = map[string]string{
		"scalerAddress":          lis.Addr().String(),
		"metricsPort":            strconv.Itoa(d.inf.port),
		"scaleDownStabilization": hold.String(),
		"burstWindow":            (2 * poll).String(),
	}
	maps.Copy(md, s.Overrides)
	var over []string
	for _, k := range slices.Sorted(maps.Keys(s.Overrides)) {
		over = append(over, k+"="+s.Overrides[k])
	}
	d.logf("kubegpu-scaler on %s; ScaledObject %s/%s (min %d, max %d): the example's trigger metadata, demo time: %s",
		lis.Addr(), so.GetNamespace(), so.GetName(), s.Min, s.Max, strings.Join(over, " "))
	ref := &pb.ScaledObjectRef{Name: so.GetName(), Namespace: so.GetNamespace(), ScalerMetadata: md}
	specs, err := keda.GetMetricSpec(ctx, ref)
	if err != nil {
		return fmt.Errorf("GetMetricSpec: %w", err)
	}
	if len(specs.GetMetricSpecs()) != 1 || specs.GetMetricSpecs()[0].GetTargetSizeFloat() <= 0 {
		return fmt.Errorf("GetMetricSpec: want one metric with a positive target, got %v", specs.GetMetricSpecs())
	}
	metricName, target := specs.GetMetricSpecs()[0].GetMetricName(), specs.GetMetricSpecs()[0].GetTargetSizeFloat()
	d.logf("GetMetricSpec: %s target %g (AverageValue); KEDA polls every %s here (pollingInterval %ds in the example), HPA scale-up <= %d pods and scale-down <= %d pod per poll",
		metricName, target, poll, spec.pollingInterval, spec.upPods, spec.downPods)

	// The HPA KEDA creates for a ScaledObject; the demo's HPA rule writes
	// its status each poll.
	if spec.target != d.inf.deploy.Name {
		return fmt.Errorf("ScaledObject targets %q, the example's Deployment is %q", spec.target, d.inf.deploy.Name)
	}
	hpa, err := d.client.AutoscalingV2().HorizontalPodAutoscalers(spec.namespace).Create(ctx, spec.hpa(metricName, target), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create HPA: %w", err)
	}
	d.logf("HPA %s/%s created as KEDA would: External metric %s, AverageValue target %g", hpa.Namespace, hpa.Name,
		hpa.Spec.Metrics[0].External.Metric.Name, target)

	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	s.wg.Go(func() {
		t := time.NewTicker(loadTick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-lctx.Done():
				return
			case now := <-t.C:
				s.load.step(now, now.Sub(last))
				last = now
			}
		}
	})

	s.Initial = len(d.liveReplicas())
	s.Peak = s.Initial
	d.printf("    %6s  %-6s %5s %6s %8s %7s %6s %8s %7s\n", "time", "phase", "req/s", "queue", "p95 TTFT", "scaler", "active", "replicas", "desired")
	for _, ph := range s.Phases {
		s.load.setPhase(ph)
		end := time.Now().Add(ph.For)
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(poll):
			}
			// The HPA reads the current count from the scale subresource.
			sc, err := d.client.AppsV1().Deployments(spec.namespace).GetScale(ctx, spec.target, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("read scale: %w", err)
			}
			pt := scalePoint{At: time.Since(d.start), Phase: ph.Name, Rate: ph.Rate, Current: int(sc.Status.Replicas)}
			pt.Queue, pt.P95TTFT = s.load.take()
			pt.Desired = pt.Current
			m, err := keda.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: metricName})
			if err == nil {
				var act *pb.IsActiveResponse
				if act, err = keda.IsActive(ctx, ref); err == nil {
					pt.Active = act.GetResult()
				}
			}
			if err == nil && len(m.GetMetricValues()) != 1 {
				err = fmt.Errorf("GetMetrics returned %d values", len(m.GetMetricValues()))
			}
			if err != nil {
				// KEDA keeps the replica count while the scaler errors
				// (its fallback starts after failureThreshold errors).
				s.Errors++
				pt.Err = err.Error()
			} else {
				pt.Metric = m.GetMetricValues()[0].GetMetricValueFloat()
				pt.Desired = spec.hpaDesired(pt.Current, pt.Metric, target)
			}
			s.Points = append(s.Points, pt)
			if err := d.setHPAStatus(ctx, hpa, pt); err != nil {
				return err
			}
			mark := ""
			if pt.Desired != pt.Current {
				mark = fmt.Sprintf(" -> scale to %d", pt.Desired)
			}
			if pt.Err != "" {
				mark = " scaler error: " + pt.Err
			}
			d.printf("    %5.1fs  %-6s %5.0f %6.0f %7.2fs %7.1f %6v %8d %7d%s\n", pt.At.Seconds(), pt.Phase, pt.Rate, pt.Queue, pt.P95TTFT, pt.Metric, pt.Active, pt.Current, pt.Desired, mark)
			if pt.Desired != pt.Current {
				scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: d.inf.deploy.Name, Namespace: d.inf.deploy.Namespace},
					Spec: autoscalingv1.ScaleSpec{Replicas: int32(pt.Desired)}}
				if _, err := d.client.AppsV1().Deployments(scale.Namespace).UpdateScale(ctx, scale.Name, scale, metav1.UpdateOptions{}); err != nil {
					return fmt.Errorf("scale deployment: %w", err)
				}
				if err := d.reconcileReplicas(ctx, pt.Desired); err != nil {
					return err
				}
				if n := len(d.liveReplicas()); n > s.Peak {
					s.Peak = n
					d.peak = nil
					for _, p := range d.livePlacements() {
						c := *p
						d.peak = append(d.peak, &c)
					}
				}
			}
			// The quiet phase ends once the Deployment is back at its
			// minimum: the point has been made.
			if ph.Name == "quiet" && pt.Desired == s.Min && s.Peak > s.Initial && len(d.liveReplicas()) == s.Min {
				break
			}
		}
	}
	s.Final = len(d.liveReplicas())
	d.logf("replicas: %d at start, %d at the peak of the burst, %d after it (%d KEDA polls, %d scaler errors)", s.Initial, s.Peak, s.Final, len(s.Points), s.Errors)
	switch {
	case s.Peak <= s.Initial:
		return fmt.Errorf("replicas never grew under load (peak %d, start %d)", s.Peak, s.Initial)
	case s.Final != s.Min:
		return fmt.Errorf("replicas did not shrink back to minReplicaCount %d after the load (end %d)", s.Min, s.Final)
	case s.Errors*4 > len(s.Points):
		return fmt.Errorf("%d of %d scaler polls failed", s.Errors, len(s.Points))
	}
	dep, err := d.client.AppsV1().Deployments(d.inf.deploy.Namespace).Get(ctx, d.inf.deploy.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read deployment: %w", err)
	}
	if got := int(ptr.Deref(dep.Spec.Replicas, -1)); got != s.Final || int(dep.Status.ReadyReplicas) != s.Final {
		return fmt.Errorf("deployment spec.replicas %d, ready %d, %d replicas running", got, dep.Status.ReadyReplicas, s.Final)
	}
	if hpa, err = d.client.AutoscalingV2().HorizontalPodAutoscalers(hpa.Namespace).Get(ctx, hpa.Name, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("read HPA: %w", err)
	}
	d.logf("HPA %s/%s status at the last poll: %d replicas, desired %d", hpa.Namespace, hpa.Name, hpa.Status.CurrentReplicas, hpa.Status.DesiredReplicas)
	return nil
}

// scaledObjectSpec is what the demo's KEDA and HPA read from the
// ScaledObject.
type scaledObjectSpec struct {
	name, namespace  string
	target           string // scaleTargetRef.name (a Deployment)
	min, max         int
	pollingInterval  int64
	metadata         map[string]string
	behavior         *autoscalingv2.HorizontalPodAutoscalerBehavior
	upPods, downPods int
}

func readScaledObject(so *unstructured.Unstructured) (*scaledObjectSpec, error) {
	s := &scaledObjectSpec{name: so.GetName(), namespace: so.GetNamespace(), min: 0, max: 100, pollingInterval: 30,
		upPods: math.MaxInt32, downPods: math.MaxInt32}
	s.target, _, _ = unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "name")
	if kind, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "kind"); s.target == "" || (kind != "" && kind != "Deployment") {
		return nil, fmt.Errorf("ScaledObject %s: scaleTargetRef must name a Deployment", so.GetName())
	}
	if v, ok, _ := unstructured.NestedInt64(so.Object, "spec", "minReplicaCount"); ok {
		s.min = int(v)
	}
	if v, ok, _ := unstructured.NestedInt64(so.Object, "spec", "maxReplicaCount"); ok {
		s.max = int(v)
	}
	if v, ok, _ := unstructured.NestedInt64(so.Object, "spec", "pollingInterval"); ok {
		s.pollingInterval = v
	}
	if s.min < 0 || s.max < max(s.min, 1) {
		return nil, fmt.Errorf("ScaledObject %s: min %d / max %d replicas", so.GetName(), s.min, s.max)
	}
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 {
		return nil, fmt.Errorf("ScaledObject %s: want one trigger, found %d", so.GetName(), len(triggers))
	}
	trig, _ := triggers[0].(map[string]any)
	if trig["type"] != "external" {
		return nil, fmt.Errorf("ScaledObject %s: trigger type %v, want external", so.GetName(), trig["type"])
	}
	md, ok, err := unstructured.NestedStringMap(trig, "metadata")
	if err != nil || !ok {
		return nil, fmt.Errorf("ScaledObject %s: trigger metadata: %v", so.GetName(), err)
	}
	s.metadata = md
	if raw, ok, _ := unstructured.NestedMap(so.Object, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"); ok {
		var b autoscalingv2.HorizontalPodAutoscalerBehavior
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &b); err != nil {
			return nil, fmt.Errorf("ScaledObject %s: behavior: %w", so.GetName(), err)
		}
		s.behavior = &b
		s.upPods = podsPolicy(b.ScaleUp, s.upPods)
		s.downPods = podsPolicy(b.ScaleDown, s.downPods)
	}
	return s, nil
}

// hpa is the HorizontalPodAutoscaler KEDA creates for the ScaledObject:
// named keda-hpa-<name>, one External metric per trigger with the
// scaler's target as AverageValue, the ScaledObject's bounds and
// behavior.
func (s *scaledObjectSpec) hpa(metricName string, target float64) *autoscalingv2.HorizontalPodAutoscaler {
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-" + s.name, Namespace: s.namespace,
			Labels: map[string]string{"scaledobject.keda.sh/name": s.name, "app.kubernetes.io/managed-by": "keda-operator"}},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: s.target},
			MinReplicas:    ptr.To(int32(max(s.min, 1))),
			MaxReplicas:    int32(s.max),
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ExternalMetricSourceType,
				External: &autoscalingv2.ExternalMetricSource{
					// KEDA names the metric after the trigger's index.
					Metric: autoscalingv2.MetricIdentifier{Name: "s0-" + metricName,
						Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"scaledobject.keda.sh/name": s.name}}},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType,
						AverageValue: resource.NewMilliQuantity(int64(math.Round(target*1000)), resource.DecimalSI)},
				},
			}},
			Behavior: s.behavior,
		},
	}
}

// setHPAStatus records one poll on the HPA, as the HPA controller does.
func (d *demo) setHPAStatus(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, pt scalePoint) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := d.client.AutoscalingV2().HorizontalPodAutoscalers(hpa.Namespace).Get(ctx, hpa.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.CurrentReplicas, cur.Status.DesiredReplicas = int32(pt.Current), int32(pt.Desired)
		if pt.Err == "" && pt.Current > 0 {
			cur.Status.CurrentMetrics = []autoscalingv2.MetricStatus{{
				Type: autoscalingv2.ExternalMetricSourceType,
				External: &autoscalingv2.ExternalMetricStatus{
					Metric:  cur.Spec.Metrics[0].External.Metric,
					Current: autoscalingv2.MetricValueStatus{AverageValue: resource.NewMilliQuantity(int64(math.Round(pt.Metric*1000/float64(pt.Current))), resource.DecimalSI)},
				},
			}}
		}
		if pt.Desired != pt.Current {
			cur.Status.LastScaleTime = ptr.To(metav1.Now())
		}
		_, err = d.client.AutoscalingV2().HorizontalPodAutoscalers(hpa.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// podsPolicy is the largest Pods-type step a scaling rule allows per
// period (the demo takes one period per KEDA poll).
func podsPolicy(r *autoscalingv2.HPAScalingRules, def int) int {
	if r == nil {
		return def
	}
	step := 0
	for _, p := range r.Policies {
		if p.Type == autoscalingv2.PodsScalingPolicy {
			step = max(step, int(p.Value))
		}
	}
	if step == 0 {
		return def
	}
	return step
}

// hpaDesired is the HPA's rule for an External metric of type
// AverageValue: desired = ceil(value / target), unless the usage ratio
// value / (target * current) is within the 10% tolerance of 1; then
// clamped to [min, max] and to the behaviour's per-period step.
func (s *scaledObjectSpec) hpaDesired(current int, value, target float64) int {
	desired := current
	if current == 0 || math.Abs(value/(target*float64(current))-1) > 0.1 {
		desired = int(math.Ceil(value / target))
	}
	desired = min(max(desired, s.min), s.max)
	desired = min(desired, current+s.upPods)
	desired = max(desired, current-s.downPods)
	return desired
}

func labelsOf(rs *appsv1.ReplicaSet) labels.Selector {
	return labels.SelectorFromSet(rs.Spec.Selector.MatchLabels)
}
