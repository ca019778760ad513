package presets

import (
	"strings"
	"testing"
)

func TestBuiltinNames(t *testing.T) {
	tests := []struct {
		preset  string
		queue   string
		running string
		signals map[Signal]string
		missing []Signal
	}{
		{VLLM, "vllm:num_requests_waiting", "vllm:num_requests_running", map[Signal]string{
			SignalTTFT: "vllm:time_to_first_token_seconds", SignalE2E: "vllm:e2e_request_latency_seconds", SignalQueue: "vllm:request_queue_time_seconds",
		}, nil},
		{Triton, "nv_inference_pending_request_count", "", map[Signal]string{
			SignalTTFT: "nv_inference_first_response_histogram_ms",
		}, []Signal{SignalE2E, SignalQueue}},
		{TGI, "tgi_queue_size", "tgi_batch_current_size", map[Signal]string{
			SignalE2E: "tgi_request_duration", SignalQueue: "tgi_request_queue_duration",
		}, []Signal{SignalTTFT}},
		{SGLang, "sglang:num_queue_reqs", "sglang:num_running_reqs", map[Signal]string{
			SignalTTFT: "sglang:time_to_first_token_seconds", SignalE2E: "sglang:e2e_request_latency_seconds",
		}, []Signal{SignalQueue}},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			p, ok := Lookup(tt.preset)
			if !ok {
				t.Fatalf("preset %q missing", tt.preset)
			}
			if p.Queue != tt.queue || p.Running != tt.running {
				t.Errorf("queue/running = %q/%q, want %q/%q", p.Queue, p.Running, tt.queue, tt.running)
			}
			for s, name := range tt.signals {
				h, err := p.LatencyHistogram(s)
				if err != nil || h.Name != name {
					t.Errorf("signal %s = %q, %v; want %q", s, h.Name, err, name)
				}
			}
			for _, s := range tt.missing {
				if _, err := p.LatencyHistogram(s); err == nil || !strings.Contains(err.Error(), string(s)) {
					t.Errorf("signal %s: want error naming it, got %v", s, err)
				}
			}
		})
	}
}

func TestVLLMKVCacheAliases(t *testing.T) {
	p, _ := Lookup(VLLM)
	want := map[string]bool{"vllm:kv_cache_usage_perc": true, "vllm:gpu_cache_usage_perc": true}
	for _, n := range p.KVCache {
		delete(want, n)
	}
	if len(want) != 0 {
		t.Errorf("missing KV cache names %v", want)
	}
}

func TestCustom(t *testing.T) {
	p := NewCustom("my_queue", "my_latency_seconds")
	if p.Queue != "my_queue" {
		t.Errorf("queue = %q", p.Queue)
	}
	for _, s := range []Signal{SignalTTFT, SignalE2E, SignalQueue} {
		if h, err := p.LatencyHistogram(s); err != nil || h.Name != "my_latency_seconds" || h.UnitSeconds != 1 {
			t.Errorf("signal %s: %+v %v", s, h, err)
		}
	}
	if _, err := NewCustom("q", "").LatencyHistogram(SignalE2E); err == nil {
		t.Error("custom without latencyMetric must not serve latency")
	}
}
