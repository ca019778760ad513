package policy

import (
	"math"
	"testing"
	"time"

	"github.com/kubegpu/kubegpu/scaler/source"
)

// step is one poll: at seconds after t0, the source saw queue and running
// on ready replicas; want is the reported count.
type step struct {
	at             float64
	queue, running float64
	ready          int
	latency        time.Duration
	window         time.Duration // the latency window the source reports
	obs, within    float64       // the window's requests, and those within the target
	want, raw      int32
}

func TestWindow(t *testing.T) {
	// targetQueueDepth 4, burst window 30s, scale-down stabilization 3m
	// unless a case overrides them.
	tests := []struct {
		name  string
		kv    []string
		steps []step
	}{
		{
			name: "scale-up is immediate",
			kv:   []string{"burstWindow", "0"},
			steps: []step{
				{at: 0, queue: 4, ready: 1, want: 1, raw: 1},
				{at: 5, queue: 40, ready: 5, want: 10, raw: 10},
			},
		},
		{
			name: "burst: growing queue is sized one window ahead",
			steps: []step{
				{at: 0, queue: 4, ready: 1, want: 1, raw: 1},
				// +12 in 5s: size for 16+12=28 -> 7 on the first poll
				// that sees the growth.
				{at: 5, queue: 16, ready: 3, want: 7, raw: 7},
				// Growth is measured from the baseline at or before
				// now-30s (t=0): 24-4=20, size for 44 -> 11.
				{at: 30, queue: 24, ready: 6, want: 11, raw: 11},
				// Queue flat for a window: no growth, raw 6; held at 11.
				{at: 65, queue: 24, ready: 6, want: 11, raw: 6},
			},
		},
		{
			name: "burst: a shrinking queue adds nothing",
			kv:   []string{"scaleDownStabilization", "0"},
			steps: []step{
				{at: 0, queue: 40, ready: 10, want: 10, raw: 10},
				{at: 5, queue: 20, ready: 10, want: 5, raw: 5},
			},
		},
		{
			name: "stabilised scale-down: max of the window",
			kv:   []string{"burstWindow", "0", "scaleDownStabilization", "2m"},
			steps: []step{
				{at: 0, queue: 32, ready: 8, want: 8, raw: 8},
				{at: 30, queue: 8, ready: 8, want: 8, raw: 2},
				{at: 60, queue: 16, ready: 8, want: 8, raw: 4},
				// 8 from t=0 is exactly 2m old: no longer held; 4 (t=60) is.
				{at: 120, queue: 4, ready: 8, want: 4, raw: 1},
				{at: 181, queue: 4, ready: 4, want: 1, raw: 1},
			},
		},
		{
			name: "stabilised scale-down holds through zero demand",
			kv:   []string{"burstWindow", "0", "scaleDownStabilization", "1m"},
			steps: []step{
				{at: 0, queue: 12, ready: 3, want: 3, raw: 3},
				{at: 10, ready: 3, want: 3, raw: 0},
				{at: 61, ready: 3, want: 0, raw: 0},
			},
		},
		{
			name: "stabilization off follows raw",
			kv:   []string{"burstWindow", "0", "scaleDownStabilization", "0"},
			steps: []step{
				{at: 0, queue: 32, ready: 8, want: 8, raw: 8},
				{at: 5, queue: 4, ready: 8, want: 1, raw: 1},
			},
		},
		{
			name: "scale-up inside the window raises the held value",
			kv:   []string{"burstWindow", "0"},
			steps: []step{
				{at: 0, queue: 8, ready: 2, want: 2, raw: 2},
				{at: 60, queue: 20, ready: 2, want: 5, raw: 5},
				{at: 120, queue: 8, ready: 5, want: 5, raw: 2},
				{at: 241, queue: 8, ready: 5, want: 2, raw: 2},
			},
		},
		{
			name: "latency breach scales up at once, then is held",
			kv:   []string{"burstWindow", "0", "targetLatency", "1s", "scaleDownStabilization", "1m"},
			steps: []step{
				{at: 0, queue: 4, running: 8, ready: 4, latency: 900 * time.Millisecond, want: 4, raw: 4},
				{at: 5, queue: 4, running: 8, ready: 4, latency: 2 * time.Second, want: 8, raw: 8},
				// Well under the SLO: a step of 20% (1 of 8) is given back,
				// once the window has passed.
				{at: 10, queue: 0, running: 8, ready: 8, latency: 200 * time.Millisecond, want: 8, raw: 7},
				{at: 66, queue: 0, running: 8, ready: 8, latency: 200 * time.Millisecond, want: 7, raw: 7},
			},
		},
		{
			name: "clock going backwards resets history",
			kv:   []string{"burstWindow", "0"},
			steps: []step{
				{at: 100, queue: 40, ready: 10, want: 10, raw: 10},
				{at: 50, queue: 4, ready: 1, want: 1, raw: 1},
			},
		},
		{
			name: "a draining queue does not grow the count; a growing one does",
			kv:   []string{"burstWindow", "30s", "scaleDownStabilization", "0"},
			steps: []step{
				{at: 0, queue: 40, ready: 20, want: 10, raw: 10},
				// 28 queued, down from 40: the serving replicas drain it
				// (new ones could only take new arrivals): not 7, hold 5.
				{at: 30, queue: 28, ready: 5, want: 5, raw: 5},
				// Growing again (28 -> 36): sized for 36 + 8 -> 11,
				// bounded to 2x the 5 serving.
				{at: 60, queue: 36, ready: 5, want: 10, raw: 10},
			},
		},
		{
			name: "a latency breach right after replicas were added holds until a latency window has passed",
			kv:   []string{"burstWindow", "0", "targetLatency", "1s", "scaleDownStabilization", "0"},
			steps: []step{
				{at: 0, running: 8, ready: 4, latency: 2 * time.Second, window: time.Minute, want: 8, raw: 8},
				{at: 90, running: 8, ready: 8, latency: 2 * time.Second, window: time.Minute, want: 8, raw: 8},
				{at: 149, running: 8, ready: 8, latency: 2 * time.Second, window: time.Minute, want: 8, raw: 8},
				{at: 150, running: 8, ready: 8, latency: 2 * time.Second, window: time.Minute, want: 16, raw: 16},
			},
		},
		{
			name: "error budget: a breach while the horizon is within the goal holds; overspent, it grows",
			kv:   []string{"burstWindow", "0", "targetLatency", "1s", "latencyPercentile", "0.99", "scaleDownStabilization", "0"},
			steps: []step{
				// 1000 requests, 993 within: 99.3% >= 99%.
				{at: 0, running: 8, ready: 8, latency: 900 * time.Millisecond, window: time.Minute, obs: 1000, within: 993, want: 8, raw: 8},
				// A burst: the window's p99 is 2s, and the 15 minutes hold
				// 1000+200 requests with 993+190 within (98.6%): overspent.
				{at: 60, running: 8, ready: 8, latency: 2 * time.Second, window: time.Minute, obs: 200, within: 190, want: 16, raw: 16},
			},
		},
		{
			name: "error budget: within the goal, a breach holds",
			kv:   []string{"burstWindow", "0", "targetLatency", "1s", "latencyPercentile", "0.99", "scaleDownStabilization", "0"},
			steps: []step{
				{at: 0, running: 8, ready: 8, latency: 900 * time.Millisecond, window: time.Minute, obs: 5000, within: 4965, want: 8, raw: 8},
				// 5200 requests, 5155 within (99.1%): the burst's misses
				// fit the budget.
				{at: 60, running: 8, ready: 8, latency: 2 * time.Second, window: time.Minute, obs: 200, within: 190, want: 8, raw: 8},
			},
		},
		{
			name: "error budget: less than half spent, a window within the target gives back a step",
			kv:   []string{"burstWindow", "0", "targetLatency", "1s", "latencyPercentile", "0.99", "scaleDownStabilization", "0"},
			steps: []step{
				// 99.9% within: under half the 1% budget; p99 0.8s is in
				// the hold band, but the budget lets 20% go.
				{at: 0, running: 8, ready: 10, latency: 800 * time.Millisecond, window: time.Minute, obs: 1000, within: 999, want: 8, raw: 8},
				// 15 minutes on, too few requests to judge a budget
				// (under 100): hold.
				{at: 1000, running: 8, ready: 10, latency: 800 * time.Millisecond, window: time.Minute, obs: 50, within: 50, want: 10, raw: 10},
			},
		},
		{
			name: "a new history holds the serving replicas until a window has passed",
			kv:   []string{"burstWindow", "0", "scaleDownStabilization", "1m"},
			steps: []step{
				{at: 0, queue: 4, ready: 10, want: 10, raw: 1},
				{at: 59, queue: 4, ready: 10, want: 10, raw: 1},
				{at: 60, queue: 4, ready: 10, want: 1, raw: 1},
			},
		},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := meta(t, append([]string{"targetQueueDepth", "4"}, tt.kv...)...)
			var w Window
			for i, st := range tt.steps {
				snap := source.Snapshot{At: t0.Add(time.Duration(st.at * float64(time.Second))),
					QueueTotal: st.queue, RunningTotal: st.running, ReadyReplicas: st.ready}
				if st.latency > 0 {
					snap.Latency = lat(st.latency)
					snap.Latency.Window = st.window
					snap.Latency.Observations, snap.Latency.WithinTarget = st.obs, st.within
				}
				d := w.Decide(m, snap)
				if d.Desired != st.want || d.Raw != st.raw {
					t.Errorf("step %d (t=%vs): desired %d raw %d, want %d raw %d (%+v)", i, st.at, d.Desired, d.Raw, st.want, st.raw, d)
				}
				// With AverageValue the HPA lands on ceil(value/target).
				if hpa := int32(math.Ceil(d.MetricValue / MetricTarget)); hpa != d.Desired {
					t.Errorf("step %d: HPA would pick %d, want %d", i, hpa, d.Desired)
				}
			}
		})
	}
}

