package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/policy"
	"github.com/kubegpu/kubegpu/scaler/presets"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// Policy names.
const (
	PolicyKubegpu   = "kubegpu"
	PolicyKEDAQueue = "keda-queue"
	PolicyHPAUtil   = "hpa-util"
	PolicyStatic    = "static"
	// PolicySchedule follows Config.Plan (the clairvoyant bound's
	// replay); it is not one of the compared policies.
	PolicySchedule = "schedule"
)

// PolicyNames lists the policies in report order.
func PolicyNames() []string {
	return []string{PolicyKubegpu, PolicyKEDAQueue, PolicyHPAUtil, PolicyStatic}
}

// autoscaler is one way of turning the servers' state into an HPA
// recommendation. sample runs on the policy's own metric clock (the
// scaler's poll, KEDA's poll); recommend at each HPA sync.
type autoscaler interface {
	sampleEvery() time.Duration
	sample(ctx context.Context, s *engine) error
	// recommend returns the metric's replica recommendation before the
	// HPA's behavior is applied; ok false keeps the current count.
	recommend(current int32, s *engine) (int32, bool)
	behavior() Behavior
}

// namespace of the simulated pods.
const simNamespace = "sim"

// kubegpuScaler runs kubegpu-scaler's poll loop: the pods source scrapes
// every ready replica's vLLM /metrics (rendered from the replica's state in
// the Prometheus text format, served over an in-memory HTTP transport),
// parses and merges them exactly as in production, and policy.Window
// turns the snapshot into the count GetMetrics reports. The HPA then sees
// an External metric with AverageValue target policy.MetricTarget.
type kubegpuScaler struct {
	meta    *metadata.Metadata
	src     *source.Pods
	win     policy.Window
	indexer cache.Indexer
	pods    map[int]*corev1.Pod
	value   float64
	valid   bool
	poll    time.Duration
	last    policy.Decision
}

// KubegpuTrigger is the ScaledObject trigger metadata the kubegpu policy
// runs with: the shipped example's (examples/inference-vllm), with the
// latency target and signal set to the simulated SLO, and the percentile
// set to the attainment goal, since "99% within the SLO" is "p99 <= SLO".
func KubegpuTrigger(slo time.Duration, signal presets.Signal, goal float64) map[string]string {
	return map[string]string{
		metadata.KeySource:             string(metadata.SourcePods),
		metadata.KeyPodSelector:        "app=sim",
		metadata.KeyPreset:             presets.VLLM,
		metadata.KeyTargetQueueDepth:   "4",
		metadata.KeyTargetLatency:      slo.String(),
		metadata.KeyLatencySignal:      string(signal),
		metadata.KeyLatencyPercentile:  strconv.FormatFloat(goal, 'f', -1, 64),
		metadata.KeyScaleDownStabilize: "3m",
	}
}

func newKubegpuScaler(trigger map[string]string, s *engine) (*kubegpuScaler, error) {
	meta, err := metadata.Parse(trigger)
	if err != nil {
		return nil, fmt.Errorf("kubegpu trigger: %w", err)
	}
	k := &kubegpuScaler{
		meta:    meta,
		indexer: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		pods:    map[int]*corev1.Pod{},
		poll:    5 * time.Second, // kubegpu-scaler --poll-interval default
	}
	k.src, err = source.NewPods(source.PodsConfig{
		Lister:    corelisters.NewPodLister(k.indexer),
		Namespace: simNamespace,
		Meta:      meta,
		Client:    &http.Client{Transport: metricsTransport{s}},
		Window:    source.DefaultWindow,
		Now:       s.wallclock,
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

func (k *kubegpuScaler) sampleEvery() time.Duration { return k.poll }
func (k *kubegpuScaler) behavior() Behavior {
	// The example leaves scale-down smoothing to the scaler.
	b := DefaultBehavior()
	b.Down.Stabilization = 0
	return b
}

// sample syncs the pod cache with the ready replicas, then polls as the
// server's poller does.
func (k *kubegpuScaler) sample(ctx context.Context, s *engine) error {
	live := map[int]bool{}
	for _, r := range s.replicas {
		if r.state != ready {
			continue
		}
		live[r.id] = true
		if _, ok := k.pods[r.id]; ok {
			continue
		}
		p := simPod(r)
		if err := k.indexer.Add(p); err != nil {
			return fmt.Errorf("pod cache: %w", err)
		}
		k.pods[r.id] = p
	}
	for id, p := range k.pods {
		if !live[id] {
			if err := k.indexer.Delete(p); err != nil {
				return fmt.Errorf("pod cache: %w", err)
			}
			delete(k.pods, id)
		}
	}
	snap, err := k.src.Fetch(ctx)
	if err != nil {
		// As in production: no new value; the HPA keeps what it has.
		k.valid = false
		return nil
	}
	k.last = k.win.Decide(k.meta, snap)

	k.value, k.valid = k.last.MetricValue, true
	return nil
}

func (k *kubegpuScaler) recommend(current int32, _ *engine) (int32, bool) {
	if !k.valid {
		return current, false
	}
	return ExternalAverageValue(current, k.value, policy.MetricTarget, DefaultTolerance), true
}

func simPod(r *replica) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: r.name, Namespace: simNamespace, Labels: map[string]string{"app": "sim"}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: podIP(r.id),
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			},
		},
	}
}

