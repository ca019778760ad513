// Package metadata parses a ScaledObject's external-trigger metadata once
// into a typed, validated Metadata, the way KEDA's own scalers do, so the
// hot path never looks at strings again.
package metadata

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubegpu/kubegpu/scaler/presets"
)

// Keys of the trigger metadata.
const (
	KeySource               = "source"
	KeyServerAddress        = "serverAddress"
	KeyNamespace            = "namespace"
	KeyPodSelector          = "podSelector"
	KeyMetricsPort          = "metricsPort"
	KeyMetricsPath          = "metricsPath"
	KeyPreset               = "preset"
	KeyQueueMetric          = "queueMetric"
	KeyLatencyMetric        = "latencyMetric"
	KeyTargetQueueDepth     = "targetQueueDepth"
	KeyTargetLatency        = "targetLatency"
	KeyLatencyPercentile    = "latencyPercentile"
	KeyLatencySignal        = "latencySignal"
	KeyActivationQueueDepth = "activationQueueDepth"
	KeyBurstWindow          = "burstWindow"
	KeyScaleDownStabilize   = "scaleDownStabilization"
	KeyRateLookback         = "rateLookback"
	KeyTargetUtilization    = "targetUtilization"
)

// kedaKeys are added by KEDA itself to the metadata it forwards (they
// configure KEDA's gRPC client, not us); accepted and ignored.
var kedaKeys = map[string]bool{"scalerAddress": true, "enableTLS": true, "unsafeSsl": true}

// Defaults.
const (
	DefaultMetricsPort       = 8000
	DefaultMetricsPath       = "/metrics"
	DefaultLatencyPercentile = 0.95
	DefaultLatencySignal     = presets.SignalTTFT
	// DefaultBurstWindow is how far back queue growth is measured; a
	// growing queue is sized one such step ahead.
	DefaultBurstWindow = 30 * time.Second
	// DefaultScaleDownStabilization holds the highest desired count this
	// long before letting it fall: model servers take minutes to start, so
	// giving a replica back on a short lull costs more than keeping it.
	DefaultScaleDownStabilization = 3 * time.Minute
	// MaxBurstWindow and MaxScaleDownStabilization bound the keys; longer
	// windows would make the scaler blind to real changes.
	MaxBurstWindow            = 5 * time.Minute
	MaxScaleDownStabilization = time.Hour
	// MaxRateLookback bounds how far back the rate rule (off by default)
	// looks for the highest arrival rate and the measured capacity.
	MaxRateLookback = time.Hour
	// DefaultTargetUtilization is the share of a replica's measured
	// capacity the rate rule plans for: the headroom that random load
	// balancing and bursts within a poll need.
	DefaultTargetUtilization = 0.7
)

// Source says where metrics come from.
type Source string

const (
	// SourcePrometheus queries a Prometheus HTTP API.
	SourcePrometheus Source = "prometheus"
	// SourcePods scrapes the serving pods directly.
	SourcePods Source = "pods"
)

// Metadata is a validated trigger configuration.
type Metadata struct {
	Source Source

	// Prometheus source.
	ServerAddress string
	// Namespace is the value of the `namespace` label matcher added to
	// every PromQL selector; empty means "the ScaledObject's namespace",
	// filled in by the caller that knows it.
	Namespace string

	// Pods source.
	PodSelector    labels.Selector
	PodSelectorRaw string
	MetricsPort    int
	MetricsPath    string

	Preset presets.Preset

	// TargetQueueDepth is waiting requests per replica; 0 means unset.
	TargetQueueDepth float64
	// TargetLatency is the latency SLO; 0 means unset.
	TargetLatency     time.Duration
	LatencyPercentile float64
	LatencySignal     presets.Signal
	// LatencyHistogram is the preset's histogram for LatencySignal; set
	// only when TargetLatency is.
	LatencyHistogram presets.Histogram

	ActivationQueueDepth float64

	// BurstWindow is how far back queue growth is measured (0: off).
	BurstWindow time.Duration
	// ScaleDownStabilization is how long the desired count stays at the
	// highest value seen before it may fall (0: off).
	ScaleDownStabilization time.Duration
	// RateLookback is how far back the rate rule looks (0, the default:
	// off; pods source with targetLatency only, since the rate comes from
	// the latency histogram's counts).
	RateLookback time.Duration
	// TargetUtilization is the share of measured replica capacity the
	// rate rule sizes for.
	TargetUtilization float64
}

// KeyError is a bad or unknown metadata key. The gRPC layer maps it to
// codes.InvalidArgument.
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string { return fmt.Sprintf("metadata key %q: %s", e.Key, e.Reason) }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Reason: fmt.Sprintf(format, args...)}
}

