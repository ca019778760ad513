// Package gpupreempt is kubegpu's preemption plugin (PostFilter). It runs
// kube-scheduler's own preemption machinery (the Evaluator and Executor
// of DefaultPreemption: candidate nodes, PDBs, preemptionPolicy, async
// eviction) with a victim choice that knows GPUs and gangs:
//
//   - on each node it frees the GPU set the preemptor would use, of the
//     best interconnect tier preemption can reach there, evicting the
//     fewest and lowest-priority pods that free it;
//   - a member of a kubegpu gang is a victim only with its whole gang
//     (the gang counts with its highest member priority and all its pods);
//   - a gang preemptor is placed whole in a dry run first: either all
//     its members fit after the evictions, or nobody is evicted.
//
// GPUPack answers the GPU questions (its PreFilterExtensions keep the
// dry runs' GPU usage per cycle). See docs/preemption.md.
package gpupreempt

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	policy "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/defaultpreemption"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/preemption"
	"k8s.io/kubernetes/pkg/scheduler/util"

	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
)

// Name is the plugin's name in KubeSchedulerConfiguration.
const Name = "GPUPreempt"

// staleRetry is how long a pod blocked only by GPU bookings of deleted
// pods waits before it is tried again.
const staleRetry = 250 * time.Millisecond

// Event reasons.
const (
	// EventPreempting is on the preemptor: which pods go and which GPUs
	// that frees.
	EventPreempting = "GPUPreempting"
	// EventPreempted is on each victim: which GPUs it gives up and for
	// whom.
	EventPreempted = "GPUPreempted"
	// EventGangNoRoom is on a gang preemptor whose gang cannot be placed
	// whole even with preemption: nobody is evicted.
	EventGangNoRoom = "GangPreemptionNotPossible"
)

// Plugin implements PostFilter with the preemption Evaluator.
type Plugin struct {
	fh   fwk.Handle
	dp   *defaultpreemption.DefaultPreemption
	ev   *preemption.Evaluator
	pods corelisters.PodLister
	jobs batchlisters.JobLister
	pdbs policylisters.PodDisruptionBudgetLister

	mu sync.Mutex
	// cur is the PostFilter call in progress (PostFilter runs one pod
	// at a time; its dry runs run in parallel and read it).
	cur *cycle
	// gangs holds, per gang key, the last gang preemption while its
	// victims are not all gone: the gang's members wait for them instead
	// of evicting more.
	gangs map[string]*gangPreemption
}

// gangPreemption is a gang preemption in progress.
type gangPreemption struct {
	// victims are the evicted pods not gone yet.
	victims map[types.UID]*v1.Pod
	// nodes is where the dry run placed each member: a member that waits
	// keeps its nomination there, so the freed GPUs stay booked for it.
	nodes map[types.UID]string
}

var (
	_ fwk.PostFilterPlugin         = (*Plugin)(nil)
	_ fwk.PreEnqueuePlugin         = (*Plugin)(nil)
	_ fwk.EnqueueExtensions        = (*Plugin)(nil)
	_ preemption.Interface         = (*Plugin)(nil)
	_ preemption.Victim            = (*unit)(nil)
	_ preemption.Candidate         = (*candidate)(nil)
	_ preemption.ExecutorPreemptor = (*gangPreemptor)(nil)
)

