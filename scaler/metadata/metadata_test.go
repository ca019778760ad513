package metadata

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kubegpu/kubegpu/scaler/presets"
)

func with(base map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(base)+len(kv)/2)
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}

var (
	promBase = map[string]string{"source": "prometheus", "serverAddress": "http://prometheus.monitoring:9090", "preset": "vllm", "targetQueueDepth": "4"}
	podsBase = map[string]string{"source": "pods", "podSelector": "app=llm", "preset": "vllm", "targetQueueDepth": "4"}
)

func TestParseDefaults(t *testing.T) {
	m, err := Parse(podsBase)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != SourcePods || m.MetricsPort != 8000 || m.MetricsPath != "/metrics" ||
		m.LatencyPercentile != 0.95 || m.LatencySignal != presets.SignalTTFT || m.ActivationQueueDepth != 0 ||
		m.TargetQueueDepth != 4 || m.TargetLatency != 0 || m.Preset.Name != "vllm" ||
		m.BurstWindow != 30*time.Second || m.ScaleDownStabilization != 3*time.Minute {
		t.Errorf("defaults wrong: %+v", m)
	}
	if !m.PodSelector.Matches(mapLabels{"app": "llm"}) {
		t.Error("selector does not match app=llm")
	}
}

type mapLabels map[string]string

