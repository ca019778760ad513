package gpupreempt

import (
	"context"
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	policy "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/preemption"

	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
)

// candidate is a node and its victims, for the Executor.
type candidate struct {
	name    string
	victims *extenderv1.Victims
}

func (c *candidate) Victims() *extenderv1.Victims { return c.victims }
func (c *candidate) Name() string                 { return c.name }
func (c *candidate) NumPodGroupDisruptions() int  { return 0 }

// gangPreemptor presents a kubegpu gang to the Executor as the preemptor.
type gangPreemptor struct {
	pod     *v1.Pod // the member whose cycle runs the preemption
	key     string
	members []*v1.Pod
}

func (g *gangPreemptor) UID() types.UID        { return g.pod.UID }
func (g *gangPreemptor) SchedulerName() string { return g.pod.Spec.SchedulerName }
func (g *gangPreemptor) GetName() string       { return g.pod.Name }
func (g *gangPreemptor) GetNamespace() string  { return g.pod.Namespace }
func (g *gangPreemptor) Obj() runtime.Object   { return g.pod }
func (g *gangPreemptor) Priority() int32       { return corev1helpers.PodPriority(g.pod) }
func (g *gangPreemptor) Type() string          { return "pod (gang " + g.key + ")" }
func (g *gangPreemptor) Pods() map[string]*v1.Pod {
	m := make(map[string]*v1.Pod, len(g.members))
	for _, p := range g.members {
		m[p.Name] = p
	}
	return m
}