// New is the plugin factory. It takes no arguments: candidate-node limits
// are DefaultPreemption's defaults (10% of nodes, at least 100).
func New(ctx context.Context, _ runtime.Object, fh fwk.Handle) (fwk.Plugin, error) {
	fts := feature.NewSchedulerFeaturesFromGates(utilfeature.DefaultFeatureGate)
	args := &config.DefaultPreemptionArgs{MinCandidateNodesPercentage: 10, MinCandidateNodesAbsolute: 100}
	dp, err := defaultpreemption.New(ctx, args, fh, fts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	pl := &Plugin{
		fh:    fh,
		dp:    dp,
		pods:  fh.SharedInformerFactory().Core().V1().Pods().Lister(),
		jobs:  fh.SharedInformerFactory().Batch().V1().Jobs().Lister(),
		pdbs:  fh.SharedInformerFactory().Policy().V1().PodDisruptionBudgets().Lister(),
		gangs: map[string]*gangPreemption{},
	}
	pl.ev = preemption.NewEvaluator(Name, fh, pl, dp.Executor)
	evict := dp.Executor.PreemptPod
	dp.Executor.PreemptPod = func(ctx context.Context, c preemption.Candidate, preemptor preemption.ExecutorPreemptor, victim *v1.Pod, pluginName string) (bool, error) {
		// Read the victim's GPUs before the eviction: once the informer
		// sees it gone, GPUPack forgets them.
		held := pl.heldGPUs(victim.UID)
		inMemory, err := evict(ctx, c, preemptor, victim, pluginName)
		if err == nil {
			fh.EventRecorder().Eventf(victim, preemptor.Obj(), v1.EventTypeNormal, EventPreempted, "Preempting", "%s",
				note("evicted for %s %s/%s (priority %d) on node %s: frees GPUs %s", preemptor.Type(), preemptor.GetNamespace(), preemptor.GetName(),
					preemptor.Priority(), c.Name(), held))
		}
		return inMemory, err
	}
	return pl, nil
}

// Name returns the plugin name.
func (pl *Plugin) Name() string { return Name }

func (pl *Plugin) gpus() *gpupack.Plugin {
	p, err := gpupack.Lookup(pl.fh)
	if err != nil {
		return nil // no GPUPack in this profile: plain priority preemption
	}
	return p
}

func (pl *Plugin) heldGPUs(uid types.UID) string {
	gp := pl.gpus()
	if gp == nil {
		return "none known"
	}
	_, uuids, milli, unnamed := gp.HeldGPUs(uid)
	return describeGPUs(uuids, milli, unnamed)
}

// maxNote keeps event notes under the API's 1 KiB limit (longer events
// are rejected and lost).
const maxNote = 1000

func note(format string, args ...any) string {
	s := fmt.Sprintf(format, args...)
	if len(s) > maxNote {
		s = s[:maxNote-3] + "..."
	}
	return s
}

func describeGPUs(uuids []string, milli, unnamed int) string {
	var parts []string
	for _, u := range uuids {
		if milli > 0 {
			u = fmt.Sprintf("%s (%d/1000)", u, milli)
		}
		parts = append(parts, u)
	}
	if unnamed > 0 {
		parts = append(parts, fmt.Sprintf("%d unnamed", unnamed))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// PreEnqueue and EventsToRegister are DefaultPreemption's: a pod whose
// victims are still being evicted asynchronously waits.
func (pl *Plugin) PreEnqueue(ctx context.Context, p *v1.Pod) *fwk.Status {
	return pl.dp.PreEnqueue(ctx, p)
}

// EventsToRegister returns DefaultPreemption's events.
func (pl *Plugin) EventsToRegister(ctx context.Context) ([]fwk.ClusterEventWithHint, error) {
	return pl.dp.EventsToRegister(ctx)
}

// cycle is what one PostFilter call learns, shared by its dry runs.
type cycle struct {
	gp *gpupack.Plugin
	// gangs are the kubegpu gangs' members on nodes (bound or assumed).
	gangs map[string][]fwk.PodInfo
	mu    sync.Mutex
	plans map[string]*plan
	// stale is set when a node's only obstacle was GPU bookings of pods
	// already deleted (GPUPack's informer handler runs behind the
	// scheduler's cache for a moment).
	stale atomic.Bool
}

func (c *cycle) setPlan(node string, p *plan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.plans[node] = p
}

func (c *cycle) plan(node string) *plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plans[node]
}

func (pl *Plugin) newCycle() (*cycle, error) {
	c := &cycle{gp: pl.gpus(), gangs: map[string][]fwk.PodInfo{}, plans: map[string]*plan{}}
	infos, err := pl.fh.SnapshotSharedLister().NodeInfos().List()
	if err != nil {
		return nil, fmt.Errorf("%s: list nodes: %w", Name, err)
	}
	for _, ni := range infos {
		for _, pi := range ni.GetPods() {
			if key, ok := gang.KeyOf(pi.GetPod()); ok {
				c.gangs[key] = append(c.gangs[key], pi)
			}
		}
	}
	return c, nil
}

func (pl *Plugin) cycle() *cycle {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.cur
}

// PostFilter preempts for a pod no node fits: a gang member preempts for
// its whole gang, any other pod through the Evaluator.
func (pl *Plugin) PostFilter(ctx context.Context, state fwk.CycleState, pod *v1.Pod, m fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	c, err := pl.newCycle()
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	pl.mu.Lock()
	pl.cur = c
	pl.mu.Unlock()
	defer func() {
		pl.mu.Lock()
		pl.cur = nil
		pl.mu.Unlock()
	}()

	id, inGang, err := gang.Identify(pod, pl.jobs)
	if err != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, "preemption: "+err.Error())
	}
	if inGang && id.Size > 1 {
		res, st := pl.preemptForGang(ctx, c, state, pod, id, m)
		pl.retryIfStale(ctx, c, pod, st)
		return res, prefixed(st)
	}
	res, st := pl.ev.Preempt(ctx, state, pod, m)
	pl.retryIfStale(ctx, c, pod, st)
	if st.IsSuccess() && res != nil && res.NominatingInfo != nil {
		if p := c.plan(res.NominatedNodeName); p != nil {
			pl.fh.EventRecorder().Eventf(pod, nil, v1.EventTypeNormal, EventPreempting, "Preempting", "%s", note("%s", p.describe(res.NominatedNodeName)))
		}
	}
	return res, prefixed(st)
}