func (l mapLabels) Has(k string) bool              { _, ok := l[k]; return ok }
func (l mapLabels) Get(k string) string            { return l[k] }
func (l mapLabels) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		md    map[string]string
		check func(*testing.T, *Metadata)
	}{
		{"prometheus with namespace", with(promBase, "namespace", "team-a", "serverAddress", "https://prom:9090/"), func(t *testing.T, m *Metadata) {
			if m.ServerAddress != "https://prom:9090" || m.Namespace != "team-a" {
				t.Errorf("got %q %q", m.ServerAddress, m.Namespace)
			}
		}},
		{"pods port and path", with(podsBase, "metricsPort", "9400", "metricsPath", "/stats"), func(t *testing.T, m *Metadata) {
			if m.MetricsPort != 9400 || m.MetricsPath != "/stats" {
				t.Errorf("got %d %q", m.MetricsPort, m.MetricsPath)
			}
		}},
		{"set-based selector", with(podsBase, "podSelector", "app in (llm,chat),tier!=batch"), nil},
		{"latency only", with(podsBase, "targetQueueDepth", "<delete>", "targetLatency", "500ms"), func(t *testing.T, m *Metadata) {
			if m.TargetLatency != 500*time.Millisecond || m.LatencyHistogram.Name != "vllm:time_to_first_token_seconds" {
				t.Errorf("got %v %+v", m.TargetLatency, m.LatencyHistogram)
			}
		}},
		{"latency e2e p99", with(podsBase, "targetLatency", "2s", "latencySignal", "e2e", "latencyPercentile", "0.99"), func(t *testing.T, m *Metadata) {
			if m.LatencyPercentile != 0.99 || m.LatencyHistogram.Name != "vllm:e2e_request_latency_seconds" {
				t.Errorf("got %v %+v", m.LatencyPercentile, m.LatencyHistogram)
			}
		}},
		{"vllm queue signal", with(podsBase, "targetLatency", "1s", "latencySignal", "queue"), func(t *testing.T, m *Metadata) {
			if m.LatencyHistogram.Name != "vllm:request_queue_time_seconds" {
				t.Errorf("got %+v", m.LatencyHistogram)
			}
		}},
		{"triton ttft in ms", with(podsBase, "preset", "triton", "targetLatency", "300ms"), func(t *testing.T, m *Metadata) {
			if m.LatencyHistogram.UnitSeconds != 0.001 {
				t.Errorf("got %+v", m.LatencyHistogram)
			}
		}},
		{"tgi", with(podsBase, "preset", "tgi", "targetLatency", "3s", "latencySignal", "e2e"), nil},
		{"sglang", with(podsBase, "preset", "sglang"), nil},
		{"custom", with(podsBase, "preset", "custom", "queueMetric", "gateway_queue_depth", "latencyMetric", "gw:latency_seconds", "targetLatency", "1s"), func(t *testing.T, m *Metadata) {
			if m.Preset.Queue != "gateway_queue_depth" || m.LatencyHistogram.Name != "gw:latency_seconds" {
				t.Errorf("got %+v", m.Preset)
			}
		}},
		{"activation", with(podsBase, "activationQueueDepth", "2.5"), func(t *testing.T, m *Metadata) {
			if m.ActivationQueueDepth != 2.5 {
				t.Errorf("got %v", m.ActivationQueueDepth)
			}
		}},
		{"fractional target", with(podsBase, "targetQueueDepth", "0.5"), nil},
		{"keda keys accepted", with(promBase, "scalerAddress", "kubegpu-scaler:9090", "enableTLS", "true", "unsafeSsl", "false"), nil},
		{"windows", with(podsBase, "burstWindow", "15s", "scaleDownStabilization", "5m"), func(t *testing.T, m *Metadata) {
			if m.BurstWindow != 15*time.Second || m.ScaleDownStabilization != 5*time.Minute {
				t.Errorf("got %v %v", m.BurstWindow, m.ScaleDownStabilization)
			}
		}},
		{"windows off", with(podsBase, "burstWindow", "0", "scaleDownStabilization", "0s"), func(t *testing.T, m *Metadata) {
			if m.BurstWindow != 0 || m.ScaleDownStabilization != 0 {
				t.Errorf("got %v %v", m.BurstWindow, m.ScaleDownStabilization)
			}
		}},
		{"rate rule off by default", with(podsBase, "targetLatency", "2s"), func(t *testing.T, m *Metadata) {
			if m.RateLookback != 0 || m.TargetUtilization != DefaultTargetUtilization {
				t.Errorf("got %v %v", m.RateLookback, m.TargetUtilization)
			}
		}},
		{"rate rule", with(podsBase, "targetLatency", "2s", "rateLookback", "10m", "targetUtilization", "0.8"), func(t *testing.T, m *Metadata) {
			if m.RateLookback != 10*time.Minute || m.TargetUtilization != 0.8 {
				t.Errorf("got %v %v", m.RateLookback, m.TargetUtilization)
			}
		}},
		{"whitespace trimmed", with(podsBase, "targetQueueDepth", " 8 "), func(t *testing.T, m *Metadata) {
			if m.TargetQueueDepth != 8 {
				t.Errorf("got %v", m.TargetQueueDepth)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.md)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		md   map[string]string
		key  string
	}{
		{"empty", map[string]string{}, "source"},
		{"unknown key", with(podsBase, "targetQueueDeph", "3"), "targetQueueDeph"},
		{"bad source", with(podsBase, "source", "statsd"), "source"},
		{"prom no address", with(promBase, "serverAddress", "<delete>"), "serverAddress"},
		{"prom bad address", with(promBase, "serverAddress", "prometheus:9090"), "serverAddress"},
		{"prom ftp address", with(promBase, "serverAddress", "ftp://prom"), "serverAddress"},
		{"prom bad namespace", with(promBase, "namespace", `a"} or up{`), "namespace"},
		{"prom with podSelector", with(promBase, "podSelector", "app=x"), "podSelector"},
		{"prom with metricsPort", with(promBase, "metricsPort", "8000"), "metricsPort"},
		{"pods no selector", with(podsBase, "podSelector", "<delete>"), "podSelector"},
		{"pods bad selector", with(podsBase, "podSelector", "app in (a"), "podSelector"},
		{"pods empty selector", with(podsBase, "podSelector", "   "), "podSelector"},
		{"pods port text", with(podsBase, "metricsPort", "http"), "metricsPort"},
		{"pods port zero", with(podsBase, "metricsPort", "0"), "metricsPort"},
		{"pods port big", with(podsBase, "metricsPort", "70000"), "metricsPort"},
		{"pods path relative", with(podsBase, "metricsPath", "metrics"), "metricsPath"},
		{"pods with serverAddress", with(podsBase, "serverAddress", "http://p"), "serverAddress"},
		{"pods with namespace", with(podsBase, "namespace", "x"), "namespace"},
		{"no preset", with(podsBase, "preset", "<delete>"), "preset"},
		{"bad preset", with(podsBase, "preset", "ollama"), "preset"},
		{"custom no queue", with(podsBase, "preset", "custom"), "queueMetric"},
		{"custom bad queue name", with(podsBase, "preset", "custom", "queueMetric", "q{a=1}"), "queueMetric"},
		{"custom bad latency name", with(podsBase, "preset", "custom", "queueMetric", "q", "latencyMetric", "9lat"), "latencyMetric"},
		{"custom latency target without metric", with(podsBase, "preset", "custom", "queueMetric", "q", "targetLatency", "1s"), "latencyMetric"},
		{"queueMetric without custom", with(podsBase, "queueMetric", "q"), "queueMetric"},
		{"latencyMetric without custom", with(podsBase, "latencyMetric", "q"), "latencyMetric"},
		{"target queue zero", with(podsBase, "targetQueueDepth", "0"), "targetQueueDepth"},
		{"target queue negative", with(podsBase, "targetQueueDepth", "-1"), "targetQueueDepth"},
		{"target queue text", with(podsBase, "targetQueueDepth", "many"), "targetQueueDepth"},
		{"target queue NaN", with(podsBase, "targetQueueDepth", "NaN"), "targetQueueDepth"},
		{"target queue Inf", with(podsBase, "targetQueueDepth", "+Inf"), "targetQueueDepth"},
		{"no target", with(podsBase, "targetQueueDepth", "<delete>"), "targetQueueDepth"},
		{"latency no unit", with(podsBase, "targetLatency", "500"), "targetLatency"},
		{"latency negative", with(podsBase, "targetLatency", "-1s"), "targetLatency"},
		{"percentile without latency", with(podsBase, "latencyPercentile", "0.9"), "latencyPercentile"},
		{"percentile one", with(podsBase, "targetLatency", "1s", "latencyPercentile", "1"), "latencyPercentile"},
		{"percentile 95", with(podsBase, "targetLatency", "1s", "latencyPercentile", "95"), "latencyPercentile"},
		{"signal without latency", with(podsBase, "latencySignal", "e2e"), "latencySignal"},
		{"bad signal", with(podsBase, "targetLatency", "1s", "latencySignal", "itl"), "latencySignal"},
		{"triton e2e has no histogram", with(podsBase, "preset", "triton", "targetLatency", "1s", "latencySignal", "e2e"), "latencySignal"},
		{"tgi ttft has no histogram", with(podsBase, "preset", "tgi", "targetLatency", "1s"), "latencySignal"},
		{"sglang queue has no histogram", with(podsBase, "preset", "sglang", "targetLatency", "1s", "latencySignal", "queue"), "latencySignal"},
		{"activation negative", with(podsBase, "activationQueueDepth", "-1"), "activationQueueDepth"},
		{"activation text", with(podsBase, "activationQueueDepth", "x"), "activationQueueDepth"},
		{"burst no unit", with(podsBase, "burstWindow", "30"), "burstWindow"},
		{"burst negative", with(podsBase, "burstWindow", "-5s"), "burstWindow"},
		{"burst too long", with(podsBase, "burstWindow", "6m"), "burstWindow"},
		{"stabilization text", with(podsBase, "scaleDownStabilization", "long"), "scaleDownStabilization"},
		{"stabilization negative", with(podsBase, "scaleDownStabilization", "-1m"), "scaleDownStabilization"},
		{"stabilization too long", with(podsBase, "scaleDownStabilization", "2h"), "scaleDownStabilization"},
		{"rate lookback without latency", with(podsBase, "rateLookback", "10m"), "rateLookback"},
		{"rate lookback with prometheus", with(promBase, "targetLatency", "2s", "rateLookback", "10m"), "rateLookback"},
		{"rate lookback too long", with(podsBase, "targetLatency", "2s", "rateLookback", "2h"), "rateLookback"},
		{"rate lookback no unit", with(podsBase, "targetLatency", "2s", "rateLookback", "600"), "rateLookback"},
		{"utilization over 1", with(podsBase, "targetLatency", "2s", "rateLookback", "10m", "targetUtilization", "70"), "targetUtilization"},
		{"utilization zero", with(podsBase, "targetLatency", "2s", "targetUtilization", "0"), "targetUtilization"},
		{"utilization without latency", with(podsBase, "targetUtilization", "0.7"), "targetUtilization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.md)
			if err == nil {
				t.Fatal("want error")
			}
			var ke *KeyError
			if !errors.As(err, &ke) || !IsKeyError(err) {
				t.Fatalf("want *KeyError, got %T %v", err, err)
			}
			if ke.Key != tt.key || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q names key %q, want %q", err, ke.Key, tt.key)
			}
		})
	}
}
