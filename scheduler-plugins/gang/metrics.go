package gang

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Metrics live in the scheduler's legacy registry, so they show on the
// kube-scheduler's own /metrics next to the framework's.
var (
	pendingGangs = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      "kubegpu",
		Name:           "gang_pending",
		Help:           "Gangs with members waiting to be placed: seen by the scheduler, not yet all admitted.",
		StabilityLevel: metrics.ALPHA,
	})
	partlyBound = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      "kubegpu",
		Name:           "gang_partially_bound",
		Help:           "Gangs with some but not all members bound and the rest pending (e.g. after a scheduler restart or a lost member).",
		StabilityLevel: metrics.ALPHA,
	})
	waitSeconds = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace:      "kubegpu",
		Name:           "gang_wait_seconds",
		Help:           "Time from a gang's first reserved member to the whole gang admitted.",
		Buckets:        metrics.ExponentialBuckets(0.01, 2, 16),
		StabilityLevel: metrics.ALPHA,
	})
	timeouts = metrics.NewCounter(&metrics.CounterOpts{
		Namespace:      "kubegpu",
		Name:           "gang_timeouts_total",
		Help:           "Gangs whose members timed out waiting for each other; their reservations were released.",
		StabilityLevel: metrics.ALPHA,
	})
	rejections = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "kubegpu",
		Name:           "gang_rejections_total",
		Help:           "Gangs whose partial reservations were released, by reason (timeout, unfit, member_deleted, member_failed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
)

var registerOnce sync.Once

// registerMetrics registers once per process: a restarted scheduler in the
// same process (tests) builds the plugin again.
func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(pendingGangs, partlyBound, waitSeconds, timeouts, rejections)
	})
}
