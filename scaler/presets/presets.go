// Package presets holds the metric names that common inference servers
// export, so trigger metadata can say "vllm" instead of spelling out queries.
//
// Sources of the names (checked against the projects' docs):
//   - vLLM: docs.vllm.ai "Production Metrics" (v0.9.1 and stable/v0.32 pages).
//     The V1 engine renamed vllm:gpu_cache_usage_perc to
//     vllm:kv_cache_usage_perc; both are accepted.
//   - Triton: triton-inference-server/server r24.04 docs/user_guide/metrics.md.
//     Triton's queue and request durations are cumulative counters (sums),
//     not histograms, so no percentile can be computed from them; only the
//     first-response histogram (decoupled/streaming models) gives a
//     distribution.
//   - TGI: huggingface.co/docs/text-generation-inference/reference/metrics.
//   - SGLang: docs.sglang.io references/production_metrics (needs
//     --enable-metrics on the server).
package presets

import "fmt"

// Signal is which latency a target applies to.
type Signal string

const (
	// SignalTTFT is time to first token.
	SignalTTFT Signal = "ttft"
	// SignalE2E is end-to-end request latency.
	SignalE2E Signal = "e2e"
	// SignalQueue is time spent waiting before being scheduled.
	SignalQueue Signal = "queue"
)

// Histogram names a Prometheus histogram (base name, without _bucket) and
// the size of its unit in seconds, since Triton and TGI differ from vLLM.
type Histogram struct {
	Name string
	// UnitSeconds converts one unit of the histogram's `le` into seconds
	// (1 for seconds, 0.001 for milliseconds).
	UnitSeconds float64
}

// Preset is the set of metrics one inference server exports.
type Preset struct {
	Name string
	// Queue is the gauge of requests waiting for a slot, per replica.
	Queue string
	// Running is the gauge of requests being processed; empty when the
	// server has none.
	Running string
	// KVCache lists the names a KV-cache usage gauge (0..1) has had across
	// versions; the first one present wins.
	KVCache []string
	// Latency maps each supported signal to its histogram. A signal that
	// is missing here cannot be used as a latency target.
	Latency map[Signal]Histogram
	// Counters the server exports that are useful on dashboards but carry
	// no distribution (kept so the names live in one place).
	Counters []string
}

// Names of the built-in presets.
const (
	VLLM   = "vllm"
	Triton = "triton"
	TGI    = "tgi"
	SGLang = "sglang"
	Custom = "custom"
)

var builtin = map[string]Preset{
	VLLM: {
		Name:    VLLM,
		Queue:   "vllm:num_requests_waiting",
		Running: "vllm:num_requests_running",
		KVCache: []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"},
		Latency: map[Signal]Histogram{
			SignalTTFT:  {Name: "vllm:time_to_first_token_seconds", UnitSeconds: 1},
			SignalE2E:   {Name: "vllm:e2e_request_latency_seconds", UnitSeconds: 1},
			SignalQueue: {Name: "vllm:request_queue_time_seconds", UnitSeconds: 1},
		},
	},
	Triton: {
		Name:  Triton,
		Queue: "nv_inference_pending_request_count",
		// Triton has no "running" gauge; pending covers queued requests.
		Latency: map[Signal]Histogram{
			SignalTTFT: {Name: "nv_inference_first_response_histogram_ms", UnitSeconds: 0.001},
		},
		Counters: []string{
			"nv_inference_queue_duration_us",
			"nv_inference_request_duration_us",
			"nv_inference_count",
			"nv_inference_request_success",
		},
	},
	TGI: {
		Name:    TGI,
		Queue:   "tgi_queue_size",
		Running: "tgi_batch_current_size",
		Latency: map[Signal]Histogram{
			SignalE2E:   {Name: "tgi_request_duration", UnitSeconds: 1},
			SignalQueue: {Name: "tgi_request_queue_duration", UnitSeconds: 1},
		},
	},
	SGLang: {
		Name:    SGLang,
		Queue:   "sglang:num_queue_reqs",
		Running: "sglang:num_running_reqs",
		Latency: map[Signal]Histogram{
			SignalTTFT: {Name: "sglang:time_to_first_token_seconds", UnitSeconds: 1},
			SignalE2E:  {Name: "sglang:e2e_request_latency_seconds", UnitSeconds: 1},
		},
	},
}

// Lookup returns a built-in preset by name.
func Lookup(name string) (Preset, bool) {
	p, ok := builtin[name]
	return p, ok
}

// Names lists the accepted preset names, including "custom".
func Names() []string { return []string{VLLM, Triton, TGI, SGLang, Custom} }

// NewCustom builds a preset from user-given metric names. The latency
// histogram, if any, is taken to be in seconds and serves every signal,
// because the user named exactly the histogram they mean.
func NewCustom(queueMetric, latencyMetric string) Preset {
	p := Preset{Name: Custom, Queue: queueMetric}
	if latencyMetric != "" {
		h := Histogram{Name: latencyMetric, UnitSeconds: 1}
		p.Latency = map[Signal]Histogram{SignalTTFT: h, SignalE2E: h, SignalQueue: h}
	}
	return p
}

// LatencyHistogram returns the histogram for a signal or an error saying
// why the preset cannot serve it.
func (p Preset) LatencyHistogram(s Signal) (Histogram, error) {
	h, ok := p.Latency[s]
	if !ok {
		return Histogram{}, fmt.Errorf("preset %q exports no latency histogram for signal %q", p.Name, s)
	}
	return h, nil
}
