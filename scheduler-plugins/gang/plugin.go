// Package gang is kubegpu's kube-scheduler plugin for gang placement: the
// members of a gang (pods labelled kubegpu.io/gang with
// kubegpu.io/gang-size, or the pods of a batch/v1 Job that opts in) bind
// all together or not at all, one gang places at a time so two gangs never
// hold each other's capacity half placed, and a gang goes into the
// smallest network domain (zone, block, rack) that holds it whole. See
// docs/gang.md.
package gang

import (
	"context"
	"fmt"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// Name is the plugin's name in KubeSchedulerConfiguration.
const Name = "Gang"

const stateKey fwk.StateKey = Name

// Event reasons on member pods.
const (
	EventTimeout  = "GangTimeout"
	EventRejected = "GangRejected"
	// EventPartlyBound says a member of a gang with bound members cannot
	// be placed: the gang runs short until capacity allows.
	EventPartlyBound = "GangPartiallyBound"
)

// Plugin implements the framework extension points.
type Plugin struct {
	args   Args
	handle fwk.Handle
	jobs   batchlisters.JobLister
	pods   corelisters.PodLister
	synced []cache.InformerSynced
	now    func() time.Time

	mu    sync.Mutex
	gangs map[gangKey]*gang
	// holder is the one gang allowed to hold reservations that are not
	// yet admitted: other gangs wait in PreFilter until it is admitted or
	// released (timeout, no fit, deleted member). Scheduling cycles run
	// one at a time, so checking it in PreFilter and taking it in Reserve
	// cannot race.
	holder *gangKey
	// blocked are pods turned away because another gang held the
	// placement; they are activated when it lets go.
	blocked map[types.UID]*v1.Pod
	// stopped closes when the scheduler that built the plugin stops.
	// The gauges are process-wide and a stopped scheduler's waiting
	// members can still time out and be unreserved afterwards; its stale
	// counts must not overwrite the live instance's (a restarted
	// scheduler in one process, as in the chaos test).
	stopped <-chan struct{}
}

var (
	_ fwk.PreFilterPlugin   = (*Plugin)(nil)
	_ fwk.FilterPlugin      = (*Plugin)(nil)
	_ fwk.PostFilterPlugin  = (*Plugin)(nil)
	_ fwk.PreScorePlugin    = (*Plugin)(nil)
	_ fwk.ScorePlugin       = (*Plugin)(nil)
	_ fwk.ReservePlugin     = (*Plugin)(nil)
	_ fwk.PermitPlugin      = (*Plugin)(nil)
	_ fwk.EnqueueExtensions = (*Plugin)(nil)
)

// member is a gang pod that holds capacity: reserved (waiting in Permit
// or binding) or bound.
type member struct {
	node  string
	bound bool
}

// gang is what the plugin knows about one gang. An episode runs from its
// first reservation until no reservation is left (all bound or released).
type gang struct {
	key     gangKey
	size    int
	timeout time.Duration
	members map[types.UID]*member
	// pending are members seen in PreFilter and not bound yet, for the
	// pending metric and to wake siblings when one reserves.
	pending map[types.UID]*v1.Pod

	admitted      bool
	firstReserved time.Time
	domain        *domain
	// noDomain drops the topology restriction for the next episode after
	// a member found no node inside the chosen domain.
	noDomain bool
	// rejectReason is set while an episode's reservations are released,
	// so every member's event says the same why.
	rejectReason string
	rejectEvent  string
}

func (g *gang) bound() int {
	n := 0
	for _, m := range g.members {
		if m.bound {
			n++
		}
	}
	return n
}

func (g *gang) reserved() int {
	n := 0
	for _, m := range g.members {
		if !m.bound {
			n++
		}
	}
	return n
}

// New is the plugin factory for the scheduler's registry.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, err
	}
	registerMetrics()
	p := newPlugin(args)
	p.handle = h
	p.stopped = ctx.Done()
	jobs := h.SharedInformerFactory().Batch().V1().Jobs()
	pods := h.SharedInformerFactory().Core().V1().Pods()
	p.jobs, p.pods = jobs.Lister(), pods.Lister()
	reg, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { p.onPod(ctx, obj) },
		DeleteFunc: func(obj any) { p.onPodDelete(ctx, obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("%s: watch pods: %w", Name, err)
	}
	p.synced = []cache.InformerSynced{jobs.Informer().HasSynced, reg.HasSynced}
	klog.FromContext(ctx).V(2).Info("Gang plugin watching pods and Jobs", "args", p.args)
	return p, nil
}

