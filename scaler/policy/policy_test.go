package policy

import (
	"math"
	"testing"
	"time"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

func meta(t *testing.T, kv ...string) *metadata.Metadata {
	t.Helper()
	md := map[string]string{"source": "pods", "podSelector": "app=llm", "preset": "vllm"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	m, err := metadata.Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func lat(d time.Duration) source.Latency { return source.Latency{Valid: true, Value: d} }

func TestDecide(t *testing.T) {
	queue := []string{"targetQueueDepth", "4"}
	both := []string{"targetQueueDepth", "4", "targetLatency", "1s"}
	latOnly := []string{"targetLatency", "1s"}
	tests := []struct {
		name           string
		kv             []string
		snap           source.Snapshot
		desired, fromQ int32
		fromL          int32
		active         bool
	}{
		{"idle", queue, source.Snapshot{ReadyReplicas: 2}, 0, 0, 0, false},
		{"queue exact", queue, source.Snapshot{QueueTotal: 8, ReadyReplicas: 1}, 2, 2, 0, true},
		{"queue rounds up", queue, source.Snapshot{QueueTotal: 9, ReadyReplicas: 1}, 3, 3, 0, true},
		{"running only keeps one", queue, source.Snapshot{RunningTotal: 3, ReadyReplicas: 1}, 1, 0, 0, true},
		{"latency over slo proportional", both, source.Snapshot{QueueTotal: 4, ReadyReplicas: 4, Latency: lat(2 * time.Second)}, 8, 1, 8, true},
		{"latency slightly over floor current+1", both, source.Snapshot{QueueTotal: 0, RunningTotal: 5, ReadyReplicas: 4, Latency: lat(1050 * time.Millisecond)}, 5, 0, 5, true},
		{"latency in band holds", both, source.Snapshot{QueueTotal: 4, RunningTotal: 1, ReadyReplicas: 6, Latency: lat(700 * time.Millisecond)}, 6, 1, 6, true},
		{"latency well below gives back one replica", both, source.Snapshot{QueueTotal: 4, RunningTotal: 1, ReadyReplicas: 6, Latency: lat(200 * time.Millisecond)}, 5, 1, 5, true},
		{"latency well below gives back 20%", both, source.Snapshot{RunningTotal: 1, ReadyReplicas: 10, Latency: lat(200 * time.Millisecond)}, 8, 0, 8, true},
		{"latency well below at one replica: active keeps it", both, source.Snapshot{RunningTotal: 1, ReadyReplicas: 1, Latency: lat(200 * time.Millisecond)}, 1, 0, 0, true},
		{"queue beats latency", both, source.Snapshot{QueueTotal: 40, ReadyReplicas: 5, Latency: lat(1500 * time.Millisecond)}, 10, 10, 8, true},
		{"growth bounded to 2x serving", both, source.Snapshot{QueueTotal: 400, ReadyReplicas: 10, Latency: lat(1500 * time.Millisecond)}, 20, 100, 15, true},
		{"growth bounded to +4 when that is more", both, source.Snapshot{QueueTotal: 40, ReadyReplicas: 2, Latency: lat(1500 * time.Millisecond)}, 6, 10, 3, true},
		{"from zero the bound does not apply", queue, source.Snapshot{QueueTotal: 40}, 10, 10, 0, true},
		{"no latency data: queue decides", both, source.Snapshot{QueueTotal: 8, ReadyReplicas: 6}, 2, 2, 0, true},
		{"latency only, over", latOnly, source.Snapshot{RunningTotal: 10, ReadyReplicas: 3, Latency: lat(3 * time.Second)}, 7, 0, 9, true},
		{"activation threshold not reached", append([]string{"activationQueueDepth", "5"}, queue...), source.Snapshot{QueueTotal: 5, ReadyReplicas: 1}, 2, 2, 0, false},
		{"activation threshold passed", append([]string{"activationQueueDepth", "5"}, queue...), source.Snapshot{QueueTotal: 6, ReadyReplicas: 1}, 2, 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(meta(t, tt.kv...), tt.snap)
			if d.Desired != tt.desired || d.FromQueue != tt.fromQ || d.FromLatency != tt.fromL || d.Active != tt.active {
				t.Errorf("got %+v, want desired %d fromQueue %d fromLatency %d active %v", d, tt.desired, tt.fromQ, tt.fromL, tt.active)
			}
			// The HPA (AverageValue) computes ceil(value/target): it must
			// land on Desired.
			if hpa := int32(math.Ceil(d.MetricValue / MetricTarget)); hpa != d.Desired {
				t.Errorf("HPA would pick %d, want %d", hpa, d.Desired)
			}
		})
	}
}
