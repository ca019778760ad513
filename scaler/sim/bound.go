package sim

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"time"
)

// The clairvoyant bound: what an autoscaler that knows the future but
// still pays the cold start would cost. It runs in three steps:
//
//  1. Each window of the trace is simulated on its own, from idle warm
//     replicas, at every count from 1 up to the one with no miss: its miss
//     curve.
//  2. A count per window is chosen so that the misses over the trace fit
//     the goal's budget (the requests the goal lets miss) at the least
//     cost, where raising a window's count costs the replica time the
//     cold-start schedule below pays for it (greedy on misses saved per
//     replica-hour).
//  3. The counts become the cheapest replica plan that serves them: a
//     replica is created one cold start before the window it serves and
//     billed from creation, and removed at once when no later window
//     needs it soon enough to be cheaper kept than recreated. The service
//     starts with the autoscaled runs' warm count, so no window that
//     starts before one cold start has passed can have more.
//
// The plan is then replayed through the simulator (the schedule policy).
// Windows simulated alone miss the work a burst leaves for the next
// window, so the replay can fall short of the goal: the budget is then
// cut by a tenth and steps 2-3 run again, until the replay reaches it;
// if even a budget of 0 does not, each window that missed more in the
// replay than on its own gets one more replica per round. The replayed
// plan's GPU-hours are what the bound reports: a schedule shown (by
// simulation) to reach the goal, so the cheapest clairvoyant schedule
// costs at most that. When no plan reaches the goal (the windows before
// one cold start are stuck at the warm count) the bound says so. The
// first plan (the full budget) is an optimistic estimate: it ignores
// the work one window leaves for the next.

// WindowCurve is one window's misses at each replica count.
type WindowCurve struct {
	Start    time.Duration
	Requests int
	// Misses[n-1] is the requests outside the SLO with n replicas, down
	// to the count with none (or Config.Max).
	Misses []int
}

// Bound is the clairvoyant bound's outcome.
type Bound struct {
	Window    time.Duration
	ColdStart time.Duration
	Initial   int32
	Goal      float64
	// Budget is the misses the chosen counts were allowed (the goal's
	// budget, cut until the replay reached the goal).
	Budget, FullBudget int
	// Needs is the chosen count per window.
	Needs []int32
	Plan  []PlanStep
	// PlanGPUHours is the plan's own replica time; Replay the replay.
	PlanGPUHours float64
	Replay       *Result
	// Optimistic is the first plan's replica time (the full budget, not
	// replayed-checked) and its replay's attainment.
	OptimisticGPUHours   float64
	OptimisticAttainment float64
	Tries                int
	// Expected is each window's misses at its count (its curve), Missed
	// what the replay missed among its requests.
	Expected, Missed []int
}

// MissCurves simulates each window of length window on its own.
func MissCurves(ctx context.Context, cfg Config, reqs []Request, window, leadIn time.Duration) ([]WindowCurve, error) {
	if window <= 0 {
		return nil, fmt.Errorf("window %s: want > 0", window)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("no requests")
	}
	cfg.Timeline = 0
	var out []WindowCurve
	for start := time.Duration(0); start <= reqs[len(reqs)-1].Arrival; start += window {
		lo := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= start })
		hi := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= start+window })
		c := WindowCurve{Start: start, Requests: hi - lo}
		if hi == lo {
			c.Misses = []int{0}
			out = append(out, c)
			continue
		}
		// The lead-in: the previous window's requests run first on the
		// same replicas, so the backlog a burst leaves is in the count.
		from := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= start-leadIn })
		slice := make([]Request, hi-from)
		for i, r := range reqs[from:hi] {
			r.Arrival -= reqs[from].Arrival
			slice[i] = r
		}
		prev := -1
		for n := int32(1); n <= cfg.Max; n++ {
			r, err := Run(ctx, cfg, slice, Setting{Policy: PolicyStatic, Value: float64(n)})
			if err != nil {
				return nil, fmt.Errorf("window at %s, %d replicas: %w", start, n, err)
			}
			m := r.missesFrom(lo - from)
			c.Misses = append(c.Misses, m)
			// Stop once more replicas no longer help: no miss left but
			// requests that can never fit a replica, or the same misses
			// twice at a count where nothing queues.
			if m == 0 || (m == prev && r.TTFT.P99 < cfg.SLO.Seconds()/4) {
				break
			}
			prev = m
		}
		out = append(out, c)
	}
	return out, nil
}

// levelCost is the replica time one replica slot ("level") costs when it
// must serve the windows marked in serves: it is kept through a gap
// shorter than the cold start and recreated one cold start before the
// next window otherwise. Levels up to initial exist warm at 0.
func levelCost(serves []bool, window, cold time.Duration, warm bool) time.Duration {
	var cost time.Duration
	lastEnd := time.Duration(-1)
	for w, s := range serves {
		if !s {
			continue
		}
		start := time.Duration(w) * window
		switch {
		case lastEnd >= 0:
			cost += min(start-lastEnd, cold)
		case warm:
			cost += min(start, cold)
		default:
			cost += cold
		}
		cost += window
		lastEnd = start + window
	}
	return cost
}

