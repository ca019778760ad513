package source

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name string
		b    Buckets
		q    float64
		want float64
		ok   bool
	}{
		{"empty", nil, 0.95, 0, false},
		{"no observations", Buckets{{1, 0}, {inf, 0}}, 0.5, 0, false},
		{"interpolate first bucket", Buckets{{1, 10}, {2, 10}, {inf, 10}}, 0.5, 0.5, true},
		{"interpolate middle", Buckets{{0.1, 0}, {0.5, 50}, {1, 100}, {inf, 100}}, 0.75, 0.75, true},
		{"p95 in top finite bucket", Buckets{{0.1, 90}, {1, 100}, {inf, 100}}, 0.95, 0.55, true},
		{"in +Inf bucket", Buckets{{0.1, 10}, {1, 10}, {inf, 100}}, 0.95, 1, true},
		{"exact bound", Buckets{{1, 50}, {2, 100}, {inf, 100}}, 0.5, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.b.Quantile(tt.q)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v,%v want %v,%v", tt.q, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBelow(t *testing.T) {
	inf := math.Inf(1)
	b := Buckets{{0.1, 10}, {0.5, 50}, {1, 100}, {inf, 120}}
	tests := []struct {
		x, want float64
	}{
		{0, 0},
		{0.05, 5},    // inside the first bucket, from 0
		{0.1, 10},    // at a bound
		{0.3, 30},    // halfway through 0.1-0.5
		{1, 100},     // the last finite bound
		{5, 100},     // in +Inf: only what is known to be below
		{-1, 0},      // below everything
		{0.75, 75},   // halfway through 0.5-1
		{0.5, 50},    // exact bound
		{0.1001, 10}, // just past a bound
	}
	for _, tt := range tests {
		if got := b.Below(tt.x); math.Abs(got-tt.want) > 0.01 {
			t.Errorf("Below(%v) = %v, want %v", tt.x, got, tt.want)
		}
	}
	if got := (Buckets{}).Below(1); got != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestSubAndAdd(t *testing.T) {
	inf := math.Inf(1)
	now := Buckets{{1, 30}, {inf, 40}}
	base := Buckets{{1, 10}, {inf, 15}}
	d, ok := now.Sub(base)
	if !ok || d[0].Count != 20 || d[1].Count != 25 {
		t.Errorf("Sub = %v,%v", d, ok)
	}
	if _, ok := base.Sub(now); ok {
		t.Error("a decrease (counter reset) must not give a delta")
	}
	if _, ok := now.Sub(Buckets{{2, 1}, {inf, 1}}); ok {
		t.Error("different layouts must not give a delta")
	}
	sum := now.Add(base)
	if len(sum) != 2 || sum[0].Count != 40 || sum.Total() != 55 {
		t.Errorf("Add = %v", sum)
	}
}
