package sim

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

// Sweep ranges of the baselines' knobs.
var (
	// KEDAQueueThresholds are waiting requests per replica.
	KEDAQueueThresholds = []float64{1, 2, 4, 8, 16, 32}
	// HPAUtilTargets are GPU utilisation targets.
	HPAUtilTargets = []float64{0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
)

// Defaults of the baselines without --sweep.
const (
	DefaultKEDAQueueThreshold = 4   // waiting requests per replica
	DefaultHPAUtilTarget      = 0.7 // 70% GPU utilisation
)

// warmupWindow is the stretch of trace whose need sets the initial count.
const warmupWindow = time.Minute

// Options says what to run.
type Options struct {
	Config   Config
	Policies []string
	// Sweep runs every baseline over its knob's range.
	Sweep bool
	// Progress, if set, is called after each run (from one goroutine at a
	// time).
	Progress func(r *Result, elapsed time.Duration)
}

// PolicyResult is one policy's outcome: its runs, and the one reported
// (without a sweep the only run; with one the cheapest run reaching the
// goal, else the run with the highest attainment).
type PolicyResult struct {
	Policy string
	Chosen *Result
	// ReachedGoal says whether Chosen reaches the attainment goal.
	ReachedGoal bool
	Runs        []*Result
}

// Report is everything one `sim autoscale` invocation measured.
type Report struct {
	Trace    string
	Speed    float64
	Config   Config
	Requests int
	// Initial is the replica count every autoscaled run starts with: the
	// smallest fixed count that serves the first minute within the goal.
	Initial int32
	// PeakNeed is the smallest fixed count that serves the whole trace
	// within the goal (the static policy's count).
	PeakNeed int32
	Policies []*PolicyResult
	Wall     time.Duration
	// Bound is the clairvoyant bound, when asked for (ClairvoyantBound).
	Bound *Bound
}

// RunAll plans and runs the simulations for one trace and speed.
func RunAll(ctx context.Context, tr *Trace, speed float64, o Options) (*Report, error) {
	if !(speed > 0) || speed > 1e4 {
		return nil, fmt.Errorf("speed %v: want > 0 and <= 10000", speed)
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	for _, p := range o.Policies {
		if !known(p) {
			return nil, fmt.Errorf("unknown policy %q (want one of %v)", p, PolicyNames())
		}
	}
	start := time.Now()
	reqs := tr.Scaled(speed)
	cfg := o.Config
	rep := &Report{Trace: tr.Name, Speed: speed, Config: cfg, Requests: len(reqs)}

	// The service has been running: it starts with what the first minute
	// of traffic needs, warm.
	n := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= warmupWindow })
	initial, err := smallestStatic(ctx, cfg, reqs[:max(n, 1)], cfg.Min)
	if err != nil {
		return nil, fmt.Errorf("initial replicas: %w", err)
	}
	peak, err := smallestStatic(ctx, cfg, reqs, initial)
	if err != nil {
		return nil, fmt.Errorf("peak need: %w", err)
	}
	rep.Initial, rep.PeakNeed = initial, peak
	cfg.Initial = initial

	var jobs []Setting
	for _, p := range o.Policies {
		jobs = append(jobs, settings(p, o.Sweep, peak, cfg.Max)...)
	}
	results := make([]*Result, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, set := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i], errs[i] = Run(ctx, cfg, reqs, set)
			if o.Progress != nil && errs[i] == nil {
				mu.Lock()
				o.Progress(results[i], time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", jobs[i], err)
		}
	}
	for _, p := range o.Policies {
		pr := &PolicyResult{Policy: p}
		for i, set := range jobs {
			if set.Policy == p {
				pr.Runs = append(pr.Runs, results[i])
			}
		}
		pr.Chosen, pr.ReachedGoal = choose(pr.Runs, cfg.Goal)
		rep.Policies = append(rep.Policies, pr)
	}
	rep.Wall = time.Since(start)
	return rep, nil
}

func known(p string) bool {
	for _, n := range PolicyNames() {
		if n == p {
			return true
		}
	}
	return false
}

// settings lists the runs of a policy.
func settings(p string, sweep bool, peak, maxN int32) []Setting {
	var vals []float64
	switch p {
	case PolicyKubegpu:
		return []Setting{{Policy: p}}
	case PolicyKEDAQueue:
		vals = []float64{DefaultKEDAQueueThreshold}
		if sweep {
			vals = KEDAQueueThresholds
		}
	case PolicyHPAUtil:
		vals = []float64{DefaultHPAUtilTarget}
		if sweep {
			vals = HPAUtilTargets
		}
	case PolicyStatic:
		vals = []float64{float64(peak)}
		if sweep {
			vals = nil
			for n := max(1, peak-3); n <= min(maxN, peak+2); n++ {
				vals = append(vals, float64(n))
			}
		}
	}
	out := make([]Setting, len(vals))
	for i, v := range vals {
		out[i] = Setting{Policy: p, Value: v}
	}
	return out
}

// choose returns the cheapest run reaching the goal, else the best one.
func choose(runs []*Result, goal float64) (*Result, bool) {
	var best, cheapest *Result
	for _, r := range runs {
		if r.Attainment >= goal && (cheapest == nil || r.GPUHours < cheapest.GPUHours) {
			cheapest = r
		}
		if best == nil || r.Attainment > best.Attainment {
			best = r
		}
	}
	if cheapest != nil {
		return cheapest, true
	}
	return best, false
}

// smallestStatic finds the smallest fixed replica count, from lo up to
// cfg.Max, whose run reaches the goal; attainment grows with the count, so
// it gallops up from lo, then bisects.
func smallestStatic(ctx context.Context, cfg Config, reqs []Request, lo int32) (int32, error) {
	cfg.Timeline = 0
	ok := func(n int32) (bool, error) {
		r, err := Run(ctx, cfg, reqs, Setting{Policy: PolicyStatic, Value: float64(n)})
		if err != nil {
			return false, err
		}
		return r.Attainment >= cfg.Goal, nil
	}
	lo = max(lo, cfg.Min)
	if good, err := ok(lo); err != nil || good {
		return lo, err
	}
	// lo fails; find a hi that passes.
	hi := lo
	for {
		if hi >= cfg.Max {
			return 0, fmt.Errorf("even %d replicas (the maximum) miss the %.2f%% goal", cfg.Max, 100*cfg.Goal)
		}
		hi = min(cfg.Max, hi*2)
		good, err := ok(hi)
		if err != nil {
			return 0, err
		}
		if good {
			break
		}
		lo = hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		good, err := ok(mid)
		if err != nil {
			return 0, err
		}
		if good {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
