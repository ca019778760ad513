package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

// PodsConfig configures a Pods source.
type PodsConfig struct {
	// Lister lists pods from an informer cache (no API call per scrape).
	Lister    corelisters.PodLister
	Namespace string
	Meta      *metadata.Metadata
	// Client defaults to a plain http.Client; per-request timeouts come
	// from Timeout.
	Client       *http.Client
	Timeout      time.Duration
	MaxBodyBytes int64
	// Parallelism bounds concurrent scrapes (default 16).
	Parallelism int
	// Window is how far back latency percentiles look (default 1m).
	Window time.Duration
	Now    func() time.Time
}

// Pods scrapes the serving pods' /metrics directly.
type Pods struct {
	cfg PodsConfig
	// history keeps, per pod, cumulative latency buckets from past scrapes
	// so a percentile covers the last Window, not the pod's lifetime.
	history map[string][]sample
}

type sample struct {
	at      time.Time
	buckets Buckets
}

// NewPods validates the config and returns a source.
func NewPods(cfg PodsConfig) (*Pods, error) {
	if cfg.Lister == nil {
		return nil, errors.New("pods source: no pod lister (is the scaler running without Kubernetes access?)")
	}
	if cfg.Meta == nil || cfg.Meta.Source != metadata.SourcePods {
		return nil, errors.New("pods source: metadata is not source=pods")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 16
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pods{cfg: cfg, history: map[string][]sample{}}, nil
}

type podResult struct {
	pod     string
	queue   float64
	running float64
	latency Buckets
	err     error
}

// Fetch scrapes every ready pod. Any ready pod that cannot be scraped or
// parsed fails the whole snapshot: summing only the pods that answered
// would under-count demand.
func (p *Pods) Fetch(ctx context.Context) (Snapshot, error) {
	pods, err := p.cfg.Lister.Pods(p.cfg.Namespace).List(p.cfg.Meta.PodSelector)
	if err != nil {
		return Snapshot{}, fmt.Errorf("list pods %s/%s: %w", p.cfg.Namespace, p.cfg.Meta.PodSelectorRaw, err)
	}
	var ready []*corev1.Pod
	for _, pod := range pods {
		if podReady(pod) {
			ready = append(ready, pod)
		}
	}
	if len(ready) == 0 {
		// With no server running there is nothing to read demand from;
		// that is "unknown", not "zero".
		return Snapshot{}, fmt.Errorf("no ready pods match %q in namespace %s", p.cfg.Meta.PodSelectorRaw, p.cfg.Namespace)
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })

	results := make([]podResult, len(ready))
	sem := make(chan struct{}, p.cfg.Parallelism)
	var wg sync.WaitGroup
	for i, pod := range ready {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = p.scrape(ctx, pod)
		}()
	}
	wg.Wait()

	now := p.cfg.Now()
	snap := Snapshot{At: now, ReadyReplicas: len(ready)}
	var errs []error
	var window Buckets
	seen := make(map[string]bool, len(results))
	var oldest time.Time
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		seen[r.pod] = true
		snap.QueueTotal += r.queue
		snap.RunningTotal += r.running
		rep := Replica{Name: r.pod, Queue: r.queue, Running: r.running}
		if r.latency != nil {
			if d, at, ok, recent, prev := p.windowDelta(r.pod, now, r.latency); ok {
				window = window.Add(d)
				rep.Recent = recent
				snap.Latency.Recent += recent
				if since := now.Sub(prev); since > snap.Latency.RecentOver {
					snap.Latency.RecentOver = since
				}
				if oldest.IsZero() || at.Before(oldest) {
					oldest = at
				}
			}
		}
		snap.Replicas = append(snap.Replicas, rep)
	}
	for pod := range p.history {
		if !seen[pod] {
			delete(p.history, pod)
		}
	}
	if len(errs) > 0 {
		return Snapshot{}, fmt.Errorf("scrape %d of %d pods failed: %w", len(errs), len(ready), errors.Join(errs...))
	}
	if p.cfg.Meta.TargetLatency > 0 {
		snap.Latency.Window = p.cfg.Window
		if !oldest.IsZero() {
			snap.Latency.Window = now.Sub(oldest)
		}
		snap.Latency.Observations = window.Total()
		snap.Latency.WithinTarget = window.Below(p.cfg.Meta.TargetLatency.Seconds() / p.cfg.Meta.LatencyHistogram.UnitSeconds)
		if v, ok := window.Quantile(p.cfg.Meta.LatencyPercentile); ok {
			d, err := latencyDuration(v, p.cfg.Meta.LatencyHistogram.UnitSeconds)
			if err != nil {
				return Snapshot{}, fmt.Errorf("histogram %s: %w", p.cfg.Meta.LatencyHistogram.Name, err)
			}
			snap.Latency.Valid = true
			snap.Latency.Value = d
		}
	}
	return snap, nil
}

