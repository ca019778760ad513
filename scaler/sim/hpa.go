package sim

import (
	"math"
	"time"
)

// The HPA as kube-controller-manager runs it (pkg/controller/podautoscaler:
// replica_calculator.go and horizontal.go, autoscaling/v2), reduced to what
// an inference Deployment's HPA uses: one External metric with an
// AverageValue target (what KEDA creates), or one Pods metric with an
// AverageValue target (GPU utilisation through a metrics adapter), then the
// behavior's stabilisation windows and rate limits.

// DefaultTolerance is --horizontal-pod-autoscaler-tolerance.
const DefaultTolerance = 0.1

// ScalingPolicy is one autoscaling/v2 HPAScalingPolicy.
type ScalingPolicy struct {
	Percent bool // Percent, else Pods
	Value   int32
	Period  time.Duration
}

// ScalingRules is one direction of autoscaling/v2 HPAScalingRules with
// selectPolicy Max (the default).
type ScalingRules struct {
	Stabilization time.Duration
	Policies      []ScalingPolicy
}

// Behavior is autoscaling/v2 HorizontalPodAutoscalerBehavior.
type Behavior struct {
	Up, Down ScalingRules
}

// DefaultBehavior is the HPA's default behavior: scale up by at most
// max(100%, 4 pods) per 15s with no stabilisation, scale down by up to
// 100% per 15s after a 300s stabilisation window.
func DefaultBehavior() Behavior {
	return Behavior{
		Up: ScalingRules{Policies: []ScalingPolicy{
			{Percent: true, Value: 100, Period: 15 * time.Second},
			{Value: 4, Period: 15 * time.Second},
		}},
		Down: ScalingRules{Stabilization: 300 * time.Second, Policies: []ScalingPolicy{
			{Percent: true, Value: 100, Period: 15 * time.Second},
		}},
	}
}

// ExternalAverageValue is GetExternalPerPodMetricReplicas: the metric's
// value divided by the per-pod target, unless the usage ratio is within
// tolerance of the current count.
func ExternalAverageValue(current int32, value, target, tolerance float64) int32 {
	if current <= 0 || target <= 0 {
		return current
	}
	ratio := value / (target * float64(current))
	if within(ratio, tolerance) {
		return current
	}
	return int32(math.Ceil(value / target))
}

// PodsAverageValue is GetMetricReplicas/calcPlainMetricReplicas for a Pods
// metric: values holds the metric of each pod that reports it, missing
// counts pods that do not yet (starting). On a scale-up missing pods count
// as 0, on a scale-down as exactly the target, and a change that the
// missing pods would reverse is not made.
func PodsAverageValue(current int32, values []float64, missing int, target, tolerance float64) int32 {
	if len(values) == 0 || target <= 0 {
		return current
	}
	var sum float64
	for _, v := range values {
		sum += v
	}
	ratio := sum / (target * float64(len(values)))
	if missing == 0 {
		if within(ratio, tolerance) {
			return current
		}
		return int32(math.Ceil(ratio * float64(len(values))))
	}
	fill := 0.0
	if ratio < 1 {
		fill = target
	}
	n := len(values) + missing
	newRatio := (sum + fill*float64(missing)) / (target * float64(n))
	if within(newRatio, tolerance) || (ratio < 1 && newRatio > 1) || (ratio > 1 && newRatio < 1) {
		return current
	}
	want := int32(math.Ceil(newRatio * float64(n)))
	if (newRatio < 1 && want > current) || (newRatio > 1 && want < current) {
		return current
	}
	return want
}

// within is Tolerances.isWithin: written as bounds on the ratio, so a
// ratio of exactly 1.1 is within a 10% tolerance (1 - 1.1 in floating
// point is a little more than 0.1).
func within(ratio, tolerance float64) bool {
	return 1-tolerance <= ratio && ratio <= 1+tolerance
}

// HPA holds the controller's per-HPA memory: past recommendations (for the
// stabilisation windows) and past scale events (for the rate limits).
type HPA struct {
	Min, Max int32
	Behavior Behavior

	recs       []stamped
	upEvents   []stamped
	downEvents []stamped
}

// Seed records a past recommendation, as an HPA that has been running
// has them: the scale-down window then holds n until it has passed.
func (h *HPA) Seed(at time.Duration, n int32) {
	h.recs = append(h.recs, stamped{at: at, n: n})
}

type stamped struct {
	at time.Duration
	n  int32
}

// Normalize turns the metric's recommendation into the replica count the
// HPA sets, as normalizeDesiredReplicasWithBehaviors does: clamp to
// min/max, stabilise (the highest recommendation of the scale-down window,
// the lowest of the scale-up window), then limit the rate of change by the
// scale events of each policy's period.
func (h *HPA) Normalize(now time.Duration, current, desired int32) int32 {
	desired = min(max(desired, h.Min), h.Max)
	up, down := desired, desired
	keep := h.recs[:0]
	longest := max(h.Behavior.Up.Stabilization, h.Behavior.Down.Stabilization)
	for _, r := range h.recs {
		if r.at > now-h.Behavior.Up.Stabilization {
			up = min(up, r.n)
		}
		if r.at > now-h.Behavior.Down.Stabilization {
			down = max(down, r.n)
		}
		if r.at > now-longest {
			keep = append(keep, r)
		}
	}
	h.recs = append(keep, stamped{at: now, n: desired})
	rec := current
	if rec < up {
		rec = up
	}
	if rec > down {
		rec = down
	}

	switch {
	case rec > current:
		limit := int32(math.MinInt32)
		for _, p := range h.Behavior.Up.Policies {
			start := current - changes(h.upEvents, now, p.Period) + changes(h.downEvents, now, p.Period)
			var proposed int32
			if p.Percent {
				proposed = int32(math.Ceil(float64(start) * (1 + float64(p.Value)/100)))
			} else {
				proposed = start + p.Value
			}
			limit = max(limit, proposed)
		}
		if len(h.Behavior.Up.Policies) == 0 {
			limit = h.Max
		}
		limit = max(limit, current)
		rec = min(rec, min(limit, h.Max))
	case rec < current:
		limit := int32(math.MaxInt32)
		for _, p := range h.Behavior.Down.Policies {
			start := current - changes(h.upEvents, now, p.Period) + changes(h.downEvents, now, p.Period)
			var proposed int32
			if p.Percent {
				proposed = int32(float64(start) * (1 - float64(p.Value)/100))
			} else {
				proposed = start - p.Value
			}
			limit = min(limit, proposed)
		}
		if len(h.Behavior.Down.Policies) == 0 {
			limit = h.Min
		}
		limit = min(limit, current)
		rec = max(rec, max(limit, h.Min))
	}
	if rec > current {
		h.upEvents = append(trimEvents(h.upEvents, now, h.Behavior.Up.Policies), stamped{at: now, n: rec - current})
	} else if rec < current {
		h.downEvents = append(trimEvents(h.downEvents, now, h.Behavior.Down.Policies), stamped{at: now, n: current - rec})
	}
	return rec
}

// changes sums the replicas added (or removed) within the period.
func changes(events []stamped, now, period time.Duration) int32 {
	var n int32
	for _, e := range events {
		if e.at > now-period {
			n += e.n
		}
	}
	return n
}

func trimEvents(events []stamped, now time.Duration, ps []ScalingPolicy) []stamped {
	var longest time.Duration
	for _, p := range ps {
		longest = max(longest, p.Period)
	}
	keep := events[:0]
	for _, e := range events {
		if e.at > now-longest {
			keep = append(keep, e)
		}
	}
	return keep
}