// preemptForGang places the gang's unplaced members one after another in
// a dry run, each on the node where it fits without evictions or else
// where the evictions rank best (selectOnNode), with earlier members and
// evictions carried forward. Only when every member is placed are the
// victims evicted; the running member is nominated to its node and the
// others in the scheduler's nominator. Members are assumed to ask for
// what the running member asks (the Gang plugin assumes it too).
func (pl *Plugin) preemptForGang(ctx context.Context, c *cycle, state fwk.CycleState, pod *v1.Pod, id gang.Identity, m fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	logger := klog.FromContext(ctx)
	if ok, msg := pl.dp.PodEligibleToPreemptOthers(ctx, pod, m.Get(pod.Status.NominatedNodeName)); !ok {
		return nil, fwk.NewStatus(fwk.Unschedulable, msg)
	}
	if n, node := pl.gangWaiting(id.Key, pod.UID); n > 0 {
		st := fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("gang %s: waiting for %d evicted pod(s) to go", id.Key, n))
		if node == "" {
			return nil, st
		}
		// Without a nominating result the scheduler drops the member's
		// nomination (the nominator keeps only what the pod's status
		// names), and the GPUs freed for it would be open to others.
		return framework.NewPostFilterResultWithNominatedNode(node), st
	}
	placed := len(c.gangs[id.Key])
	need := id.Size - placed
	pending, err := pl.pendingMembers(pod, id.Key, c)
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	if need <= 0 {
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("gang %s has all %d members placed", id.Key, id.Size))
	}
	if len(pending) < need {
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("gang %s: %d of %d members exist unplaced, %d needed; not preempting for a partial gang", id.Key, len(pending), id.Size, need))
	}
	pending = pending[:need]

	infos, err := pl.fh.SnapshotSharedLister().NodeInfos().List()
	if err != nil {
		return nil, fwk.AsStatus(fmt.Errorf("%s: list nodes: %w", Name, err))
	}
	pdbs, err := pl.pdbs.List(labels.Everything())
	if err != nil {
		return nil, fwk.AsStatus(fmt.Errorf("%s: list PodDisruptionBudgets: %w", Name, err))
	}
	sims := map[string]*sim{}
	byName := map[string]fwk.NodeInfo{}
	for _, ni := range infos {
		byName[ni.Node().Name] = ni
	}
	var simOf func(string) *sim
	simOf = func(n string) *sim {
		if s, ok := sims[n]; ok {
			return s
		}
		ni, ok := byName[n]
		if !ok {
			return nil
		}
		s := &sim{state: state.Clone(), ni: ni.Snapshot(), main: n, nominatedIn: true}
		s.remote = func(r string) fwk.NodeInfo {
			if rs := simOf(r); rs != nil {
				return rs.ni
			}
			return nil
		}
		sims[n] = s
		return s
	}
	stale := 0
	for _, ni := range infos {
		s := simOf(ni.Node().Name)
		// Every view holds the nominated pods that count against the
		// gang: those of equal or higher priority, less the gang's own
		// members. The dry run places those members anew; counting their
		// nominations from an earlier preemption as well would book them
		// twice and evict for room they already have.
		if err := pl.addNominated(ctx, s, pod, id.Key); err != nil {
			return nil, fwk.AsStatus(err)
		}
		n, err := pl.dropStale(ctx, c, s, pod)
		if err != nil {
			return nil, fwk.AsStatus(err)
		}
		stale += n
	}
	evicted := map[types.UID]bool{}
	var victims []*unit
	assign := map[string]string{} // member name -> node
	var details []string
	for i, member := range pending {
		nodeName, chosen, st := pl.placeMember(ctx, c, sims, infos, pod, evicted, pdbs)
		if !st.IsSuccess() {
			msg := fmt.Sprintf("gang %s: preemption can place %d of the %d members it needs (%s); evicting nobody", id.Key, i, need, st.Message())
			if len(victims) > 0 || st.Code() != fwk.UnschedulableAndUnresolvable {
				// Only when there was something to evict: a gang among
				// equals simply waits, as without preemption.
				pl.fh.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, EventGangNoRoom, "Preempting", "%s", note("%s", msg))
			}
			logger.V(2).Info("Gang preemption not possible", "gang", id.Key, "placed", i, "needed", need)
			return nil, fwk.NewStatus(fwk.Unschedulable, msg)
		}
		for _, u := range chosen {
			for _, pi := range u.pods {
				evicted[pi.GetPod().UID] = true
			}
			// Evict for real in every node's view, not only this one.
			for _, pi := range u.pods {
				if s := simOf(pi.GetPod().Spec.NodeName); s != nil {
					one := &unit{pods: []fwk.PodInfo{pi}}
					if err := pl.remove(ctx, &sim{state: s.state, ni: s.ni, main: s.main, remote: s.remote}, pod, one); err != nil {
						return nil, fwk.AsStatus(err)
					}
				}
			}
			victims = append(victims, u)
		}
		// The member now holds its place in the chosen node's view.
		s := sims[nodeName]
		placedPod := member.DeepCopy()
		placedPod.Spec.NodeName = nodeName
		pi, err := framework.NewPodInfo(placedPod)
		if err != nil {
			return nil, fwk.AsStatus(err)
		}
		s.ni.AddPodInfo(pi)
		if st := pl.fh.RunPreFilterExtensionAddPod(ctx, s.state, pod, pi, s.ni); !st.IsSuccess() {
			return nil, st
		}
		assign[member.Name] = nodeName
		if len(chosen) > 0 {
			if p := c.plan(nodeName); p != nil {
				details = append(details, fmt.Sprintf("on %s %d pod(s) free %s", nodeName, p.npods, p.freed))
			}
		}
	}
	if len(victims) == 0 {
		// Everything fits without evictions: nothing to preempt, the
		// members only wait for their turn (or for GPUPack to see pods
		// already deleted).
		if stale > 0 {
			c.stale.Store(true)
		}
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("gang %s fits without preemption", id.Key))
	}

	// Actuate: evict every victim, node by node, through the Executor.
	var pods []*v1.Pod
	byNode := map[string][]*v1.Pod{}
	for _, u := range victims {
		for _, pi := range u.pods {
			v := pi.GetPod()
			pods = append(pods, v)
			byNode[v.Spec.NodeName] = append(byNode[v.Spec.NodeName], v)
		}
	}
	pre := &gangPreemptor{pod: pod, key: id.Key, members: pending}
	left := map[types.UID]*v1.Pod{}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		cand := &candidate{name: n, victims: &extenderv1.Victims{Pods: byNode[n]}}
		for _, v := range byNode[n] {
			if v.DeletionTimestamp != nil {
				continue
			}
			if _, err := pl.dp.Executor.PreemptPod(ctx, cand, pre, v, Name); err != nil {
				return nil, fwk.AsStatus(fmt.Errorf("%s: evict %s: %w", Name, klog.KObj(v), err))
			}
			left[v.UID] = v
		}
	}
	placedOn := make(map[types.UID]string, len(pending))
	for _, member := range pending {
		placedOn[member.UID] = assign[member.Name]
	}
	pl.mu.Lock()
	pl.gangs[id.Key] = &gangPreemption{victims: left, nodes: placedOn}
	pl.mu.Unlock()
	for _, member := range pending {
		if member.UID == pod.UID {
			continue
		}
		pi, err := framework.NewPodInfo(member)
		if err != nil {
			continue
		}
		pl.fh.AddNominatedPod(logger, pi, &fwk.NominatingInfo{NominatedNodeName: assign[member.Name], NominatingMode: fwk.ModeOverride})
	}
	pl.fh.EventRecorder().Eventf(pod, nil, v1.EventTypeNormal, EventPreempting, "Preempting", "%s",
		note("gang %s: evicting %d pod(s) places all %d unplaced members: %s", id.Key, len(pods), need, strings.Join(details, "; ")))
	logger.V(2).Info("Gang preemption", "gang", id.Key, "members", need, "victims", len(pods))
	return framework.NewPostFilterResultWithNominatedNode(assign[pod.Name]), fwk.NewStatus(fwk.Success,
		fmt.Sprintf("gang %s: preempting %d victims for %d members", id.Key, len(pods), need))
}

