package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/kubegpu/kubegpu/scaler/presets"
)

// Config is one simulation run.
type Config struct {
	Model Model
	// SLO is the latency target; Signal says which latency it bounds.
	SLO    time.Duration
	Signal presets.Signal
	// Goal is the SLO attainment to reach (0.99: 99% of requests).
	Goal float64
	// Min and Max bound the replica count (minReplicaCount/maxReplicaCount).
	Min, Max int32
	// Initial is how many replicas serve at the start (already warm).
	Initial int32
	// HPASync is the HPA controller's sync period.
	HPASync time.Duration
	// Seed drives the load balancer's random choice (kube-proxy picks a
	// ready endpoint at random).
	Seed uint64
	// Timeline is the bucket width of the time series (0: none).
	Timeline time.Duration
	// Trigger, if set, replaces the kubegpu policy's trigger metadata
	// (KubegpuTrigger).
	Trigger map[string]string
	// Plan is the replica plan the schedule policy follows.
	Plan []PlanStep
}

// PlanStep sets the Deployment's replica count (starting and ready) at At.
type PlanStep struct {
	At       time.Duration
	Replicas int32
}

// DefaultConfig returns the defaults of `kubegpu sim autoscale`.
func DefaultConfig() Config {
	return Config{
		Model:    DefaultModel(),
		SLO:      2 * time.Second,
		Signal:   presets.SignalTTFT,
		Goal:     0.99,
		Min:      1,
		Max:      100,
		Initial:  1,
		HPASync:  15 * time.Second,
		Seed:     1,
		Timeline: 15 * time.Second,
	}
}

// Validate checks the run's parameters.
func (c Config) Validate() error {
	var errs []error
	if err := c.Model.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.SLO <= 0 {
		errs = append(errs, fmt.Errorf("slo %s: want > 0", c.SLO))
	}
	if c.Signal != presets.SignalTTFT && c.Signal != presets.SignalE2E {
		errs = append(errs, fmt.Errorf("slo signal %q: want ttft or e2e", c.Signal))
	}
	if !(c.Goal > 0 && c.Goal < 1) {
		errs = append(errs, fmt.Errorf("goal %v: want in (0,1)", c.Goal))
	}
	if c.Min < 1 || c.Max < c.Min || c.Max > 10000 {
		errs = append(errs, fmt.Errorf("replicas min %d max %d: want 1 <= min <= max <= 10000", c.Min, c.Max))
	}
	if c.HPASync <= 0 {
		errs = append(errs, fmt.Errorf("hpa sync %s: want > 0", c.HPASync))
	}
	return errors.Join(errs...)
}

// Setting is one policy with its knob: the queue threshold of keda-queue,
// the utilisation target of hpa-util, the replica count of static; kubegpu
// has none (its trigger comes from the SLO).
type Setting struct {
	Policy string
	Value  float64
}

func (s Setting) String() string {
	switch s.Policy {
	case PolicyKEDAQueue:
		return fmt.Sprintf("%s threshold=%g", s.Policy, s.Value)
	case PolicyHPAUtil:
		return fmt.Sprintf("%s target=%g%%", s.Policy, 100*s.Value)
	case PolicyStatic:
		return fmt.Sprintf("%s replicas=%g", s.Policy, s.Value)
	}
	return s.Policy
}

// Result is one run's outcome.
type Result struct {
	Setting Setting
	// Attainment is the share of requests within the SLO (0-1).
	Attainment float64
	TTFT, E2E  Percentiles
	// GPUHours is replica time from creation to removal (cold starts
	// included), in hours.
	GPUHours float64
	// ScaleEvents counts changes of the replica count.
	ScaleEvents int
	// PeakReplicas is the highest replica count.
	PeakReplicas int32
	Requests     int
	Failed       int
	// End is when the last request finished.
	End      time.Duration
	Timeline []Point
	// states are the requests' outcomes (for missesFrom).
	states []reqState
	cfg    *Config
}

// missesFrom counts the requests from index i on that missed the SLO
// (outside it, or never served).
func (r *Result) missesFrom(i int) (n int) {
	for _, st := range r.states[i:] {
		if st.failed || r.cfg.latency(&st) > r.cfg.SLO {
			n++
		}
	}
	return n
}

// Percentiles of a latency, in seconds.
type Percentiles struct{ P50, P95, P99 float64 }

// Point is one bucket of the time series.
type Point struct {
	At time.Duration
	// Rate is arrivals per second in the bucket.
	Rate float64
	// Replicas counts replicas (starting ones included) at the bucket's
	// end; Ready only serving ones.
	Replicas, Ready int32
	// Latency is the p95 of the SLO signal of requests that arrived in
	// the bucket, seconds.
	Latency float64
}

// event kinds, in the order they run at equal times.
const (
	evStepEnd = iota
	evReady
	evPlan
	evSample
	evSync
)

