package metadata

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary trigger metadata to Parse. The input is
// "key=value" lines, so the fuzzer explores keys and values together. Parse
// must not panic, must fail only with a *KeyError naming a key that was
// given (or a required one), and what it accepts must
// be usable by the rest of the scaler.
func FuzzParse(f *testing.F) {
	// Keys an error may name although the input lacks them.
	required := map[string]bool{KeySource: true, KeyServerAddress: true, KeyPodSelector: true, KeyPreset: true,
		KeyQueueMetric: true, KeyTargetQueueDepth: true, KeyLatencyMetric: true, KeyLatencySignal: true}
	f.Add("source=pods\npodSelector=app=llm\npreset=vllm\ntargetQueueDepth=4")
	f.Add("source=prometheus\nserverAddress=http://prom:9090\npreset=tgi\ntargetLatency=2s\nlatencySignal=e2e")
	f.Add("source=pods\npodSelector=app in (a,b)\npreset=custom\nqueueMetric=q\nlatencyMetric=l\ntargetLatency=1s\nlatencyPercentile=0.99")
	f.Add("source=pods\npodSelector=app=x\npreset=triton\ntargetQueueDepth=1e-3\nburstWindow=0\nscaleDownStabilization=5m")
	f.Fuzz(func(t *testing.T, in string) {
		md := map[string]string{}
		for _, line := range strings.Split(in, "\n") {
			k, v, _ := strings.Cut(line, "=")
			md[k] = v
		}
		m, err := Parse(md)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v is %T, want *KeyError", err, err)
			}
			if _, given := md[ke.Key]; !given && !required[ke.Key] {
				t.Fatalf("error names key %q that was not given and is not required", ke.Key)
			}
			return
		}
		if m.Source != SourcePods && m.Source != SourcePrometheus {
			t.Fatalf("accepted source %q", m.Source)
		}
		if m.Source == SourcePods && (m.PodSelector == nil || m.PodSelector.Empty() || m.MetricsPort < 1 || m.MetricsPort > 65535) {
			t.Fatalf("accepted pods config %+v", m)
		}
		if !(m.TargetQueueDepth > 0) && !(m.TargetLatency > 0) {
			t.Fatalf("accepted no target: %+v", m)
		}
		if m.TargetQueueDepth < 0 || math.IsInf(m.TargetQueueDepth, 0) || math.IsNaN(m.TargetQueueDepth) {
			t.Fatalf("accepted targetQueueDepth %v", m.TargetQueueDepth)
		}
		if m.TargetLatency > 0 && (m.LatencyHistogram.Name == "" || !(m.LatencyPercentile > 0 && m.LatencyPercentile < 1)) {
			t.Fatalf("accepted latency config %+v", m)
		}
		if m.BurstWindow < 0 || m.BurstWindow > MaxBurstWindow || m.ScaleDownStabilization < 0 || m.ScaleDownStabilization > MaxScaleDownStabilization {
			t.Fatalf("accepted windows %v %v", m.BurstWindow, m.ScaleDownStabilization)
		}
		if m.Preset.Name == "custom" && !validMetricName(m.Preset.Queue) {
			t.Fatalf("accepted queue metric %q", m.Preset.Queue)
		}
	})
}