func newPlugin(args Args) *Plugin {
	return &Plugin{args: args, now: time.Now, gangs: map[gangKey]*gang{}, blocked: map[types.UID]*v1.Pod{}}
}

// Name returns the plugin name.
func (p *Plugin) Name() string { return Name }

func (p *Plugin) getJob(namespace, name string) (*batchv1.Job, error) {
	return p.jobs.Jobs(namespace).Get(name)
}

func (p *Plugin) gangLocked(key gangKey) *gang {
	g := p.gangs[key]
	if g == nil {
		g = &gang{key: key, members: map[types.UID]*member{}, pending: map[types.UID]*v1.Pod{}}
		p.gangs[key] = g
	}
	return g
}

// cycleState carries the gang and its domain through one cycle.
type cycleState struct {
	key    gangKey
	domain *domain
	// placed maps the nodes of members already placed to their labels.
	placed map[string]map[string]string
}

// Clone shares the state: it is read-only after PreFilter.
func (s *cycleState) Clone() fwk.StateData { return s }

func getState(state fwk.CycleState) (*cycleState, bool) {
	d, err := state.Read(stateKey)
	if err != nil {
		return nil, false
	}
	s, ok := d.(*cycleState)
	return s, ok
}

func podGPUs(pod *v1.Pod, resource v1.ResourceName) int64 {
	q := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})[resource]
	return q.Value()
}

// PreFilter identifies the pod's gang, turns it away while another gang
// holds the placement or when the cluster cannot hold the gang's remaining
// members, and decides the gang's domain when its first member is placed.
func (p *Plugin) PreFilter(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	if _, _, member := gangKeyOf(pod); member {
		// Only gang members wait for the Job and pod informers.
		for _, synced := range p.synced {
			if !synced() {
				return nil, fwk.NewStatus(fwk.Unschedulable, "gang state is not synced yet")
			}
		}
	}
	id, ok, err := parseIdentity(pod, p.args.DefaultTimeout.Duration, p.getJob)
	if err != nil {
		if apierrors.IsNotFound(err) {
			// The Job may not be in the informer yet.
			return nil, fwk.NewStatus(fwk.Unschedulable, err.Error())
		}
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
	}
	if !ok {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	infos, err := p.handle.SnapshotSharedLister().NodeInfos().List()
	if err != nil {
		return nil, fwk.AsStatus(fmt.Errorf("%s: list nodes: %w", Name, err))
	}
	perMember := podGPUs(pod, v1.ResourceName(p.args.ResourceName))

	p.mu.Lock()
	g := p.gangLocked(id.key)
	g.size, g.timeout = id.size, id.timeout
	g.pending[pod.UID] = pod
	p.updatePendingLocked()
	if p.holder != nil && *p.holder != id.key {
		holder := *p.holder
		p.blocked[pod.UID] = pod
		p.mu.Unlock()
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("waiting for gang %s to finish placing", holder))
	}
	need := g.size - len(g.members)
	caps := nodeCaps(infos, pod, v1.ResourceName(p.args.ResourceName), perMember)
	if perMember > 0 && need > 0 {
		if room := totalSlots(caps); room < need {
			msg := fmt.Sprintf("gang %s needs room for %d more members of %d %s each, the cluster has room for %d", id.key, need, perMember, p.args.ResourceName, room)
			var reject []types.UID
			if g.reserved() > 0 && !g.admitted {
				reject = p.rejectLocked(g, "cannot fit: "+msg, EventRejected, "unfit")
			}
			bound := g.bound()
			p.mu.Unlock()
			p.rejectWaiting(ctx, reject, "cannot fit: "+msg)
			p.reportPartlyBound(pod, id.key, bound, id.size, msg)
			return nil, fwk.NewStatus(fwk.Unschedulable, msg)
		}
	}
	labels := make(map[string]map[string]string, len(infos))
	for _, info := range infos {
		if n := info.Node(); n != nil {
			labels[n.Name] = n.Labels
		}
	}
	s := &cycleState{key: id.key, placed: map[string]map[string]string{}}
	var placed []map[string]string
	for _, m := range g.members {
		if l, ok := labels[m.node]; ok {
			s.placed[m.node] = l
			placed = append(placed, l)
		}
	}
	if g.reserved() == 0 {
		// The first member of an episode decides the domain, from the
		// capacity the snapshot shows now; members already bound (before
		// a restart) pin it.
		g.domain = nil
		if perMember > 0 && need > 0 && !g.noDomain {
			g.domain = chooseDomain(p.args.TopologyKeys, caps, need, placed)
		}
	}
	s.domain = g.domain
	p.mu.Unlock()
	if s.domain != nil {
		klog.FromContext(ctx).V(4).Info("Gang member placed towards domain", "pod", klog.KObj(pod), "gang", id.key, "domain", s.domain)
	}
	state.Write(stateKey, s)
	return nil, nil
}