// planFor turns window counts into the cheapest replica plan (see the
// package comment above) and its replica time.
func planFor(needs []int32, window, cold time.Duration, initial int32) ([]PlanStep, time.Duration) {
	top := initial
	for _, n := range needs {
		top = max(top, n)
	}
	end := time.Duration(len(needs)) * window
	// delta[t] is the count change at t.
	delta := map[time.Duration]int32{}
	var total time.Duration
	for k := int32(1); k <= top; k++ {
		warm := k <= initial
		alive := warm
		var lastEnd time.Duration
		if warm {
			delta[0]++
		}
		for w, n := range needs {
			if n < k {
				continue
			}
			start := time.Duration(w) * window
			if alive {
				if lastEnd < start && start-lastEnd > cold {
					// Cheaper to remove it and create it again.
					delta[lastEnd]--
					delta[start-cold]++
					total += cold
				} else {
					total += start - lastEnd
				}
			} else {
				delta[start-cold]++
				total += cold
				alive = true
			}
			total += window
			lastEnd = start + window
		}
		if alive {
			if lastEnd == 0 && warm {
				// A warm level no window needs: removed at once.
				delta[0]--
				continue
			}
			delta[lastEnd]--
		}
	}
	var times []time.Duration
	for t, d := range delta {
		if d != 0 {
			times = append(times, t)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	var plan []PlanStep
	var n int32
	for _, t := range times {
		n += delta[t]
		if t >= end || n < 1 {
			// Keep one replica to the end: the simulator bills until the
			// last request finishes, and a Deployment does not go to 0
			// here (minReplicaCount 1).
			continue
		}
		if len(plan) > 0 && plan[len(plan)-1].At == t {
			plan[len(plan)-1].Replicas = n
		} else {
			plan = append(plan, PlanStep{At: t, Replicas: n})
		}
	}
	if len(plan) == 0 || plan[0].At != 0 {
		plan = append([]PlanStep{{At: 0, Replicas: max(1, initial)}}, plan...)
	}
	return plan, total
}

// chooseNeeds picks a count per window whose misses fit budget, greedily
// adding the replicas that save the most misses per replica time (the
// extra time levelCost charges for them).
func chooseNeeds(curves []WindowCurve, budget int, window, cold time.Duration, initial int32) []int32 {
	needs := make([]int32, len(curves))
	total := 0
	for w, c := range curves {
		needs[w] = 1
		// Before one cold start has passed only the warm replicas serve.
		if time.Duration(w)*window < cold {
			needs[w] = min(max(1, initial), int32(len(c.Misses)))
		}
		total += c.Misses[needs[w]-1]
	}
	// levelExtra is the replica time window w adds to level k.
	serves := make([]bool, len(needs))
	levelExtra := func(w int, k int32) time.Duration {
		for i, x := range needs {
			serves[i] = x >= k
		}
		was := levelCost(serves, window, cold, k <= initial)
		serves[w] = true
		return levelCost(serves, window, cold, k <= initial) - was
	}
	for total > budget {
		bestW, bestN, bestRatio := -1, int32(0), 0.0
		for w, c := range curves {
			cur := needs[w]
			capN := int32(len(c.Misses))
			if time.Duration(w)*window < cold {
				capN = min(capN, max(1, initial))
			}
			// Every count up to the curve's end: a curve can be flat
			// for several counts (a backlog no count near it clears)
			// and then drop.
			var cost time.Duration
			for n := cur + 1; n <= capN; n++ {
				cost += levelExtra(w, n)
				saved := c.Misses[cur-1] - c.Misses[n-1]
				if saved <= 0 {
					continue
				}
				ratio := float64(saved) / math.Max(float64(cost), 1)
				if ratio > bestRatio {
					bestW, bestN, bestRatio = w, n, ratio
				}
			}
		}
		if bestW < 0 {
			break // no window can save more: the budget is out of reach
		}
		total -= curves[bestW].Misses[needs[bestW]-1] - curves[bestW].Misses[bestN-1]
		needs[bestW] = bestN
	}
	// The greedy can overshoot: a step taken early may be unneeded once
	// a larger one was taken. Give back the counts whose misses still fit,
	// the most replica time first.
	for {
		bestW, bestN, bestSave := -1, int32(0), time.Duration(0)
		for w, c := range curves {
			for n := int32(1); n < needs[w]; n++ {
				extra := c.Misses[n-1] - c.Misses[needs[w]-1]
				if total+extra > budget {
					continue
				}
				var save time.Duration
				for k := n + 1; k <= needs[w]; k++ {
					for i, x := range needs {
						serves[i] = x >= k
					}
					was := levelCost(serves, window, cold, k <= initial)
					serves[w] = false
					save += was - levelCost(serves, window, cold, k <= initial)
				}
				if save > bestSave {
					bestW, bestN, bestSave = w, n, save
				}
				break // the lowest count that fits saves the most
			}
		}
		if bestW < 0 {
			return needs
		}
		total += curves[bestW].Misses[bestN-1] - curves[bestW].Misses[needs[bestW]-1]
		needs[bestW] = bestN
	}
}

// ClairvoyantBound computes the bound for reqs with windows of length
// window, starting warm with cfg.Initial replicas, and replays its plan.
func ClairvoyantBound(ctx context.Context, cfg Config, reqs []Request, window time.Duration) (*Bound, error) {
	curves, err := MissCurves(ctx, cfg, reqs, window, window)
	if err != nil {
		return nil, err
	}
	return boundFrom(ctx, cfg, reqs, window, curves)
}

// boundFrom runs steps 2-4 on given miss curves.
func boundFrom(ctx context.Context, cfg Config, reqs []Request, window time.Duration, curves []WindowCurve) (*Bound, error) {
	cfg.Timeline = 0
	full := int(math.Floor((1 - cfg.Goal) * float64(len(reqs))))
	b := &Bound{Window: window, ColdStart: cfg.Model.ColdStart, Initial: max(1, cfg.Initial), Goal: cfg.Goal, FullBudget: full}
	replay := func(budget int, needs []int32) error {
		b.Tries++
		plan, cost := planFor(needs, window, cfg.Model.ColdStart, b.Initial)
		rcfg := cfg
		rcfg.Plan = plan
		r, err := Run(ctx, rcfg, reqs, Setting{Policy: PolicySchedule})
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		if b.Tries == 1 {
			b.OptimisticGPUHours, b.OptimisticAttainment = cost.Hours(), r.Attainment
		}
		b.Budget, b.Needs, b.Plan, b.PlanGPUHours, b.Replay = budget, needs, plan, cost.Hours(), r
		b.Expected, b.Missed = b.Expected[:0], b.Missed[:0]
		for w, c := range curves {
			// Past the curve's end (a repaired window) the misses stay at its last.
			b.Expected = append(b.Expected, c.Misses[min(int(needs[w]), len(c.Misses))-1])
			lo := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= c.Start })
			b.Missed = append(b.Missed, r.missesFrom(lo)-r.missesFrom(lo+c.Requests))
		}
		return nil
	}
	for budget := full; ; budget = budget * 9 / 10 {
		if err := replay(budget, chooseNeeds(curves, budget, window, cfg.Model.ColdStart, b.Initial)); err != nil {
			return nil, err
		}
		if b.Replay.Attainment >= cfg.Goal {
			return b, nil
		}
		if budget == 0 {
			break
		}
	}
	// Even windows with no miss of their own miss in the replay: the
	// backlog an earlier window left. Add a replica to each window that
	// missed more than its curve said, until the replay reaches the goal
	// or no window can grow (the ones before one cold start are at the
	// warm count).
	for range maxRepairs {
		needs := slices.Clone(b.Needs)
		grown := false
		for w := range needs {
			capN := cfg.Max
			if time.Duration(w)*window < cfg.Model.ColdStart {
				capN = b.Initial
			}
			if b.Missed[w] > b.Expected[w] && needs[w] < capN {
				needs[w]++
				grown = true
			}
		}
		if !grown {
			break
		}
		if err := replay(0, needs); err != nil {
			return nil, err
		}
		if b.Replay.Attainment >= cfg.Goal {
			break
		}
	}
	return b, nil
}