// TestWindowBoundedHistory checks a long run keeps only the window's samples.
func TestWindowBoundedHistory(t *testing.T) {
	m := meta(t, "targetQueueDepth", "4", "scaleDownStabilization", "1m", "burstWindow", "10s")
	var w Window
	t0 := time.Now()
	for i := 0; i < 10000; i++ {
		w.Decide(m, source.Snapshot{At: t0.Add(time.Duration(i) * time.Second), QueueTotal: float64(i % 50), ReadyReplicas: 1})
	}
	if len(w.want) > 61 || len(w.queue) > 12 {
		t.Errorf("history grew: %d desired samples, %d queue samples", len(w.want), len(w.queue))
	}
}

// TestWindowRateRule follows the rate rule over a few polls: capacity is
// measured on replicas busy at two polls in a row, the highest rate over
// the lookback sizes the count, a breach adds one replica instead of
// growing with the latency ratio, and replicas beyond the rate's need are
// given back while latency is within the target.
func TestWindowRateRule(t *testing.T) {
	m := meta(t, "targetQueueDepth", "4", "targetLatency", "2s", "rateLookback", "1m", "targetUtilization", "0.5",
		"burstWindow", "0", "scaleDownStabilization", "0")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type rep struct {
		queue, recent float64
	}
	steps := []struct {
		at       float64
		reps     []rep
		ready    int
		latency  time.Duration
		over     time.Duration
		want     int32
		fromRate int32
	}{
		// No previous poll: no rate, no capacity; latency at half the
		// target holds the 2 serving.
		{at: 0, reps: []rep{{2, 0}, {2, 0}}, ready: 2, latency: time.Second, want: 2},
		// Both busy at both polls: 10 admitted each in 5s = 2/s a
		// replica; 20 arrived (queue flat) = 4/s, at 50% of 2/s: 4.
		{at: 5, reps: []rep{{2, 10}, {2, 10}}, ready: 2, latency: time.Second, over: 5 * time.Second, want: 4, fromRate: 4},
		// Queues gone: no capacity sample, the measured one stays; the
		// 4/s peak is still within the lookback.
		{at: 10, reps: []rep{{0, 5}, {0, 5}, {0, 0}, {0, 0}}, ready: 4, latency: time.Second, over: 5 * time.Second, want: 4, fromRate: 4},
		// A minute on the peak has left the lookback: 4 in 60s needs 1;
		// latency within the target gives back a step (4 -> 3).
		{at: 70, reps: []rep{{0, 1}, {0, 1}, {0, 1}, {0, 1}}, ready: 4, latency: 1200 * time.Millisecond, over: time.Minute, want: 3, fromRate: 1},
		// A breach at 1.5x the target adds one replica, where the ratio
		// rule would ask for ceil(3 x 1.5) = 5.
		{at: 75, reps: []rep{{0, 1}, {0, 1}, {0, 1}}, ready: 3, latency: 3 * time.Second, over: 5 * time.Second, want: 4, fromRate: 1},
	}
	var w Window
	for i, st := range steps {
		snap := source.Snapshot{At: t0.Add(time.Duration(st.at * float64(time.Second))), ReadyReplicas: st.ready,
			Latency: source.Latency{Valid: true, Value: st.latency, Window: time.Minute, RecentOver: st.over}}
		for j, r := range st.reps {
			snap.Replicas = append(snap.Replicas, source.Replica{Name: string(rune('a' + j)), Queue: r.queue, Recent: r.recent})
			snap.QueueTotal += r.queue
			snap.Latency.Recent += r.recent
		}
		d := w.Decide(m, snap)
		if d.Desired != st.want || d.FromRate != st.fromRate {
			t.Errorf("step %d (t=%vs): desired %d from rate %d, want %d from rate %d (%+v)", i, st.at, d.Desired, d.FromRate, st.want, st.fromRate, d)
		}
	}
	if len(w.rates) > 3 {
		t.Errorf("%d rate samples kept, want those of the last minute", len(w.rates))
	}
}