// IsKeyError reports whether err is (or wraps) a KeyError.
func IsKeyError(err error) bool {
	var ke *KeyError
	return errors.As(err, &ke)
}

// allowed lists every key we read; anything else is rejected so a typo
// ("targetQueueDeph") fails loudly instead of silently using a default.
var allowed = map[string]bool{
	KeySource: true, KeyServerAddress: true, KeyNamespace: true, KeyPodSelector: true,
	KeyMetricsPort: true, KeyMetricsPath: true, KeyPreset: true, KeyQueueMetric: true,
	KeyLatencyMetric: true, KeyTargetQueueDepth: true, KeyTargetLatency: true,
	KeyLatencyPercentile: true, KeyLatencySignal: true, KeyActivationQueueDepth: true,
	KeyBurstWindow: true, KeyScaleDownStabilize: true, KeyRateLookback: true, KeyTargetUtilization: true,
}

// Parse validates trigger metadata. Errors are *KeyError naming the first
// offending key (keys are checked in sorted order, so the error is stable).
func Parse(md map[string]string) (*Metadata, error) {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !allowed[k] && !kedaKeys[k] {
			return nil, keyErr(k, "unknown key")
		}
	}
	get := func(k string) (string, bool) {
		v, ok := md[k]
		return strings.TrimSpace(v), ok && strings.TrimSpace(v) != ""
	}
	// onlyWith rejects keys that belong to another source or preset, so a
	// misplaced key is not silently ignored.
	onlyWith := func(k, what string) error {
		if _, ok := md[k]; ok {
			return keyErr(k, "only valid with %s", what)
		}
		return nil
	}

	m := &Metadata{
		MetricsPort:       DefaultMetricsPort,
		MetricsPath:       DefaultMetricsPath,
		LatencyPercentile: DefaultLatencyPercentile,
		LatencySignal:     DefaultLatencySignal,

		BurstWindow:            DefaultBurstWindow,
		ScaleDownStabilization: DefaultScaleDownStabilization,
		TargetUtilization:      DefaultTargetUtilization,
	}

	src, ok := get(KeySource)
	if !ok {
		return nil, keyErr(KeySource, "required: %q or %q", SourcePrometheus, SourcePods)
	}
	switch Source(src) {
	case SourcePrometheus:
		m.Source = SourcePrometheus
		addr, ok := get(KeyServerAddress)
		if !ok {
			return nil, keyErr(KeyServerAddress, "required with source=prometheus")
		}
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, keyErr(KeyServerAddress, "want an http(s) URL, got %q", addr)
		}
		m.ServerAddress = strings.TrimRight(addr, "/")
		if ns, ok := get(KeyNamespace); ok {
			if strings.ContainsAny(ns, "\"\\\n") {
				return nil, keyErr(KeyNamespace, "invalid namespace %q", ns)
			}
			m.Namespace = ns
		}
		for _, k := range []string{KeyPodSelector, KeyMetricsPort, KeyMetricsPath} {
			if err := onlyWith(k, "source=pods"); err != nil {
				return nil, err
			}
		}
	case SourcePods:
		m.Source = SourcePods
		sel, ok := get(KeyPodSelector)
		if !ok {
			return nil, keyErr(KeyPodSelector, "required with source=pods")
		}
		s, err := labels.Parse(sel)
		if err != nil {
			return nil, keyErr(KeyPodSelector, "%v", err)
		}
		if s.Empty() {
			// An empty selector would scrape every pod in the namespace.
			return nil, keyErr(KeyPodSelector, "must select something")
		}
		m.PodSelector, m.PodSelectorRaw = s, sel
		if v, ok := get(KeyMetricsPort); ok {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				return nil, keyErr(KeyMetricsPort, "want a port 1-65535, got %q", v)
			}
			m.MetricsPort = p
		}
		if v, ok := get(KeyMetricsPath); ok {
			if !strings.HasPrefix(v, "/") {
				return nil, keyErr(KeyMetricsPath, "must start with /, got %q", v)
			}
			m.MetricsPath = v
		}
		for _, k := range []string{KeyServerAddress, KeyNamespace} {
			if err := onlyWith(k, "source=prometheus"); err != nil {
				return nil, err
			}
		}
	default:
		return nil, keyErr(KeySource, "want %q or %q, got %q", SourcePrometheus, SourcePods, src)
	}

	pname, ok := get(KeyPreset)
	if !ok {
		return nil, keyErr(KeyPreset, "required: one of %s", strings.Join(presets.Names(), ", "))
	}
	if pname == presets.Custom {
		q, ok := get(KeyQueueMetric)
		if !ok {
			return nil, keyErr(KeyQueueMetric, "required with preset=custom")
		}
		lat, _ := get(KeyLatencyMetric)
		for k, v := range map[string]string{KeyQueueMetric: q, KeyLatencyMetric: lat} {
			if v != "" && !validMetricName(v) {
				return nil, keyErr(k, "invalid Prometheus metric name %q", v)
			}
		}
		m.Preset = presets.NewCustom(q, lat)
	} else {
		p, ok := presets.Lookup(pname)
		if !ok {
			return nil, keyErr(KeyPreset, "want one of %s, got %q", strings.Join(presets.Names(), ", "), pname)
		}
		m.Preset = p
		for _, k := range []string{KeyQueueMetric, KeyLatencyMetric} {
			if err := onlyWith(k, "preset=custom"); err != nil {
				return nil, err
			}
		}
	}

	if v, ok := get(KeyTargetQueueDepth); ok {
		f, err := positive(v)
		if err != nil {
			return nil, keyErr(KeyTargetQueueDepth, "%v", err)
		}
		m.TargetQueueDepth = f
	}
	if v, ok := get(KeyTargetLatency); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, keyErr(KeyTargetLatency, "want a positive duration like 500ms or 2s, got %q", v)
		}
		m.TargetLatency = d
	}
	if v, ok := get(KeyLatencyPercentile); ok {
		if m.TargetLatency == 0 {
			return nil, keyErr(KeyLatencyPercentile, "only valid with targetLatency")
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f < 1) {
			return nil, keyErr(KeyLatencyPercentile, "want a quantile in (0,1) such as 0.95, got %q", v)
		}
		m.LatencyPercentile = f
	}
	if v, ok := get(KeyLatencySignal); ok {
		if m.TargetLatency == 0 {
			return nil, keyErr(KeyLatencySignal, "only valid with targetLatency")
		}
		switch s := presets.Signal(v); s {
		case presets.SignalTTFT, presets.SignalE2E, presets.SignalQueue:
			m.LatencySignal = s
		default:
			return nil, keyErr(KeyLatencySignal, "want ttft, e2e or queue, got %q", v)
		}
	}
	if m.TargetLatency > 0 {
		h, err := m.Preset.LatencyHistogram(m.LatencySignal)
		if err != nil {
			key := KeyLatencySignal
			if m.Preset.Name == presets.Custom {
				key = KeyLatencyMetric
			}
			return nil, keyErr(key, "%v", err)
		}
		m.LatencyHistogram = h
	}
	if v, ok := get(KeyActivationQueueDepth); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, keyErr(KeyActivationQueueDepth, "want a number >= 0, got %q", v)
		}
		m.ActivationQueueDepth = f
	}
	if v, ok := get(KeyBurstWindow); ok {
		d, err := window(v, MaxBurstWindow)
		if err != nil {
			return nil, keyErr(KeyBurstWindow, "%v", err)
		}
		m.BurstWindow = d
	}
	if v, ok := get(KeyScaleDownStabilize); ok {
		d, err := window(v, MaxScaleDownStabilization)
		if err != nil {
			return nil, keyErr(KeyScaleDownStabilize, "%v", err)
		}
		m.ScaleDownStabilization = d
	}
	// The rate rule reads arrival counts from the pods' latency
	// histograms, so it needs them scraped; it is off unless asked for.
	rateOK := m.Source == SourcePods && m.TargetLatency > 0
	if v, ok := get(KeyRateLookback); ok {
		if !rateOK {
			return nil, keyErr(KeyRateLookback, "only valid with source %q and targetLatency", SourcePods)
		}
		d, err := window(v, MaxRateLookback)
		if err != nil {
			return nil, keyErr(KeyRateLookback, "%v", err)
		}
		m.RateLookback = d
	}
	if v, ok := get(KeyTargetUtilization); ok {
		if !rateOK {
			return nil, keyErr(KeyTargetUtilization, "only valid with source %q and targetLatency", SourcePods)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return nil, keyErr(KeyTargetUtilization, "want a share in (0,1] such as 0.7, got %q", v)
		}
		m.TargetUtilization = f
	}
	if m.TargetQueueDepth == 0 && m.TargetLatency == 0 {
		return nil, keyErr(KeyTargetQueueDepth, "at least one of targetQueueDepth or targetLatency is required")
	}
	return m, nil
}

func positive(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a number > 0, got %q", v)
	}
	return f, nil
}

// window parses a duration in [0, limit]; "0" (no unit) switches the
// feature off.
func window(v string, limit time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > limit {
		return 0, fmt.Errorf("want a duration from 0 to %s (0 switches it off), got %q", limit, v)
	}
	return d, nil
}

// validMetricName follows Prometheus' classic rule [a-zA-Z_:][a-zA-Z0-9_:]*;
// names end up inside PromQL, so this also keeps queries injection-free.
func validMetricName(s string) bool {
	for i, r := range s {
		switch {
		case r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'):
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}