// placeMember finds the node for one more member in the gang's dry run:
// a node where it fits as things are wins; otherwise the node whose
// evictions rank best. It records the chosen node's plan in c.
func (pl *Plugin) placeMember(ctx context.Context, c *cycle, sims map[string]*sim, infos []fwk.NodeInfo, pod *v1.Pod,
	evicted map[types.UID]bool, pdbs []*policy.PodDisruptionBudget) (string, []*unit, *fwk.Status) {
	var bestNode string
	var best *plan
	reasons := map[string]int{}
	anyVictims := false
	for _, info := range infos {
		n := info.Node().Name
		s := sims[n]
		if pl.fits(ctx, c, s, pod, -1) {
			return n, nil, nil
		}
		units := pl.units(c, pod, victimsOf(s.ni), evicted)
		if len(units) == 0 {
			reasons["no lower-priority pods to evict"]++
			continue
		}
		anyVictims = true
		p, st := pl.selectOnNode(ctx, c, s.state.Clone(), pod, s.ni.Snapshot(), s.nominatedIn, units, pdbs)
		if !st.IsSuccess() {
			reasons[st.Message()]++
			continue
		}
		if p.better(best) {
			best, bestNode = p, n
		}
	}
	if best == nil {
		var parts []string
		for r, k := range reasons {
			parts = append(parts, fmt.Sprintf("%d node(s): %s", k, r))
		}
		sort.Strings(parts)
		code := fwk.Unschedulable
		if !anyVictims {
			code = fwk.UnschedulableAndUnresolvable
		}
		return "", nil, fwk.NewStatus(code, strings.Join(parts, "; "))
	}
	c.setPlan(bestNode, best)
	return bestNode, best.victims, nil
}

// inSnapshot tells whether the scheduler's snapshot still has pod on
// its node.
func (pl *Plugin) inSnapshot(pod *v1.Pod) bool {
	ni, err := pl.fh.SnapshotSharedLister().NodeInfos().Get(pod.Spec.NodeName)
	if err != nil {
		return false
	}
	for _, pi := range ni.GetPods() {
		if pi.GetPod().UID == pod.UID {
			return true
		}
	}
	return false
}

// addNominated adds to the view the pods nominated to its node that the
// framework would count against pod (priority at least pod's, not pod
// itself), less the members of gang key.
func (pl *Plugin) addNominated(ctx context.Context, s *sim, pod *v1.Pod, key string) error {
	prio := corev1helpers.PodPriority(pod)
	for _, pi := range pl.fh.NominatedPodsForNode(s.main) {
		p := pi.GetPod()
		if p.UID == pod.UID || corev1helpers.PodPriority(p) < prio {
			continue
		}
		if k, ok := gang.KeyOf(p); ok && k == key {
			continue
		}
		s.ni.AddPodInfo(pi)
		if st := pl.fh.RunPreFilterExtensionAddPod(ctx, s.state, pod, pi, s.ni); !st.IsSuccess() {
			return fmt.Errorf("%s: add nominated %s on %s: %w", Name, klog.KObj(p), s.main, st.AsError())
		}
	}
	return nil
}

// victimsOf lists a node's pods as single-pod victims; units() groups
// gang members.
func victimsOf(ni fwk.NodeInfo) []*preemption.DomainVictim {
	var out []*preemption.DomainVictim
	for _, pi := range ni.GetPods() {
		v := preemption.NewPodVictim(pi, nil, nil)
		out = append(out, &preemption.DomainVictim{Victim: v})
	}
	return out
}

// pendingMembers lists the gang's members that are neither bound nor
// assumed, the running member first, then by name.
func (pl *Plugin) pendingMembers(pod *v1.Pod, key string, c *cycle) ([]*v1.Pod, error) {
	all, err := pl.pods.Pods(pod.Namespace).List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("%s: list pods: %w", Name, err)
	}
	onNodes := map[types.UID]bool{}
	for _, pi := range c.gangs[key] {
		onNodes[pi.GetPod().UID] = true
	}
	var out []*v1.Pod
	for _, p := range all {
		if k, ok := gang.KeyOf(p); !ok || k != key || p.Spec.NodeName != "" || p.DeletionTimestamp != nil || onNodes[p.UID] || p.UID == pod.UID {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return append([]*v1.Pod{pod}, out...), nil
}

// gangWaiting counts the victims of the gang's last preemption that the
// pod informer still lists or this cycle's snapshot still holds (it can
// lag the informer: a dry run on it would evict again for room the gang
// already has), and names the node that preemption placed member on.
func (pl *Plugin) gangWaiting(key string, member types.UID) (int, string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	gp := pl.gangs[key]
	if gp == nil {
		return 0, ""
	}
	for uid, v := range gp.victims {
		if cur, err := pl.pods.Pods(v.Namespace).Get(v.Name); err == nil && cur.UID == uid {
			continue
		}
		if pl.inSnapshot(v) {
			continue
		}
		delete(gp.victims, uid)
	}
	if len(gp.victims) == 0 {
		delete(pl.gangs, key)
		return 0, ""
	}
	return len(gp.victims), gp.nodes[member]
}