// PreFilterExtensions is nil: the gang's state does not change when
// preemption adds or removes pods during a cycle.
func (p *Plugin) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

// Filter keeps members inside their gang's domain.
func (p *Plugin) Filter(_ context.Context, state fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	s, ok := getState(state)
	if !ok || s.domain == nil {
		return nil
	}
	if !s.domain.contains(nodeInfo.Node().Labels) {
		return fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("node is outside %s, the domain chosen for gang %s", s.domain, s.key))
	}
	return nil
}

// PostFilter runs when a member fits no node: the gang cannot be placed
// whole now, so the members already waiting give their capacity back
// instead of holding it until the timeout.
func (p *Plugin) PostFilter(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	s, ok := getState(state)
	if !ok {
		return nil, fwk.NewStatus(fwk.Unschedulable)
	}
	msg := fmt.Sprintf("cannot fit: member %s fits no node", klog.KObj(pod))
	if s.domain != nil {
		msg += " in " + s.domain.String()
	}
	p.mu.Lock()
	g := p.gangLocked(s.key)
	if s.domain != nil {
		g.noDomain = true
	}
	var reject []types.UID
	if g.reserved() > 0 && !g.admitted {
		reject = p.rejectLocked(g, msg, EventRejected, "unfit")
	}
	bound, size := g.bound(), g.size
	p.mu.Unlock()
	p.reportPartlyBound(pod, s.key, bound, size, msg)
	if len(reject) > 0 {
		p.rejectWaiting(ctx, reject, msg)
		p.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, EventRejected, "Scheduling", "gang %s: %s", s.key, msg)
	}
	return nil, fwk.NewStatus(fwk.Unschedulable, msg)
}

// PreScore skips pods whose gang has no member placed yet.
func (p *Plugin) PreScore(_ context.Context, state fwk.CycleState, _ *v1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	s, ok := getState(state)
	if !ok || len(s.placed) == 0 || len(p.args.TopologyKeys) == 0 {
		return fwk.NewStatus(fwk.Skip)
	}
	return nil
}

// Score prefers nodes close to the members already placed.
func (p *Plugin) Score(_ context.Context, state fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s, ok := getState(state)
	if !ok {
		return 0, nil
	}
	n := nodeInfo.Node()
	return affinityScore(p.args.TopologyKeys, n.Labels, n.Name, s.placed), nil
}

// ScoreExtensions is nil: scores are already 0-MaxNodeScore.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return nil }