// maxRepairs bounds the rounds that grow windows after the replay.
const maxRepairs = 20

// WriteBound prints the bound against a baseline's GPU-hours (0: none).
func WriteBound(w io.Writer, b *Bound, baseline *Result) error {
	peak := int32(0)
	for _, n := range b.Needs {
		peak = max(peak, n)
	}
	_, err := fmt.Fprintf(w, "clairvoyant bound (%s windows, cold start %s, start %d warm): replay %.2f%% in SLO with %.3f GPU-h, peak %d replicas, %d plan steps; miss budget %d of %d (%d tries); first plan (full budget) %.3f GPU-h at %.2f%%\n",
		b.Window, b.ColdStart, b.Initial, 100*b.Replay.Attainment, b.Replay.GPUHours, peak, len(b.Plan), b.Budget, b.FullBudget, b.Tries,
		b.OptimisticGPUHours, 100*b.OptimisticAttainment)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "bound's count per window: %v\nmisses expected per window: %v\nmissed in the replay:      %v\n", b.Needs, b.Expected, b.Missed); err != nil {
		return err
	}
	if baseline == nil {
		return nil
	}
	note := ""
	if b.Replay.Attainment < b.Goal {
		note = fmt.Sprintf(" (but no plan reached the %.0f%% goal)", 100*b.Goal)
	}
	_, err = fmt.Fprintf(w, "bound / cheapest baseline at the goal (%s, %.2f%%, %.3f GPU-h): %.2fx%s\n",
		baseline.Setting, 100*baseline.Attainment, baseline.GPUHours, b.Replay.GPUHours/baseline.GPUHours, note)
	return err
}