func podIP(id int) string { return fmt.Sprintf("10.%d.%d.%d", (id>>16)&255, (id>>8)&255, id&255) }

// metricsTransport answers GET http://POD_IP:PORT/metrics with the
// replica's exposition text, so the pods source runs unchanged.
type metricsTransport struct{ s *engine }

func (t metricsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := t.s.byIP[req.URL.Hostname()]
	if r == nil {
		return nil, fmt.Errorf("no simulated pod at %s", req.URL.Host)
	}
	var buf bytes.Buffer
	if err := writeVLLMMetrics(&buf, r); err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": []string{string(expfmt.NewFormat(expfmt.TypeTextPlain))}},
		Body:       io.NopCloser(&buf),
		Request:    req,
	}, nil
}

// writeVLLMMetrics renders the families vLLM exports that the vllm preset
// reads, labelled as vLLM labels them.
func writeVLLMMetrics(w io.Writer, r *replica) error {
	labels := []*dto.LabelPair{
		{Name: proto.String("engine"), Value: proto.String("0")},
		{Name: proto.String("model_name"), Value: proto.String("sim-model")},
	}
	gauge := func(name string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: labels, Gauge: &dto.Gauge{Value: proto.Float64(v)}}}}
	}
	histo := func(name string, h *hist) *dto.MetricFamily {
		var cum uint64
		bs := make([]*dto.Bucket, len(h.bounds))
		for i, ub := range h.bounds {
			cum += h.counts[i]
			bs[i] = &dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(cum)}
		}
		return &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{{Label: labels, Histogram: &dto.Histogram{
				SampleCount: proto.Uint64(h.n), SampleSum: proto.Float64(h.sum), Bucket: bs}}}}
	}
	p, _ := presets.Lookup(presets.VLLM)
	fams := []*dto.MetricFamily{
		gauge(p.Queue, float64(r.queueLen())),
		gauge(p.Running, float64(r.running)),
		histo(p.Latency[presets.SignalTTFT].Name, &r.ttftHist),
		histo(p.Latency[presets.SignalE2E].Name, &r.e2eHist),
		histo(p.Latency[presets.SignalQueue].Name, &r.queueHist),
	}
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(w, f); err != nil {
			return fmt.Errorf("render %s: %w", f.GetName(), err)
		}
	}
	return nil
}

// kedaPoll is KEDA's default pollingInterval; the baselines' metrics are
// read from Prometheus at this cadence.
const kedaPoll = 30 * time.Second

// kedaQueue is KEDA's Prometheus scaler on
// sum(vllm:num_requests_waiting) with threshold T: KEDA hands the HPA an
// External metric with AverageValue target T.
type kedaQueue struct {
	threshold float64
	value     float64
	valid     bool
}

func (k *kedaQueue) sampleEvery() time.Duration { return kedaPoll }
func (k *kedaQueue) behavior() Behavior         { return DefaultBehavior() }
func (k *kedaQueue) sample(_ context.Context, s *engine) error {
	var q float64
	for _, r := range s.replicas {
		if r.state == ready {
			q += float64(r.queueLen())
		}
	}
	k.value, k.valid = q, true
	return nil
}
func (k *kedaQueue) recommend(current int32, _ *engine) (int32, bool) {
	if !k.valid {
		return current, false
	}
	return ExternalAverageValue(current, k.value, k.threshold, DefaultTolerance), true
}

// hpaUtil is an HPA on a Pods metric, the GPU utilisation each replica
// reports (DCGM_FI_DEV_GPU_UTIL through a metrics adapter: the share of
// the last interval the GPU was executing), with an AverageValue target.
type hpaUtil struct {
	target  float64
	prev    map[int]time.Duration // busy time at the previous sample
	prevAt  time.Duration
	values  []float64
	missing int
	valid   bool
}

func (h *hpaUtil) sampleEvery() time.Duration { return kedaPoll }
func (h *hpaUtil) behavior() Behavior         { return DefaultBehavior() }
func (h *hpaUtil) sample(_ context.Context, s *engine) error {
	now := s.now
	cur := map[int]time.Duration{}
	h.values, h.missing = h.values[:0], 0
	for _, r := range s.replicas {
		switch r.state {
		case starting:
			h.missing++
		case ready:
			b := r.busyUntil(now)
			cur[r.id] = b
			since := h.prevAt
			prev, ok := h.prev[r.id]
			if !ok {
				since, prev = r.readyAt, 0
			}
			if now > since {
				h.values = append(h.values, math.Min(1, float64(b-prev)/float64(now-since)))
			} else {
				h.missing++
			}
		}
	}
	h.prev, h.prevAt, h.valid = cur, now, true
	return nil
}
func (h *hpaUtil) recommend(current int32, _ *engine) (int32, bool) {
	if !h.valid || len(h.values) == 0 {
		return current, false
	}
	return PodsAverageValue(current, h.values, h.missing, h.target, DefaultTolerance), true
}