// Reserve counts the member and takes the placement for its gang until
// the gang is admitted or released.
func (p *Plugin) Reserve(ctx context.Context, state fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	s, ok := getState(state)
	if !ok {
		return nil
	}
	p.mu.Lock()
	if p.holder != nil && *p.holder != s.key {
		holder := *p.holder
		p.mu.Unlock()
		return fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("waiting for gang %s to finish placing", holder))
	}
	g := p.gangLocked(s.key)
	if g.reserved() == 0 && !g.admitted {
		g.firstReserved = p.now()
	}
	g.members[pod.UID] = &member{node: nodeName}
	if !g.admitted && len(g.members) < g.size {
		key := s.key
		p.holder = &key
	}
	// Siblings rejected earlier sit in the unschedulable queue: wake them
	// now that the gang is placing again.
	wake := map[string]*v1.Pod{}
	for uid, sib := range g.pending {
		if _, ok := g.members[uid]; !ok {
			wake[sib.Namespace+"/"+sib.Name] = sib
		}
	}
	p.mu.Unlock()
	if len(wake) > 0 {
		p.handle.Activate(klog.FromContext(ctx), wake)
	}
	return nil
}

// Unreserve releases a member. Before admission any release breaks the
// all-or-nothing promise, so the rest of the gang lets go too, and every
// member gets an event saying why.
func (p *Plugin) Unreserve(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ string) {
	s, ok := getState(state)
	if !ok {
		return
	}
	gone := p.podGone(pod)
	p.mu.Lock()
	g := p.gangs[s.key]
	if g == nil {
		p.mu.Unlock()
		return
	}
	m := g.members[pod.UID]
	if m == nil || m.bound {
		p.mu.Unlock()
		return
	}
	var reject []types.UID
	var reason, event string
	if !g.admitted {
		if g.rejectReason == "" {
			switch {
			case gone:
				reject = p.rejectLocked(g, fmt.Sprintf("member %s was deleted", klog.KObj(pod)), EventRejected, "member_deleted")
			case !p.now().Before(g.firstReserved.Add(g.timeout)):
				timeouts.Inc()
				reject = p.rejectLocked(g, fmt.Sprintf("timed out after %s with %d of %d members placed", g.timeout, len(g.members), g.size), EventTimeout, "timeout")
			default:
				reject = p.rejectLocked(g, fmt.Sprintf("member %s failed after reserving", klog.KObj(pod)), EventRejected, "member_failed")
			}
		}
		reason, event = g.rejectReason, g.rejectEvent
	}
	delete(g.members, pod.UID)
	wake := p.settleLocked(g)
	p.mu.Unlock()
	p.rejectWaiting(ctx, reject, reason)
	if reason != "" && !gone {
		p.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, event, "Scheduling", "gang %s released its reservations: %s", s.key, reason)
	}
	p.activate(ctx, wake)
}

// Permit admits the whole gang once enough members hold capacity; until
// then members wait, sharing one deadline from the first reservation.
func (p *Plugin) Permit(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ string) (*fwk.Status, time.Duration) {
	s, ok := getState(state)
	if !ok {
		return nil, 0
	}
	p.mu.Lock()
	g := p.gangLocked(s.key)
	if len(g.members) < g.size {
		wait := g.firstReserved.Add(g.timeout).Sub(p.now())
		msg := fmt.Sprintf("waiting for gang %s: %d of %d members placed", s.key, len(g.members), g.size)
		p.mu.Unlock()
		return fwk.NewStatus(fwk.Wait, msg), max(wait, time.Millisecond)
	}
	var allow []types.UID
	if !g.admitted {
		g.admitted = true
		g.noDomain = false
		if !g.firstReserved.IsZero() {
			waitSeconds.Observe(p.now().Sub(g.firstReserved).Seconds())
		}
		for uid, m := range g.members {
			if !m.bound && uid != pod.UID {
				allow = append(allow, uid)
			}
		}
	}
	var wake map[string]*v1.Pod
	if p.holder != nil && *p.holder == s.key {
		p.holder = nil
		wake = p.takeBlockedLocked()
	}
	p.updatePendingLocked()
	size := g.size
	p.mu.Unlock()
	for _, uid := range allow {
		if wp := p.handle.GetWaitingPod(uid); wp != nil {
			wp.Allow(Name)
		}
	}
	klog.FromContext(ctx).V(2).Info("Gang admitted", "gang", s.key, "size", size)
	p.activate(ctx, wake)
	return nil, 0
}

