package source

import (
	"fmt"
	"math"
	"sort"
)

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Buckets is a cumulative histogram sorted by UpperBound, the last bucket
// being +Inf.
type Buckets []Bucket

// validate checks what a percentile relies on: bounds strictly increasing
// and not NaN, counts finite, non-negative and cumulative (never falling).
// A histogram failing it would give a meaningless latency.
func (b Buckets) validate() error {
	for i, x := range b {
		if math.IsNaN(x.UpperBound) || math.IsNaN(x.Count) || math.IsInf(x.Count, 0) || x.Count < 0 {
			return fmt.Errorf("bucket le=%v has count %v", x.UpperBound, x.Count)
		}
		if i > 0 && (x.UpperBound <= b[i-1].UpperBound || x.Count < b[i-1].Count) {
			return fmt.Errorf("bucket le=%v (count %v) does not follow le=%v (count %v)", x.UpperBound, x.Count, b[i-1].UpperBound, b[i-1].Count)
		}
	}
	return nil
}

// Sub returns b - base bucket by bucket (the increase over a window). ok is
// false when the layouts differ or a count went down (a counter reset), in
// which case the window has no usable delta.
func (b Buckets) Sub(base Buckets) (Buckets, bool) {
	if len(b) != len(base) {
		return nil, false
	}
	out := make(Buckets, len(b))
	for i := range b {
		if b[i].UpperBound != base[i].UpperBound || b[i].Count < base[i].Count {
			return nil, false
		}
		out[i] = Bucket{UpperBound: b[i].UpperBound, Count: b[i].Count - base[i].Count}
	}
	return out, true
}

// Add merges two histograms with the same layout (e.g. two replicas).
// Layouts that differ are merged on the union of bounds, which is exact for
// cumulative counts at every shared bound.
func (b Buckets) Add(o Buckets) Buckets {
	if len(b) == 0 {
		return append(Buckets(nil), o...)
	}
	m := map[float64]float64{}
	for _, x := range b {
		m[x.UpperBound] += x.Count
	}
	for _, x := range o {
		m[x.UpperBound] += x.Count
	}
	out := make(Buckets, 0, len(m))
	for ub, c := range m {
		out = append(out, Bucket{UpperBound: ub, Count: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UpperBound < out[j].UpperBound })
	return out
}

// Total is the number of observations (the +Inf bucket).
func (b Buckets) Total() float64 {
	if len(b) == 0 {
		return 0
	}
	return b[len(b)-1].Count
}

// Quantile estimates the q-quantile with linear interpolation inside the
// bucket, like PromQL's histogram_quantile: a quantile that lands in the
// +Inf bucket returns the highest finite bound. ok is false with no
// observations.
func (b Buckets) Quantile(q float64) (float64, bool) {
	if len(b) == 0 || b.Total() <= 0 || math.IsNaN(q) {
		return 0, false
	}
	rank := q * b.Total()
	i := sort.Search(len(b), func(i int) bool { return b[i].Count >= rank })
	if i >= len(b) {
		i = len(b) - 1
	}
	if math.IsInf(b[i].UpperBound, 1) {
		if i == 0 {
			return 0, false
		}
		return b[i-1].UpperBound, true
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = b[i-1].UpperBound, b[i-1].Count
	} else if b[0].UpperBound < 0 {
		return b[0].UpperBound, true
	}
	inBucket := b[i].Count - below
	if inBucket <= 0 {
		return b[i].UpperBound, true
	}
	return lower + (b[i].UpperBound-lower)*(rank-below)/inBucket, true
}

// Below estimates how many observations are at or below x, interpolating
// linearly inside the bucket like Quantile.
func (b Buckets) Below(x float64) float64 {
	lower, below := 0.0, 0.0
	for _, bk := range b {
		if x < bk.UpperBound {
			if math.IsInf(bk.UpperBound, 1) || bk.UpperBound <= lower {
				return below
			}
			if x <= lower {
				return below
			}
			return below + (bk.Count-below)*(x-lower)/(bk.UpperBound-lower)
		}
		lower, below = bk.UpperBound, bk.Count
	}
	return below
}