// retryIfStale wakes the pod shortly when preemption found it blocked
// only by GPU bookings of deleted pods: the deletions that requeued it may
// reach GPUPack after this cycle, and no later event would wake it.
func (pl *Plugin) retryIfStale(ctx context.Context, c *cycle, pod *v1.Pod, st *fwk.Status) {
	if st.IsSuccess() || !c.stale.Load() {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	logger := klog.FromContext(ctx)
	time.AfterFunc(staleRetry, func() { pl.fh.Activate(logger, map[string]*v1.Pod{key: pod}) })
}

func prefixed(st *fwk.Status) *fwk.Status {
	if msg := st.Message(); msg != "" {
		return fwk.NewStatus(st.Code(), "preemption: "+msg)
	}
	return st
}

// GetOffsetAndNumCandidates is DefaultPreemption's.
func (pl *Plugin) GetOffsetAndNumCandidates(nodes int32) (int32, int32) {
	return pl.dp.GetOffsetAndNumCandidates(nodes)
}

// CandidatesToVictimsMap is DefaultPreemption's.
func (pl *Plugin) CandidatesToVictimsMap(candidates []preemption.Candidate) map[string]*extenderv1.Victims {
	return pl.dp.CandidatesToVictimsMap(candidates)
}

// PodEligibleToPreemptOthers is DefaultPreemption's: preemptionPolicy
// Never never preempts, and a pod whose nominated node still has victims
// terminating waits for them.
func (pl *Plugin) PodEligibleToPreemptOthers(ctx context.Context, pod *v1.Pod, nominatedNodeStatus *fwk.Status) (bool, string) {
	return pl.dp.PodEligibleToPreemptOthers(ctx, pod, nominatedNodeStatus)
}

// SelectVictimsOnNode chooses the victims on one node (see selectOnNode).
func (pl *Plugin) SelectVictimsOnNode(ctx context.Context, state fwk.CycleState, preemptor *v1.Pod, nodeInfo fwk.NodeInfo,
	allPossibleVictims []*preemption.DomainVictim, pdbs []*policy.PodDisruptionBudget) ([]*v1.Pod, int, *fwk.Status) {
	c := pl.cycle()
	if c == nil {
		return nil, 0, fwk.AsStatus(fmt.Errorf("%s: dry run outside PostFilter", Name))
	}
	units := pl.units(c, preemptor, allPossibleVictims, nil)
	if len(units) == 0 {
		return nil, 0, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "No preemption victims found for incoming pod")
	}
	r, st := pl.selectOnNode(ctx, c, state, preemptor, nodeInfo, false, units, pdbs)
	if !st.IsSuccess() {
		return nil, 0, st
	}
	c.setPlan(nodeInfo.Node().Name, r)
	return r.pods(), r.violating, nil
}

// OrderedScoreFuncs ranks candidate nodes: fewest PDB violations, then
// the best interconnect tier of the preemptor's set, then DefaultPreemption's
// order (lowest highest victim priority, lowest priority sum, fewest
// victims), then the better set, then the most recently started victims.
func (pl *Plugin) OrderedScoreFuncs(_ context.Context, nodesToVictims map[string]*extenderv1.Victims) []func(node string) int64 {
	c := pl.cycle()
	planOf := func(node string) *plan {
		if c == nil {
			return nil
		}
		return c.plan(node)
	}
	return []func(string) int64{
		func(n string) int64 { return -nodesToVictims[n].NumPDBViolations },
		func(n string) int64 {
			if p := planOf(n); p != nil {
				return int64(p.tier)
			}
			return 0
		},
		func(n string) int64 {
			if p := planOf(n); p != nil {
				return -int64(p.maxPriority)
			}
			return -int64(maxPriority(nodesToVictims[n].Pods))
		},
		func(n string) int64 {
			var sum int64
			for _, p := range nodesToVictims[n].Pods {
				sum += int64(corev1helpers.PodPriority(p)) + int64(math.MaxInt32+1)
			}
			return -sum
		},
		func(n string) int64 { return -int64(len(nodesToVictims[n].Pods)) },
		func(n string) int64 {
			if p := planOf(n); p != nil {
				return int64(p.quality.Worst)*1_000_000 + int64(p.quality.Sum)
			}
			return 0
		},
		func(n string) int64 {
			if t := util.GetEarliestPodStartTime(nodesToVictims[n]); t != nil {
				return t.UnixNano()
			}
			return math.MinInt64
		},
	}
}

func maxPriority(pods []*v1.Pod) int32 {
	m := int32(math.MinInt32)
	for _, p := range pods {
		m = max(m, corev1helpers.PodPriority(p))
	}
	return m
}

// sortPods orders victims by decreasing priority, as the Evaluator and
// extenders expect.
func sortPods(pods []*v1.Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		return corev1helpers.PodPriority(pods[i]) > corev1helpers.PodPriority(pods[j])
	})
}