// rejectLocked starts releasing g's episode and returns the members
// waiting in Permit, to be rejected once p.mu is released.
func (p *Plugin) rejectLocked(g *gang, reason, event, metric string) []types.UID {
	if g.rejectReason != "" {
		return nil
	}
	g.rejectReason, g.rejectEvent = reason, event
	rejections.WithLabelValues(metric).Inc()
	var uids []types.UID
	for uid, m := range g.members {
		if !m.bound {
			uids = append(uids, uid)
		}
	}
	return uids
}

// rejectWaiting rejects members still waiting in Permit; the framework
// then runs Unreserve for each, which releases their capacity.
func (p *Plugin) rejectWaiting(ctx context.Context, uids []types.UID, reason string) {
	for _, uid := range uids {
		if wp := p.handle.GetWaitingPod(uid); wp != nil {
			wp.Reject(Name, reason)
		}
	}
	if len(uids) > 0 {
		klog.FromContext(ctx).V(2).Info("Gang released its reservations", "members", len(uids), "reason", reason)
	}
}

// settleLocked ends the episode when no reservation is left, lets go of
// the placement and forgets gangs with nothing left to track. It returns
// the pods to wake.
func (p *Plugin) settleLocked(g *gang) map[string]*v1.Pod {
	var wake map[string]*v1.Pod
	if g.reserved() == 0 {
		g.admitted, g.firstReserved, g.domain = false, time.Time{}, nil
		g.rejectReason, g.rejectEvent = "", ""
		if p.holder != nil && *p.holder == g.key {
			p.holder = nil
			wake = p.takeBlockedLocked()
		}
		if len(g.members) == 0 && len(g.pending) == 0 {
			delete(p.gangs, g.key)
		}
	}
	p.updatePendingLocked()
	return wake
}

func (p *Plugin) takeBlockedLocked() map[string]*v1.Pod {
	wake := make(map[string]*v1.Pod, len(p.blocked))
	for uid, pod := range p.blocked {
		wake[pod.Namespace+"/"+pod.Name] = pod
		delete(p.blocked, uid)
	}
	return wake
}

func (p *Plugin) activate(ctx context.Context, pods map[string]*v1.Pod) {
	if len(pods) > 0 {
		p.handle.Activate(klog.FromContext(ctx), pods)
	}
}

func (p *Plugin) updatePendingLocked() {
	select {
	case <-p.stopped:
		return
	default:
	}
	pending, partly := 0, 0
	for _, g := range p.gangs {
		if len(g.pending) > 0 && !g.admitted {
			pending++
		}
		if b := g.bound(); len(g.pending) > 0 && b > 0 && b < g.size {
			partly++
		}
	}
	pendingGangs.Set(float64(pending))
	partlyBound.Set(float64(partly))
}

// reportPartlyBound gives a member that cannot be placed an event when
// part of its gang is already bound, so a short gang never goes unseen.
func (p *Plugin) reportPartlyBound(pod *v1.Pod, key gangKey, bound, size int, why string) {
	if bound > 0 && bound < size {
		p.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, EventPartlyBound, "Scheduling",
			"gang %s has %d of %d members bound; this member cannot be placed yet: %s", key, bound, size, why)
	}
}

// podGone tells whether the pod was deleted, as the informer sees it.
func (p *Plugin) podGone(pod *v1.Pod) bool {
	if p.pods == nil {
		return false
	}
	cur, err := p.pods.Pods(pod.Namespace).Get(pod.Name)
	return apierrors.IsNotFound(err) || (err == nil && (cur.UID != pod.UID || cur.DeletionTimestamp != nil))
}

