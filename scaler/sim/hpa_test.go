package sim

import (
	"testing"
	"time"
)

func TestExternalAverageValue(t *testing.T) {
	tests := []struct {
		name          string
		current       int32
		value, target float64
		want          int32
	}{
		{"within tolerance: 10 -> 10.9", 10, 10.9, 1, 10},
		{"exactly 10%: 10 -> 11 is not acted on either", 10, 11, 1, 10},
		{"past tolerance: 10 -> 12", 10, 12, 1, 12},
		{"past tolerance by a little: 10 -> 11.01", 10, 11.01, 1, 12},
		{"below 10 replicas every step of one acts", 5, 6, 1, 6},
		{"scale down past tolerance", 10, 8.9, 1, 9},
		{"queue 0: ceil(0) = 0 (min replicas clamp later)", 4, 0, 4, 0},
		{"threshold 4: queue 30 -> 8", 2, 30, 4, 8},
	}
	for _, tt := range tests {
		if got := ExternalAverageValue(tt.current, tt.value, tt.target, DefaultTolerance); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestPodsAverageValue(t *testing.T) {
	tests := []struct {
		name    string
		current int32
		values  []float64
		missing int
		want    int32
	}{
		{"at target", 2, []float64{0.7, 0.7}, 0, 2},
		{"within tolerance", 2, []float64{0.75, 0.75}, 0, 2},
		{"scale up", 2, []float64{1, 1}, 0, 3},
		{"scale down", 4, []float64{0.2, 0.2, 0.2, 0.2}, 0, 2},
		// Two starting pods count as 0 on a scale-up: (1+1+0+0)/4 = 0.5 of
		// 0.7 is a scale-down ratio, which reverses the direction: hold.
		{"missing pods damp a scale-up", 4, []float64{1, 1}, 2, 4},
		// (1+1+1+0)/4 = 0.75 / 0.7 within tolerance: hold.
		{"missing pods within tolerance", 4, []float64{1, 1, 1}, 1, 4},
		// On a scale-down missing pods count as at target:
		// (0.1*2 + 0.7*2)/4 = 0.4 -> ceil(0.4/0.7*4) = 3.
		{"missing pods on a scale-down count at target", 4, []float64{0.1, 0.1}, 2, 3},
	}
	for _, tt := range tests {
		if got := PodsAverageValue(tt.current, tt.values, tt.missing, 0.7, DefaultTolerance); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestHPANormalize(t *testing.T) {
	type step struct {
		at               int // seconds
		current, desired int32
		want             int32
	}
	tests := []struct {
		name  string
		b     Behavior
		steps []step
	}{
		{
			name: "scale-up rate: max(100%, 4 pods) per 15s",
			b:    DefaultBehavior(),
			steps: []step{
				{at: 0, current: 1, desired: 50, want: 5},    // 1+4 beats 2x
				{at: 15, current: 5, desired: 50, want: 10},  // 2x beats +4
				{at: 30, current: 10, desired: 50, want: 20}, // 2x
				{at: 45, current: 20, desired: 50, want: 40},
				{at: 60, current: 40, desired: 50, want: 50},
			},
		},
		{
			name: "scale-up events within the period count against the limit",
			b:    DefaultBehavior(),
			steps: []step{
				{at: 0, current: 2, desired: 6, want: 6},
				// 5s later the period started at 2: limit max(4, 6) = 6.
				{at: 5, current: 6, desired: 20, want: 6},
				{at: 16, current: 6, desired: 20, want: 12},
			},
		},
		{
			name: "scale-down stabilisation: the highest recommendation of 300s",
			b:    DefaultBehavior(),
			steps: []step{
				{at: 0, current: 10, desired: 10, want: 10},
				{at: 15, current: 10, desired: 2, want: 10},
				{at: 150, current: 10, desired: 4, want: 10},
				{at: 299, current: 10, desired: 3, want: 10},
				{at: 300, current: 10, desired: 3, want: 4}, // t=0's 10 is exactly 300s old: out; 150's 4 is the highest left
				{at: 451, current: 4, desired: 3, want: 3},
			},
		},
		{
			name: "no stabilisation: scale down at once, clamped to min",
			b: Behavior{Up: DefaultBehavior().Up, Down: ScalingRules{Policies: []ScalingPolicy{
				{Percent: true, Value: 100, Period: 15 * time.Second}}}},
			steps: []step{
				{at: 0, current: 10, desired: 0, want: 2},
			},
		},
		{
			name: "max clamps",
			b:    DefaultBehavior(),
			steps: []step{
				{at: 0, current: 58, desired: 100, want: 60},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &HPA{Min: 2, Max: 60, Behavior: tt.b}
			for i, st := range tt.steps {
				if got := h.Normalize(time.Duration(st.at)*time.Second, st.current, st.desired); got != st.want {
					t.Errorf("step %d (t=%ds, current %d, desired %d): got %d, want %d", i, st.at, st.current, st.desired, got, st.want)
				}
			}
		})
	}
}
