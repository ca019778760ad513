// Package policy turns a demand snapshot into a desired replica count and
// into the metric value/target pair that makes KEDA's HPA reach it.
//
// Replica mapping: KEDA creates an HPA External metric with type
// AverageValue (the ScaledObject default). For that the HPA computes
//
//	desired = ceil(metricValue / targetValue)
//
// independent of the current replica count. We therefore report
// MetricTarget = 1 and MetricValue = Desired, so the HPA arrives at exactly
// Desired (clamped by minReplicaCount/maxReplicaCount). Two HPA behaviours
// still apply on top: its tolerance (no change while |desired/current - 1|
// <= 0.1, so 10 -> 11 replicas waits until the gap grows) and its
// behavior (default: scale-down stabilization 300s, on top of ours; scale-up
// at most +100% or +4 pods per 15s). Window adds this scaler's own burst
// handling and stabilised scale-down before the value is reported.
package policy

import (
	"math"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// MetricTarget is the AverageValue target reported to KEDA.
const MetricTarget = 1.0

// ShrinkBelow is the fraction of the latency SLO under which latency stops
// holding replicas and queue depth alone decides; between it and the SLO
// latency holds the current count, so the two signals do not oscillate.
const ShrinkBelow = 0.5

// MaxGrowth bounds one decision to this multiple of the serving replicas
// (or MaxGrowthPods more, whichever is larger). Replicas still loading do
// not serve, so the queue and latency they would fix keep growing until
// they are ready; without a bound every poll of a burst asks for more
// again, the HPA (which counts starting pods as current) compounds the
// asks, and a burst that is over before the first new replica is ready
// leaves tens of GPUs to pay for. Measured with scaler/sim on the Azure
// LLM code trace: docs/autoscale-simulator.md.
const (
	MaxGrowth     = 2.0
	MaxGrowthPods = 4
)

// ShrinkStep is the share of the serving replicas given back per decision
// while latency is under ShrinkBelow of the SLO; stepping down instead of
// dropping to what the queue alone asks for (often 1: a server that keeps
// up has no queue) keeps the capacity a burst needs in the first seconds,
// before a new replica could load.
const ShrinkStep = 0.2

// Decision is the outcome for one snapshot.
type Decision struct {
	Desired     int32
	FromQueue   int32
	FromLatency int32
	// FromRate is the rate rule's count (Window only; 0: unknown).
	FromRate int32
	Active   bool
	// Raw is the count before scale-down stabilisation (Window only).
	Raw int32
	// QueueGrowth is the queue increase over the burst window that was
	// added when sizing (Window only).
	QueueGrowth float64
	// MetricValue is what GetMetrics reports (with target MetricTarget).
	MetricValue float64
}

// Decide computes the desired replicas: the max of the queue rule and the
// latency rule.
func Decide(m *metadata.Metadata, s source.Snapshot) Decision {
	return decide(m, s, history{})
}

// history is what Window knows beyond one snapshot.
type history struct {
	// latencyStale: the latency window still holds requests served
	// before the last scale-up landed, so a breach holds the count
	// instead of growing it.
	latencyStale bool
	// queueDraining: the queue shrank over the burst window, so the
	// replicas serving keep up with arrivals and drain it.
	queueDraining bool
	// The error budget over BudgetHorizon: the latency target is met
	// for at least the percentile's share of requests (budgetOK: one
	// window's breach holds instead of growing, since the misses still fit
	// the budget), or for so many that less than half of the budget is
	// spent (budgetSpare: a window within the target gives back a step).
	// budgetKnown is false with too few requests to tell.
	budgetKnown bool
	budgetOK    bool
	budgetSpare bool
	// rateNeed is the replicas the highest recent arrival rate needs at
	// the measured per-replica capacity (0: not known).
	rateNeed int32
}

func decide(m *metadata.Metadata, s source.Snapshot, h history) Decision {
	var d Decision
	current := int32(s.ReadyReplicas)
	if m.TargetQueueDepth > 0 {
		d.FromQueue = ceil(s.QueueTotal / m.TargetQueueDepth)
		if h.queueDraining && d.FromQueue > current {
			// Requests queued at a replica stay there (the Service does
			// not move them); new replicas would only take new arrivals,
			// which the serving ones already outpace.
			d.FromQueue = current
		}
	}
	if m.TargetLatency > 0 && s.Latency.Valid {
		ratio := float64(s.Latency.Value) / float64(m.TargetLatency)
		switch {
		case ratio > 1 && (h.latencyStale || h.queueDraining || (h.budgetKnown && h.budgetOK)):
			// The window's breach is from requests that waited for
			// replicas now serving, or from a burst the serving replicas
			// are already draining (more replicas, ready in minutes,
			// would come after it), or its misses fit the error budget:
			// the target is a share of requests over time, not of every
			// minute, and a bursty minute is not a lack of capacity.
			d.FromLatency = current
		case ratio > 1 && h.rateNeed > 0:
			// Over the SLO with a measured rate and capacity: the rate
			// rule sizes the count (latency is not linear in replicas:
			// a queue twice the SLO long does not need twice the
			// replicas); the breach adds at least one.
			d.FromLatency = current + 1
		case ratio > 1:
			// Over the SLO: grow in proportion to how far over, at least
			// one replica, so a small breach still acts.
			d.FromLatency = max(current+1, ceil(float64(current)*ratio))
		case ratio >= ShrinkBelow && !(h.budgetKnown && h.budgetSpare) && h.rateNeed > 0 && h.rateNeed < current:
			// Within the SLO and more replicas than the highest recent
			// rate needs: give back a step, down to that need. (The
			// latency floor of long prompts' prefill alone can keep
			// the percentile above half the SLO on idle replicas.)
			d.FromLatency = max(h.rateNeed, current-max(1, int32(float64(current)*ShrinkStep)))
		case ratio >= ShrinkBelow && !(h.budgetKnown && h.budgetSpare):
			d.FromLatency = current
		default:
			// Well under the SLO, or within it with most of the error
			// budget unspent: give back a step of replicas.
			d.FromLatency = current - max(1, int32(float64(current)*ShrinkStep))
		}
	}
	d.FromRate = h.rateNeed
	d.Desired = max(d.FromQueue, d.FromLatency, d.FromRate)
	if limit := max(ceil(float64(current)*MaxGrowth), current+MaxGrowthPods); current > 0 && d.Desired > limit {
		d.Desired = limit
	}
	d.Active = s.QueueTotal > m.ActivationQueueDepth || s.RunningTotal > 0
	if d.Active && d.Desired < 1 {
		// Work in flight needs a server even if the queue is empty.
		d.Desired = 1
	}
	d.MetricValue = float64(d.Desired) * MetricTarget
	return d
}

func ceil(x float64) int32 {
	if x <= 0 || math.IsNaN(x) {
		return 0
	}
	if x >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(math.Ceil(x))
}
