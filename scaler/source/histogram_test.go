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
