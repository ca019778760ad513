package gang

import (
	"testing"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
)

// TestStoppedInstanceLeavesGauges: a plugin whose scheduler stopped does
// not write the process-wide gauges any more, so a restarted scheduler's
// counts are not overwritten by the old instance's late Unreserves.
func TestStoppedInstanceLeavesGauges(t *testing.T) {
	registerMetrics()
	for _, tt := range []struct {
		name    string
		stopped bool
		want    float64
	}{
		{"running instance writes", false, 0},
		{"stopped instance leaves them", true, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlugin(DefaultArgs())
			if tt.stopped {
				done := make(chan struct{})
				close(done)
				p.stopped = done
			}
			partlyBound.Set(5)
			pendingGangs.Set(5)
			p.mu.Lock()
			p.updatePendingLocked()
			p.mu.Unlock()
			for name, g := range map[string]metrics.GaugeMetric{"partly bound": partlyBound, "pending": pendingGangs} {
				if got, err := testutil.GetGaugeMetricValue(g); err != nil || got != tt.want {
					t.Errorf("%s gauge = %v, %v; want %v", name, got, err, tt.want)
				}
			}
		})
	}
}