type event struct {
	at   time.Duration
	kind int
	seq  uint64
	rep  *replica
	plan int // index into Config.Plan (evPlan)
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	if h[i].kind != h[j].kind {
		return h[i].kind < h[j].kind
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// epoch is the wall-clock time of simulated time 0 (what the scaler's
// snapshots are stamped with).
var epoch = time.Date(2023, 11, 16, 18, 0, 0, 0, time.UTC)

// engine is one discrete-event run. Everything happens on one goroutine
// in event order, so a run is deterministic.
type engine struct {
	cfg      Config
	m        Model
	reqs     []Request
	st       []reqState
	now      time.Duration
	events   eventHeap
	seq      uint64
	replicas []*replica // live (not gone), in creation order
	all      []*replica
	byIP     map[string]*replica
	pending  []int // arrivals while no replica was ready
	rng      *rand.Rand
	nextID   int
	events64 int
	done     int
}

func (s *engine) wallclock() time.Time { return epoch.Add(s.now) }

func (s *engine) push(at time.Duration, kind int, r *replica) {
	s.seq++
	heap.Push(&s.events, event{at: at, kind: kind, seq: s.seq, rep: r})
}

func (s *engine) pushPlan(at time.Duration, i int) {
	s.seq++
	heap.Push(&s.events, event{at: at, kind: evPlan, seq: s.seq, plan: i})
}

// validPlan checks a replica plan: it starts at 0, times increase and
// counts are 1 to max.
func validPlan(plan []PlanStep, maxN int32) error {
	if len(plan) == 0 || plan[0].At != 0 {
		return errors.New("schedule: the plan must start at 0")
	}
	for i, p := range plan {
		if i > 0 && p.At <= plan[i-1].At {
			return fmt.Errorf("schedule: step %d at %s is not after step %d at %s", i, p.At, i-1, plan[i-1].At)
		}
		if p.Replicas < 1 || p.Replicas > maxN {
			return fmt.Errorf("schedule: step %d: %d replicas, want 1-%d", i, p.Replicas, maxN)
		}
	}
	return nil
}

func (s *engine) addReplica(warm bool) *replica {
	r := &replica{
		id: s.nextID, name: fmt.Sprintf("sim-%d", s.nextID), created: s.now,
		ttftHist: newHist(ttftBuckets), e2eHist: newHist(e2eBuckets), queueHist: newHist(e2eBuckets),
	}
	s.nextID++
	if warm {
		r.state, r.readyAt = ready, s.now
	} else {
		r.state = starting
		s.push(s.now+s.m.ColdStart, evReady, r)
	}
	s.replicas = append(s.replicas, r)
	s.all = append(s.all, r)
	s.byIP[podIP(r.id)] = r
	return r
}

// count is the Deployment's replica count: starting and ready replicas.
func (s *engine) count() (total, readyN int32) {
	for _, r := range s.replicas {
		switch r.state {
		case starting:
			total++
		case ready:
			total++
			readyN++
		}
	}
	return total, readyN
}

// scaleTo creates or removes replicas. Removal follows the ReplicaSet
// controller's order: replicas not yet ready first, then the newest. A
// removed ready replica is taken out of the Service and finishes what it
// holds (its queue included) before it ends.
func (s *engine) scaleTo(n int32) {
	total, _ := s.count()
	for ; total < n; total++ {
		s.addReplica(false)
	}
	for i := len(s.replicas) - 1; i >= 0 && total > n; i-- {
		if r := s.replicas[i]; r.state == starting {
			s.end(r)
			total--
		}
	}
	for i := len(s.replicas) - 1; i >= 0 && total > n; i-- {
		if r := s.replicas[i]; r.state == ready {
			r.state = draining
			total--
			s.maybeEnd(r)
		}
	}
	s.replicas = slices.DeleteFunc(s.replicas, func(r *replica) bool { return r.state == gone })
}

func (s *engine) end(r *replica) {
	r.state, r.ended = gone, s.now
	delete(s.byIP, podIP(r.id))
}

func (s *engine) maybeEnd(r *replica) {
	if r.state == draining && !r.busy && r.running == 0 && r.queueLen() == 0 {
		s.end(r)
	}
}

// route sends request i to a random ready replica.
func (s *engine) route(i int) {
	var readyN int
	for _, r := range s.replicas {
		if r.state == ready {
			readyN++
		}
	}
	if readyN == 0 {
		s.pending = append(s.pending, i)
		return
	}
	k := s.rng.IntN(readyN)
	for _, r := range s.replicas {
		if r.state != ready {
			continue
		}
		if k == 0 {
			r.waiting = append(r.waiting, i)
			s.kick(r)
			return
		}
		k--
	}
}

func (s *engine) kick(r *replica) {
	if r.startStep(&s.m, s.reqs, s.st, s.now, &s.done) {
		s.push(r.stepEnd, evStepEnd, r)
	}
}

// Run simulates one policy setting over the requests.
func Run(ctx context.Context, cfg Config, reqs []Request, set Setting) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(reqs) == 0 {
		return nil, errors.New("no requests")
	}
	s := &engine{
		cfg: cfg, m: cfg.Model, reqs: reqs, st: make([]reqState, len(reqs)),
		byIP: map[string]*replica{}, rng: newRand(cfg.Seed),
	}
	var as autoscaler
	initial := min(max(cfg.Initial, cfg.Min), cfg.Max)
	switch set.Policy {
	case PolicyKubegpu:
		trigger := cfg.Trigger
		if trigger == nil {
			trigger = KubegpuTrigger(cfg.SLO, cfg.Signal, cfg.Goal)
		}
		k, err := newKubegpuScaler(trigger, s)
		if err != nil {
			return nil, err
		}
		as = k
	case PolicyKEDAQueue:
		if !(set.Value > 0) {
			return nil, fmt.Errorf("%s: threshold %v: want > 0", set.Policy, set.Value)
		}
		as = &kedaQueue{threshold: set.Value}
	case PolicyHPAUtil:
		if !(set.Value > 0 && set.Value <= 1) {
			return nil, fmt.Errorf("%s: target %v: want in (0,1]", set.Policy, set.Value)
		}
		as = &hpaUtil{target: set.Value}
	case PolicySchedule:
		if err := validPlan(cfg.Plan, cfg.Max); err != nil {
			return nil, err
		}
		initial = cfg.Plan[0].Replicas
		for i, p := range cfg.Plan[1:] {
			s.pushPlan(p.At, i+1)
		}
	case PolicyStatic:
		if set.Value < 1 || set.Value > float64(cfg.Max) || set.Value != math.Trunc(set.Value) {
			return nil, fmt.Errorf("%s: replicas %v: want an integer 1-%d", set.Policy, set.Value, cfg.Max)
		}
		initial = int32(set.Value)
	default:
		return nil, fmt.Errorf("unknown policy %q (want one of %v)", set.Policy, PolicyNames())
	}
	for range initial {
		s.addReplica(true)
	}
	var hpa *HPA
	if as != nil {
		hpa = &HPA{Min: cfg.Min, Max: cfg.Max, Behavior: as.behavior()}
		// The service has been running at the initial count.
		hpa.Seed(0, initial)
		s.push(0, evSample, nil)
		s.push(cfg.HPASync, evSync, nil)
	}

	res := &Result{Setting: set, Requests: len(reqs), PeakReplicas: initial}
	var tl *timeline
	if cfg.Timeline > 0 {
		tl = &timeline{width: cfg.Timeline}
	}
	if err := s.loop(ctx, as, hpa, res, tl); err != nil {
		return nil, err
	}
	res.End = s.now
	res.states, res.cfg = s.st, &s.cfg
	s.summarize(res)
	if tl != nil {
		res.Timeline = tl.finish(s)
	}
	return res, nil
}

// loop runs the events until every request is finished. as, hpa, res and
// tl may be nil (no control loop, no accounting).
func (s *engine) loop(ctx context.Context, as autoscaler, hpa *HPA, res *Result, tl *timeline) error {
	next := 0
	for s.done < len(s.reqs) {
		if s.events64++; s.events64&0xffff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		// The next arrival goes before events at the same time except
		// step ends and readiness (they free the replica it may use).
		useArrival := next < len(s.reqs) && (len(s.events) == 0 || s.reqs[next].Arrival < s.events[0].at ||
			(s.reqs[next].Arrival == s.events[0].at && s.events[0].kind >= evSample))
		if useArrival {
			s.now = s.reqs[next].Arrival
			if tl != nil {
				tl.record(s)
			}
			s.route(next)
			next++
			continue
		}
		if len(s.events) == 0 {
			return fmt.Errorf("simulation stalled with %d of %d requests unfinished", len(s.reqs)-s.done, len(s.reqs))
		}
		ev := heap.Pop(&s.events).(event)
		s.now = ev.at
		if tl != nil {
			tl.record(s)
		}
		switch ev.kind {
		case evStepEnd:
			r := ev.rep
			r.endStep(&s.m, s.reqs, s.st, &s.done)
			s.kick(r)
			s.maybeEnd(r)
			if r.state == gone {
				s.replicas = slices.DeleteFunc(s.replicas, func(x *replica) bool { return x == r })
			}
		case evPlan:
			// The plan is the Deployment's count; no HPA in between.
			want := s.cfg.Plan[ev.plan].Replicas
			if total, _ := s.count(); want != total {
				s.scaleTo(want)
				if res != nil {
					res.ScaleEvents++
					res.PeakReplicas = max(res.PeakReplicas, want)
				}
			}
		case evReady:
			r := ev.rep
			if r.state != starting {
				break
			}
			r.state, r.readyAt = ready, s.now
			for _, i := range s.pending {
				s.route(i)
			}
			s.pending = s.pending[:0]
		case evSample:
			if err := as.sample(ctx, s); err != nil {
				return err
			}
			s.push(s.now+as.sampleEvery(), evSample, nil)
		case evSync:
			current, _ := s.count()
			if rec, ok := as.recommend(current, s); ok {
				want := hpa.Normalize(s.now, current, rec)
				if want != current {
					s.scaleTo(want)
					if res != nil {
						res.ScaleEvents++
						res.PeakReplicas = max(res.PeakReplicas, want)
					}
				}
			}
			s.push(s.now+s.cfg.HPASync, evSync, nil)
		}
	}
	return nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6b756265677075)) }
