package policy

import (
	"time"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// Window adds time to Decide: a burst window that sizes a growing queue
// ahead, and a stabilised scale-down. It keeps the recent history of one
// ScaledObject and is used by one goroutine (the server's poller). Its clock
// is the snapshots' At, so tests drive it with made-up times.
//
// Scale-up is never delayed: the latest snapshot always counts, so a demand
// jump is reported on the first poll that sees it. Scale-down is: Desired is
// the highest raw count of the last ScaleDownStabilization, so the count
// falls only after demand stayed low that long.
type Window struct {
	queue []point // queue totals within BurstWindow (plus one baseline)
	want  []point // raw desired counts within ScaleDownStabilization
	first time.Time
	// ready is the previous snapshot's serving replicas; grownAt when
	// that count last rose.
	ready   int
	grownAt time.Time
	// budget holds non-overlapping latency windows (observations and how
	// many met the target) over BudgetHorizon.
	budget []budgetPoint
	// rates holds arrival rates and capacity samples over RateLookback;
	// prevQueue is the previous snapshot's queue (havePrev: there was
	// one); capacity the last measured per-replica capacity.
	rates     []ratePoint
	prevQueue float64
	havePrev  bool
	capacity  float64
	// queued is the previous snapshot's queue per replica.
	queued map[string]float64
}

// ratePoint is one poll interval: arrivals per second, and the requests
// admitted per second by the replicas that had a queue at both polls (busy
// throughout: what a replica can do), else 0.
type ratePoint struct {
	at       time.Time
	capacity float64
	// arrived requests over seconds.
	arrived, over float64
}

type budgetPoint struct {
	at          time.Time
	obs, within float64
}

// BudgetHorizon is how far back the error budget is counted: requests
// within the latency target over non-overlapping latency windows. Long
// enough to hold several bursts, short enough that a change of traffic
// shows within a quarter of an hour.
const BudgetHorizon = 15 * time.Minute

// minBudgetRequests is the fewest requests a budget is judged on; below
// it one slow request would swing the share by a percent.
const minBudgetRequests = 100

type point struct {
	at time.Time
	v  float64
}

// Decide is Decide with the burst and stabilisation windows of m applied.
// Decision.Raw is the count before stabilisation.
func (w *Window) Decide(m *metadata.Metadata, s source.Snapshot) Decision {
	if n := len(w.want); n > 0 && w.want[n-1].at.After(s.At) {
		// The clock went backwards: the history no longer describes
		// "the last N minutes".
		w.queue, w.want = nil, nil
		w.first, w.ready, w.grownAt, w.budget = time.Time{}, 0, time.Time{}, nil
		w.rates, w.havePrev, w.capacity, w.queued = nil, false, 0, nil
	}
	if w.first.IsZero() {
		w.first = s.At
	}
	delta := w.queueGrowth(m.BurstWindow, s.At, s.QueueTotal)
	growth := max(0, delta)
	sized := s
	if growth > 0 {
		// The queue grew over the burst window: assume it keeps growing
		// as fast for one more window, since new replicas take that long
		// (and more) to load a model.
		sized.QueueTotal += growth
	}
	if s.ReadyReplicas > w.ready && w.ready > 0 {
		w.grownAt = s.At
	}
	w.ready = s.ReadyReplicas
	// A latency percentile describes the capacity its window was served
	// with: until one latency window has passed since replicas were
	// added, a breach reflects the requests that waited for them (often
	// queued on the old replicas, where new ones cannot take them over),
	// so it holds the count instead of growing it again. The queue rule
	// still sees new demand at once.
	w.recordBudget(s)
	known, ok, spare := w.budgetState(m)
	h := history{
		budgetKnown: known, budgetOK: ok, budgetSpare: spare,
		latencyStale:  !w.grownAt.IsZero() && s.At.Sub(w.grownAt) < s.Latency.Window,
		queueDraining: delta < 0,
		rateNeed:      w.rateNeed(m, s),
	}
	d := decide(m, sized, h)
	d.QueueGrowth = growth
	d.Raw = d.Desired
	d.Desired = w.stabilize(m.ScaleDownStabilization, s.At, d.Raw)
	if m.ScaleDownStabilization > 0 && s.At.Sub(w.first) < m.ScaleDownStabilization && d.Desired < int32(s.ReadyReplicas) {
		// A history shorter than the window (a restarted scaler, a new
		// ScaledObject) cannot show that demand stayed low for the whole
		// window: do not report fewer replicas than are serving yet.
		d.Desired = int32(s.ReadyReplicas)
	}
	d.MetricValue = float64(d.Desired) * MetricTarget
	return d
}

// queueGrowth records q and returns its change since the newest sample
// at or before now-window (or the oldest one kept, early on), so growth is
// seen from the second poll on.
func (w *Window) queueGrowth(window time.Duration, now time.Time, q float64) float64 {
	if window <= 0 {
		w.queue = nil
		return 0
	}
	w.queue = trim(w.queue, now.Add(-window), true)
	var growth float64
	if len(w.queue) > 0 {
		growth = q - w.queue[0].v
	}
	w.queue = append(w.queue, point{at: now, v: q})
	return growth
}

// stabilize records raw and returns the max over the window.
func (w *Window) stabilize(window time.Duration, now time.Time, raw int32) int32 {
	if window <= 0 {
		w.want = nil
		return raw
	}
	// Samples exactly window old no longer hold the count.
	w.want = trim(w.want, now.Add(-window), false)
	w.want = append(w.want, point{at: now, v: float64(raw)})
	out := raw
	for _, p := range w.want {
		out = max(out, int32(p.v))
	}
	return out
}

// trim drops samples older than cutoff. With keepBaseline it keeps the
// newest sample at or before cutoff, as the start of the window.
func trim(ps []point, cutoff time.Time, keepBaseline bool) []point {
	first := len(ps)
	for i, p := range ps {
		if p.at.After(cutoff) {
			first = i
			break
		}
	}
	if keepBaseline && first > 0 {
		first--
	}
	return append(ps[:0], ps[first:]...)
}

// rateNeed records the poll's arrival rate (requests admitted since the
// previous scrape plus the queue's growth, per second) and, when the
// replicas were busy throughout (a queue at both polls), their admitted
// requests per second each: a measured capacity. It returns the replicas
// the highest rate over RateLookback needs at TargetUtilization of the
// highest capacity measured in it (the last one measured, if none is),
// or 0 while no capacity has been measured. The highest rate is the
// burst headroom: the next burst is sized by the recent ones, since a
// replica added after it starts loads too late.
func (w *Window) rateNeed(m *metadata.Metadata, s source.Snapshot) int32 {
	if m.RateLookback <= 0 {
		w.rates, w.havePrev = nil, false
		return 0
	}
	if dt := s.Latency.RecentOver.Seconds(); dt > 0 && w.havePrev {
		arrived := max(0, s.Latency.Recent+s.QueueTotal-w.prevQueue)
		p := ratePoint{at: s.At, arrived: arrived, over: dt}
		// Capacity from the replicas that had a queue at both polls:
		// they admitted as fast as they could.
		var busy, admitted float64
		for _, r := range s.Replicas {
			if r.Queue > 0 && w.queued[r.Name] > 0 {
				busy++
				admitted += r.Recent
			}
		}
		if busy > 0 {
			p.capacity = admitted / dt / busy
		}
		w.rates = append(w.rates, p)
	}
	w.prevQueue, w.havePrev = s.QueueTotal, true
	if w.queued == nil {
		w.queued = map[string]float64{}
	}
	clear(w.queued)
	for _, r := range s.Replicas {
		w.queued[r.Name] = r.Queue
	}
	cut := 0
	for cut < len(w.rates) && !w.rates[cut].at.After(s.At.Add(-m.RateLookback)) {
		cut++
	}
	w.rates = append(w.rates[:0], w.rates[cut:]...)
	var peak, capacity float64
	for i, p := range w.rates {
		capacity = max(capacity, p.capacity)
		var n, span float64
		for _, q := range w.rates[max(0, i-ratePolls+1) : i+1] {
			n, span = n+q.arrived, span+q.over
		}
		peak = max(peak, n/span)
	}
	if capacity > 0 {
		w.capacity = capacity
	}
	if w.capacity <= 0 {
		return 0
	}
	return ceil(peak / (w.capacity * m.TargetUtilization))
}

// ratePolls is how many poll intervals one arrival rate spans: a burst
// within one poll that the queue absorbs within seconds is not a rate to
// hold replicas for (three of the default 5 s polls: 15 s).
const ratePolls = 3

// recordBudget keeps the snapshot's latency window if it does not
// overlap the last one kept, and drops those older than BudgetHorizon.
func (w *Window) recordBudget(s source.Snapshot) {
	win := s.Latency.Window
	if win <= 0 || s.Latency.Observations <= 0 {
		return
	}
	if n := len(w.budget); n > 0 && s.At.Sub(w.budget[n-1].at) < win {
		return
	}
	cut := 0
	for cut < len(w.budget) && !w.budget[cut].at.After(s.At.Add(-BudgetHorizon)) {
		cut++
	}
	w.budget = append(w.budget[cut:], budgetPoint{at: s.At, obs: s.Latency.Observations, within: s.Latency.WithinTarget})
}

// budgetState says whether the requests of the kept windows met the
// latency target for at least the percentile's share (ok), for so many
// that under half the budget is spent (spare), and whether there were
// enough to tell (known).
func (w *Window) budgetState(m *metadata.Metadata) (known, ok, spare bool) {
	var obs, within float64
	for _, p := range w.budget {
		obs += p.obs
		within += p.within
	}
	if obs < minBudgetRequests || m.TargetLatency <= 0 {
		return false, false, false
	}
	att := within / obs
	miss := 1 - m.LatencyPercentile
	return true, att >= m.LatencyPercentile, 1-att <= miss/2
}