func unwrap(obj any) (*v1.Pod, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*v1.Pod)
	return pod, ok
}

// onPod counts bound members from the API, so members bound before a
// scheduler restart still count toward their gang.
func (p *Plugin) onPod(ctx context.Context, obj any) {
	pod, ok := unwrap(obj)
	if !ok {
		return
	}
	key, _, ok := gangKeyOf(pod)
	if !ok {
		return
	}
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		p.onPodDelete(ctx, obj)
		return
	}
	if pod.Spec.NodeName == "" {
		return
	}
	p.mu.Lock()
	g := p.gangLocked(key)
	if m := g.members[pod.UID]; m != nil {
		m.bound, m.node = true, pod.Spec.NodeName
	} else {
		g.members[pod.UID] = &member{node: pod.Spec.NodeName, bound: true}
	}
	delete(g.pending, pod.UID)
	wake := p.settleLocked(g)
	p.mu.Unlock()
	p.activate(ctx, wake)
}

// onPodDelete forgets a member; a deleted member that held a reservation
// releases its gang's waiting reservations.
func (p *Plugin) onPodDelete(ctx context.Context, obj any) {
	pod, ok := unwrap(obj)
	if !ok {
		return
	}
	key, _, ok := gangKeyOf(pod)
	if !ok {
		return
	}
	p.mu.Lock()
	delete(p.blocked, pod.UID)
	g := p.gangs[key]
	if g == nil {
		p.mu.Unlock()
		return
	}
	var reject []types.UID
	m := g.members[pod.UID]
	if m != nil && !m.bound && !g.admitted {
		reject = p.rejectLocked(g, fmt.Sprintf("member %s was deleted", klog.KObj(pod)), EventRejected, "member_deleted")
	}
	delete(g.pending, pod.UID)
	if m != nil && m.bound {
		delete(g.members, pod.UID)
	}
	// A reserved member stays counted until the framework's Unreserve
	// releases it, so that Unreserve still finds it.
	wake := p.settleLocked(g)
	reason := g.rejectReason
	p.mu.Unlock()
	p.rejectWaiting(ctx, reject, reason)
	p.activate(ctx, wake)
}

// EventsToRegister lists what can let a turned-away member fit: capacity
// freed by a deleted pod, a new node or label, or a new member of the
// same gang (the one a timed-out gang was waiting for).
func (p *Plugin) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: fwk.AssignedPod, ActionType: fwk.Delete}, QueueingHintFn: otherGangDeleted},
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add | fwk.UpdateNodeAllocatable | fwk.UpdateNodeLabel}},
		{Event: fwk.ClusterEvent{Resource: fwk.UnscheduledPod, ActionType: fwk.Add}, QueueingHintFn: sameGang},
	}, nil
}

// otherGangDeleted requeues a member when capacity is freed, except by
// its own gang letting go: a released reservation is seen as a deleted
// assigned pod, and requeueing on it would have a timed-out gang grab the
// same capacity again and again while it still lacks members.
func otherGangDeleted(_ klog.Logger, pod *v1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	deleted, ok := unwrap(oldObj)
	if !ok {
		return fwk.Queue, fmt.Errorf("%s: unexpected object %T", Name, oldObj)
	}
	mine, _, ok1 := gangKeyOf(pod)
	theirs, _, ok2 := gangKeyOf(deleted)
	if ok1 && ok2 && mine == theirs {
		return fwk.QueueSkip, nil
	}
	return fwk.Queue, nil
}

// sameGang requeues a pod only for a new member of its own gang.
func sameGang(_ klog.Logger, pod *v1.Pod, _, newObj any) (fwk.QueueingHint, error) {
	added, ok := newObj.(*v1.Pod)
	if !ok {
		return fwk.Queue, fmt.Errorf("%s: unexpected object %T", Name, newObj)
	}
	mine, _, ok1 := gangKeyOf(pod)
	theirs, _, ok2 := gangKeyOf(added)
	if ok1 && ok2 && mine == theirs && added.UID != pod.UID {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}
