package sim

import (
	"math"
	"sort"
	"time"

	"github.com/kubegpu/kubegpu/scaler/presets"
)

// latency returns the request's latency for the SLO signal.
func (c *Config) latency(st *reqState) time.Duration {
	if c.Signal == presets.SignalE2E {
		return st.e2e
	}
	return st.ttft
}

func (s *engine) summarize(res *Result) {
	ttft := make([]float64, 0, len(s.reqs))
	e2e := make([]float64, 0, len(s.reqs))
	within := 0
	for i := range s.st {
		st := &s.st[i]
		if st.failed {
			res.Failed++
			continue
		}
		ttft = append(ttft, st.ttft.Seconds())
		e2e = append(e2e, st.e2e.Seconds())
		if s.cfg.latency(st) <= s.cfg.SLO {
			within++
		}
	}
	res.Attainment = float64(within) / float64(len(s.reqs))
	res.TTFT, res.E2E = percentiles(ttft), percentiles(e2e)
	var gpu time.Duration
	for _, r := range s.all {
		end := res.End
		if r.state == gone {
			end = r.ended
		}
		gpu += end - r.created
	}
	res.GPUHours = gpu.Hours()
}

func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{P50: math.NaN(), P95: math.NaN(), P99: math.NaN()}
	}
	sort.Float64s(v)
	return Percentiles{P50: quantile(v, 0.50), P95: quantile(v, 0.95), P99: quantile(v, 0.99)}
}

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// timeline collects replica counts at bucket boundaries while the run goes.
type timeline struct {
	width  time.Duration
	points []Point
}

func (t *timeline) record(s *engine) {
	if t.width <= 0 {
		return
	}
	for s.now >= time.Duration(len(t.points)+1)*t.width {
		total, readyN := s.count()
		t.points = append(t.points, Point{At: time.Duration(len(t.points)) * t.width, Replicas: total, Ready: readyN})
	}
}

// finish adds the last partial bucket, then arrival rates and latencies.
func (t *timeline) finish(s *engine) []Point {
	if t.width <= 0 {
		return nil
	}
	total, readyN := s.count()
	t.points = append(t.points, Point{At: time.Duration(len(t.points)) * t.width, Replicas: total, Ready: readyN})
	lat := make([][]float64, len(t.points))
	counts := make([]int, len(t.points))
	for i, r := range s.reqs {
		b := min(int(r.Arrival/t.width), len(t.points)-1)
		counts[b]++
		if st := &s.st[i]; !st.failed {
			lat[b] = append(lat[b], s.cfg.latency(st).Seconds())
		} else {
			lat[b] = append(lat[b], math.Inf(1))
		}
	}
	for i := range t.points {
		t.points[i].Rate = float64(counts[i]) / t.width.Seconds()
		if len(lat[i]) > 0 {
			sort.Float64s(lat[i])
			t.points[i].Latency = quantile(lat[i], 0.95)
		}
	}
	return t.points
}
