package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Workload is the protocol's arrival order for one seed: the trace's pods
// sorted by name and shuffled with the seed, then clones drawn uniformly
// from the name-sorted originals until the next clone's GPU request would
// take the summed request past inflate x capacity.
func Workload(pods []Pod, seed uint64, inflate float64, capacityMilli int64) []Pod {
	sorted := slices.Clone(pods)
	slices.SortStableFunc(sorted, func(a, b Pod) int { return strings.Compare(a.Name, b.Name) })
	rng := rand.New(rand.NewPCG(seed, 0))
	out := slices.Clone(sorted)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	limit := int64(math.Round(inflate * float64(capacityMilli)))
	total := int64(0)
	for _, p := range out {
		total += p.GPURequest()
	}
	hasGPU := slices.ContainsFunc(sorted, func(p Pod) bool { return p.GPURequest() > 0 })
	for hasGPU {
		c := sorted[rng.IntN(len(sorted))]
		if total+c.GPURequest() > limit {
			break
		}
		total += c.GPURequest()
		c.Name = fmt.Sprintf("%s-clone-%d", c.Name, len(out))
		out = append(out, c)
	}
	return out
}

// Result is one seed's run of one policy.
type Result struct {
	Policy string
	Seed   uint64
	// Curve[x] is the mean allocated % of capacity over the pods whose
	// arrived %, rounded, is x.
	Curve         []float64
	Pods, Failed  int
	CapacityMilli int64
	UsedMilli     int64 // at the end (arrived = inflate x capacity)
	// Diag breaks down the free capacity when arrived demand first
	// reaches capacity (nil if it never does).
	Diag *Diagnosis
}

// Progress is told how far a run is; nil for none.
type Progress func(policy string, seed uint64, done, total int)

// Run replays the trace with one policy and seed.
func Run(ctx context.Context, nodes []Node, pods []Pod, policy string, seed uint64, inflate float64, progress Progress) (*Result, error) {
	c := NewCluster(nodes)
	work := Workload(pods, seed, inflate, c.CapacityMilli())
	pol, err := NewPolicy(policy, &Env{Cluster: c, Trace: pods, Seed: seed})
	if err != nil {
		return nil, err
	}
	points := int(math.Round(100*inflate)) + 1
	sum := make([]float64, points)
	cnt := make([]int, points)
	res := &Result{Policy: policy, Seed: seed, Pods: len(work), CapacityMilli: c.CapacityMilli()}
	arrived := int64(0)
	diag := &Diagnosis{}
	for k := range work {
		if k%512 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if progress != nil {
				progress(policy, seed, k, len(work))
			}
		}
		p := &work[k]
		arrived += p.GPURequest()
		if res.Diag == nil {
			diag.arrive(p)
		}
		node, gpus, ok, err := pol.Place(ctx, p, k)
		if err != nil {
			return nil, fmt.Errorf("%s seed %d pod %s: %w", policy, seed, p.Name, err)
		}
		if ok {
			if !c.valid(node, p, gpus) {
				return nil, fmt.Errorf("%s seed %d pod %s: policy chose an infeasible placement: node %d gpus %v", policy, seed, p.Name, node, gpus)
			}
			c.bind(node, p, gpus)
		} else {
			res.Failed++
			if res.Diag == nil {
				diag.failed(c, p)
			}
		}
		if res.Diag == nil && arrived >= c.CapacityMilli() {
			diag.snapshot(c, gpuShapes(pods))
			res.Diag = diag
		}
		x := int(math.Round(100 * float64(arrived) / float64(c.CapacityMilli())))
		if x >= 0 && x < points {
			sum[x] += 100 * float64(c.UsedMilli()) / float64(c.CapacityMilli())
			cnt[x]++
		}
	}
	if progress != nil {
		progress(policy, seed, len(work), len(work))
	}
	res.Curve = curve(sum, cnt)
	res.UsedMilli = c.UsedMilli()
	return res, nil
}

// curve averages the buckets; a bucket no pod landed in (one large pod
// can jump past a whole percent) takes the previous point's value, as the
// allocation did not change in between.
func curve(sum []float64, cnt []int) []float64 {
	out := make([]float64, len(sum))
	for x := range sum {
		switch {
		case cnt[x] > 0:
			out[x] = sum[x] / float64(cnt[x])
		case x > 0:
			out[x] = out[x-1]
		}
	}
	return out
}

// Summary is a policy's results averaged over seeds.
type Summary struct {
	Policy          string
	Seeds           []uint64
	Curve           []float64
	AllocAt100      float64
	AllocAtEnd      float64 // at inflate x 100 (130 by default)
	Runs            []*Result
	UnallocatedGPUs float64 // free GPU capacity at the end, in GPUs
	Failed          float64 // pods that fit nowhere
}

// Summarize averages one policy's runs.
func Summarize(rs []*Result) Summary {
	s := Summary{Policy: rs[0].Policy, Runs: rs}
	s.Curve = make([]float64, len(rs[0].Curve))
	for _, r := range rs {
		s.Seeds = append(s.Seeds, r.Seed)
		for x, v := range r.Curve {
			s.Curve[x] += v / float64(len(rs))
		}
		s.UnallocatedGPUs += float64(r.CapacityMilli-r.UsedMilli) / FullGPU / float64(len(rs))
		s.Failed += float64(r.Failed) / float64(len(rs))
	}
	if len(s.Curve) > 100 {
		s.AllocAt100 = s.Curve[100]
	}
	s.AllocAtEnd = s.Curve[len(s.Curve)-1]
	return s
}

// RunAll runs every policy x seed, seeds in parallel up to GOMAXPROCS,
// and returns the summaries in the order of policies.
func RunAll(ctx context.Context, nodes []Node, pods []Pod, policies []string, seeds []uint64, inflate float64, progress Progress) ([]Summary, error) {
	for _, p := range policies {
		if !slices.Contains(PolicyNames(), p) {
			return nil, fmt.Errorf("unknown policy %q (known: %s)", p, strings.Join(PolicyNames(), ", "))
		}
	}
	results := make([][]*Result, len(policies))
	for i := range results {
		results[i] = make([]*Result, len(seeds))
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	var mu sync.Mutex
	safe := progress
	if progress != nil {
		safe = func(policy string, seed uint64, done, total int) {
			mu.Lock()
			defer mu.Unlock()
			progress(policy, seed, done, total)
		}
	}
	for i, pol := range policies {
		for j, seed := range seeds {
			g.Go(func() error {
				r, err := Run(ctx, nodes, pods, pol, seed, inflate, safe)
				if err != nil {
					return err
				}
				results[i][j] = r
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]Summary, len(policies))
	for i := range policies {
		out[i] = Summarize(results[i])
	}
	return out, nil
}