// windowDelta records the pod's cumulative buckets and returns the increase
// since the oldest sample still inside the window. A pod's first scrape has
// no baseline and contributes nothing (its lifetime totals are not a window).
// It also returns the observations since the pod's previous scrape and
// that scrape's time.
func (p *Pods) windowDelta(pod string, now time.Time, cur Buckets) (delta Buckets, at time.Time, ok bool, recent float64, prev time.Time) {
	h := p.history[pod]
	// Keep the newest sample at or before the window start as the baseline,
	// plus everything after it.
	cut := 0
	for i := range h {
		if !h[i].at.After(now.Add(-p.cfg.Window)) {
			cut = i
		}
	}
	h = h[cut:]
	if len(h) > 0 {
		delta, ok = cur.Sub(h[0].buckets)
		at = h[0].at
		if ok {
			last := h[len(h)-1]
			recent, prev = max(0, cur.Total()-last.buckets.Total()), last.at
		} else {
			h = nil // counter reset or layout change: start over
		}
	}
	p.history[pod] = append(h, sample{at: now, buckets: cur})
	return delta, at, ok, recent, prev
}

func podReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (p *Pods) scrape(ctx context.Context, pod *corev1.Pod) podResult {
	r := podResult{pod: pod.Name}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(p.cfg.Meta.MetricsPort)) + p.cfg.Meta.MetricsPath
	var perr error
	err := get(ctx, p.cfg.Client, url, p.cfg.Timeout, p.cfg.MaxBodyBytes, "text/plain;version=0.0.4", func(body []byte) error {
		r.queue, r.running, r.latency, perr = ParseReplica(body, p.cfg.Meta)
		return perr
	})
	switch {
	case perr != nil:
		r.err = fmt.Errorf("pod %s: %s: %w", pod.Name, url, perr)
	case err != nil:
		r.err = fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	return r
}

// ParseReplica reads one replica's /metrics body: the preset's queue and
// running gauges and, with a latency target, its cumulative latency
// histogram. Anything missing or malformed is an error.
func ParseReplica(body []byte, m *metadata.Metadata) (queue, running float64, latency Buckets, err error) {
	fams, err := ParseText(body)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("parse: %w", err)
	}
	if queue, err = gaugeSum(fams, m.Preset.Queue); err != nil {
		return 0, 0, nil, err
	}
	if m.Preset.Running != "" {
		if running, err = gaugeSum(fams, m.Preset.Running); err != nil {
			return 0, 0, nil, err
		}
	}
	if m.TargetLatency > 0 {
		if latency, err = histogramSum(fams, m.LatencyHistogram.Name); err != nil {
			return 0, 0, nil, err
		}
	}
	return queue, running, latency, nil
}

// ParseText parses Prometheus text exposition format. expfmt's text parser
// panics on some malformed input (prometheus/common v0.71.0: "# TYPE x
// gauge" followed by a line starting with "{", found by FuzzParseReplica);
// a body from a pod must never take the scaler down, so a panic is
// returned as an error.
func ParseText(body []byte) (fams map[string]*dto.MetricFamily, err error) {
	defer func() {
		if r := recover(); r != nil {
			fams, err = nil, fmt.Errorf("text format parser panicked: %v", r)
		}
	}()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(body))
}

// gaugeSum sums every series of a gauge (or counter/untyped) family, e.g.
// one per model_name. A missing family is an error: it means a wrong preset
// or a server that has not started, not zero demand.
func gaugeSum(fams map[string]*dto.MetricFamily, name string) (float64, error) {
	f, ok := fams[name]
	if !ok || len(f.GetMetric()) == 0 {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	var sum float64
	for _, m := range f.GetMetric() {
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("metric %s is %s, want a gauge", name, f.GetType())
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return 0, fmt.Errorf("metric %s has invalid value %v", name, v)
		}
		sum += v
	}
	if math.IsInf(sum, 0) {
		return 0, fmt.Errorf("metric %s sums to %v", name, sum)
	}
	return sum, nil
}

// histogramSum merges every series of a histogram family into one
// cumulative bucket list.
func histogramSum(fams map[string]*dto.MetricFamily, name string) (Buckets, error) {
	f, ok := fams[name]
	if !ok || len(f.GetMetric()) == 0 {
		return nil, fmt.Errorf("histogram %s not found", name)
	}
	if f.GetType() != dto.MetricType_HISTOGRAM {
		return nil, fmt.Errorf("metric %s is %s, want a histogram", name, f.GetType())
	}
	var out Buckets
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		b := make(Buckets, 0, len(h.GetBucket())+1)
		for _, x := range h.GetBucket() {
			c := float64(x.GetCumulativeCount())
			if x.CumulativeCountFloat != nil { // the parser stores "3.0" as a float count
				c = x.GetCumulativeCountFloat()
			}
			b = append(b, Bucket{UpperBound: x.GetUpperBound(), Count: c})
		}
		total := float64(h.GetSampleCount())
		if h.SampleCountFloat != nil {
			total = h.GetSampleCountFloat()
		}
		// The text format's +Inf bucket may be folded into SampleCount.
		if len(b) == 0 || !math.IsInf(b[len(b)-1].UpperBound, 1) {
			b = append(b, Bucket{UpperBound: math.Inf(1), Count: total})
		}
		if err := b.validate(); err != nil {
			return nil, fmt.Errorf("histogram %s: %w", name, err)
		}
		out = out.Add(b)
	}
	return out, nil
}
