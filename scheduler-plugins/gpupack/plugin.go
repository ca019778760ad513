// Package gpupack is kubegpu's kube-scheduler plugin for GPU placement:
// it keeps every node's GPUs and their bookings from informers, filters
// nodes that hold a feasible GPU set (count, memory, shares, health,
// interconnect), scores them for fragmentation, interconnect and memory
// fit, reserves the chosen GPUs and records them on the pod
// (kubegpu.io/gpu-ids) before binding, so the device plugin hands the
// container exactly those GPUs.
package gpupack

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// Name is the plugin's name in KubeSchedulerConfiguration.
const Name = "GPUPack"

const stateKey fwk.StateKey = Name

// Plugin implements the framework extension points.
type Plugin struct {
	args   Args
	handle fwk.Handle
	gpus   *gpuState
	mix    *mix
	// bindsFirst: GPUPack is the profile's first Bind plugin, so Bind
	// writes the gpu-ids annotation together with the binding (one API
	// write per pod instead of a patch and a bind). Read once, at the
	// first binding cycle, when the framework's plugin lists are built.
	bindsFirst     bool
	bindsFirstOnce sync.Once
	synced         []cache.ResourceEventHandlerRegistration
}

var (
	_ fwk.PreFilterPlugin   = (*Plugin)(nil)
	_ fwk.FilterPlugin      = (*Plugin)(nil)
	_ fwk.PreScorePlugin    = (*Plugin)(nil)
	_ fwk.ScorePlugin       = (*Plugin)(nil)
	_ fwk.ReservePlugin     = (*Plugin)(nil)
	_ fwk.PreBindPlugin     = (*Plugin)(nil)
	_ fwk.BindPlugin        = (*Plugin)(nil)
	_ fwk.EnqueueExtensions = (*Plugin)(nil)
)

// New is the plugin factory for the scheduler's registry.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, err
	}
	p := newPlugin(args)
	p.handle = h
	if err := p.watch(ctx, h); err != nil {
		return nil, err
	}
	register(ctx, h, p)
	return p, nil
}

// NewStandalone builds the plugin without a scheduler: no informers and
// no API client. The caller feeds nodes and pods through ObserveNode,
// ObservePod and ForgetPod and runs the extension points itself; the
// packing simulator does this to replay traces through the same Filter,
// Score and Reserve code the scheduler runs. PreBind needs the API and
// must not be called.
func NewStandalone(obj runtime.Object) (*Plugin, error) {
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, err
	}
	return newPlugin(args), nil
}

// ObserveNode records a node's GPU inventory (its topology annotation).
func (p *Plugin) ObserveNode(n *v1.Node) { p.gpus.setNode(n) }

// ObservePod records a pod: bound pods hold the GPUs in their
// kubegpu.io/gpu-ids annotation, finished pods free them.
func (p *Plugin) ObservePod(pod *v1.Pod) { p.gpus.setPod(pod) }

// ForgetPod frees a deleted pod's GPUs.
func (p *Plugin) ForgetPod(pod *v1.Pod) { p.gpus.deletePod(pod) }

// ForgetNode drops a deleted node.
func (p *Plugin) ForgetNode(name string) { p.gpus.deleteNode(name) }

func newPlugin(args Args) *Plugin {
	p := &Plugin{args: args}
	p.gpus = newGPUState(&p.args)
	p.mix = newMix(p.gpus.productCapacity)
	return p
}

// watch feeds the cache from the scheduler's own informers, so a
// restarted scheduler rebuilds the same state from the API.
func (p *Plugin) watch(ctx context.Context, h fwk.Handle) error {
	logger := klog.FromContext(ctx)
	nodes, err := h.SharedInformerFactory().Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.onNode(obj) },
		UpdateFunc: func(_, obj any) { p.onNode(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := unwrap[*v1.Node](obj); ok {
				p.ForgetNode(n.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("%s: watch nodes: %w", Name, err)
	}
	pods, err := h.SharedInformerFactory().Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.onPod(obj) },
		UpdateFunc: func(_, obj any) { p.onPod(obj) },
		DeleteFunc: func(obj any) {
			if pod, ok := unwrap[*v1.Pod](obj); ok {
				p.ForgetPod(pod)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("%s: watch pods: %w", Name, err)
	}
	p.synced = []cache.ResourceEventHandlerRegistration{nodes, pods}
	logger.V(2).Info("GPUPack plugin watching nodes and pods", "args", p.args)
	return nil
}

func (p *Plugin) onNode(obj any) {
	if n, ok := unwrap[*v1.Node](obj); ok {
		p.ObserveNode(n)
	}
}

func (p *Plugin) onPod(obj any) {
	if pod, ok := unwrap[*v1.Pod](obj); ok {
		p.ObservePod(pod)
	}
}

func unwrap[T any](obj any) (T, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	t, ok := obj.(T)
	return t, ok
}

// Name returns the plugin name.
func (p *Plugin) Name() string { return Name }

// cycleState carries the parsed request through one scheduling cycle.
type cycleState struct {
	req    request
	pinned []string // UUIDs the pod's annotation already names
	// chosen is what Reserve booked, for PreBind and Unreserve.
	chosen   []string
	reserved bool
	// sim is this (cloned) cycle's private GPU usage (prefilter_ext.go).
	sim *simState
}

// Clone copies the state for a dry run (preemption, nominated pods):
// the request and pins are shared (read-only after PreFilter), the
// private GPU usage is deep-copied.
func (s *cycleState) Clone() fwk.StateData {
	c := *s
	if s.sim != nil {
		c.sim, _ = s.sim.Clone().(*simState)
	}
	return &c
}

func getState(state fwk.CycleState) (*cycleState, bool) {
	d, err := state.Read(stateKey)
	if err != nil {
		return nil, false
	}
	s, ok := d.(*cycleState)
	return s, ok
}

// PreFilter parses the pod's GPU request once. Pods without one skip the
// plugin; malformed requests are rejected with a message naming the field.
func (p *Plugin) PreFilter(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	req, err := parseRequest(pod, &p.args)
	if err != nil {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
	}
	if !req.wantsGPU() {
		// No GPU to filter for, but Score still steers the pod's CPU
		// away from nodes whose free GPUs it would strand.
		req.frag = p.mix.current()
		state.Write(stateKey, &cycleState{req: req})
		return nil, fwk.NewStatus(fwk.Skip)
	}
	if err := p.waitSynced(ctx); err != nil {
		// An error, not Unschedulable: the pod goes to backoff and is
		// retried, instead of waiting for a cluster event that may
		// never come.
		return nil, fwk.AsStatus(err)
	}
	s := &cycleState{req: req}
	if value, ok := pod.Annotations[contract.AnnotationGPUIDs]; ok {
		a, err := contract.ParseGPUIDs(value)
		if err != nil {
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
		}
		if a.Milli != req.milli {
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable,
				fmt.Sprintf("annotation %s=%q does not match the pod's GPU request", contract.AnnotationGPUIDs, value))
		}
		s.pinned = a.UUIDs
	}
	p.mix.observe(req)
	s.req.frag = p.mix.current()
	state.Write(stateKey, s)
	return nil, nil
}

// syncWait bounds how long PreFilter waits for the informers' initial
// lists to reach the plugin's handlers.
const syncWait = 30 * time.Second

// waitSynced blocks until the node and pod handlers have seen the
// informers' initial lists. At scheduler start the queue may already hold
// thousands of pods while the handlers still replay the lists; rejecting
// those pods as Unschedulable would park them until an unrelated event
// or the 5-minute flush, so the first cycle waits instead. Afterwards this
// is a few atomic loads.
func (p *Plugin) waitSynced(ctx context.Context) error {
	synced := func(context.Context) (bool, error) {
		for _, r := range p.synced {
			if !r.HasSynced() {
				return false, nil
			}
		}
		return true, nil
	}
	if ok, _ := synced(ctx); ok {
		return nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, syncWait, true, synced); err != nil {
		return fmt.Errorf("%s: GPU state is not synced yet: %w", Name, err)
	}
	return nil
}

// Filter admits nodes that hold a feasible GPU set for the pod.
func (p *Plugin) Filter(_ context.Context, state fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	s, ok := getState(state)
	if !ok {
		return fwk.AsStatus(fmt.Errorf("%s: no cycle state", Name))
	}
	p.gpus.mu.RLock()
	ng := p.nodeFor(s, nodeInfo.Node().Name)
	_, reason := ng.fitMemo(s.req, &p.args, s.pinned)
	p.gpus.mu.RUnlock()
	if reason != "" {
		return filterStatus(ng, s.req, reason)
	}
	return nil
}

// filterStatus is Filter's verdict for a reason. What no eviction can
// change (no or a bad inventory, no sharing, fewer GPUs than asked) is
// UnschedulableAndUnresolvable, as NodeResourcesFit marks a request above
// a node's capacity: preemption then skips the node instead of trying it.
// GPUPack filters before NodeResourcesFit in the shipped profile, so it
// is often the one to say so. ng's inventory never changes once
// published, so it is read without the lock.
func filterStatus(ng *nodeGPUs, r request, reason string) *fwk.Status {
	code := fwk.Unschedulable
	switch {
	case reason == reasonNoInventory, reason == reasonBadInventory, reason == reasonNoSharing:
		code = fwk.UnschedulableAndUnresolvable
	case reason == reasonFreeGPUs && ng != nil && ng.topo != nil && r.whole > len(ng.topo.GPUs):
		code = fwk.UnschedulableAndUnresolvable
	}
	return fwk.NewStatus(code, reason)
}

// PreScore skips scoring for pods without GPU requests.
func (p *Plugin) PreScore(_ context.Context, state fwk.CycleState, _ *v1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	if _, ok := getState(state); !ok {
		return fwk.NewStatus(fwk.Skip)
	}
	return nil
}

// Score rates the node's choice for the pod (see scoreChoice).
func (p *Plugin) Score(_ context.Context, state fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s, ok := getState(state)
	if !ok {
		return 0, fwk.AsStatus(fmt.Errorf("%s: no cycle state", Name))
	}
	host := nodeLeft(nodeInfo)
	p.gpus.mu.RLock()
	defer p.gpus.mu.RUnlock()
	ng := p.gpus.nodes[nodeInfo.Node().Name]
	if !s.req.wantsGPU() {
		if ng == nil || ng.topo == nil {
			return p.scoreChoice(nil, s.req, choice{}, hostLeft{}), nil
		}
		return p.scoreMemo(ng, s.req, choice{}, host, false), nil
	}
	// Filter left its answer for this node in the memo (same node
	// generation, same request), so this is normally one lookup; a node
	// that changed since Filter is computed again, as Filter would now.
	if score, ok := ng.memoScore(s.req, host, s.pinned != nil); ok {
		return score, nil
	}
	c, reason := ng.fitMemo(s.req, &p.args, s.pinned)
	if reason != "" {
		return 0, nil
	}
	return p.scoreMemo(ng, s.req, c, host, s.pinned != nil), nil
}

// ScoreExtensions normalises scores across nodes.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return p }

// NormalizeScore maps the raw scores onto 0-MaxNodeScore, keeping order.
func (p *Plugin) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *v1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	if len(scores) == 0 {
		return nil
	}
	lo, hi := scores[0].Score, scores[0].Score
	for _, s := range scores {
		lo, hi = min(lo, s.Score), max(hi, s.Score)
	}
	for i := range scores {
		if hi == lo {
			scores[i].Score = fwk.MaxNodeScore
			continue
		}
		scores[i].Score = (scores[i].Score - lo) * fwk.MaxNodeScore / (hi - lo)
	}
	return nil
}

// Reserve books the pod's GPUs on the chosen node before binding, checked
// against the live state: another pod may have taken them since Filter.
func (p *Plugin) Reserve(ctx context.Context, state fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	s, ok := getState(state)
	if !ok || !s.req.wantsGPU() {
		// CPU-only pods carry a state for Score only; they book nothing
		// and may land on nodes without any GPU inventory.
		return nil
	}
	p.gpus.mu.Lock()
	ng := p.gpus.nodes[nodeName]
	c, reason := ng.fit(s.req, &p.args, s.pinned)
	if reason != "" {
		p.gpus.mu.Unlock()
		return fwk.NewStatus(fwk.Unschedulable, reason)
	}
	uuids := ng.uuids(c)
	p.gpus.putLocked(pod.UID, &booking{node: nodeName, uuids: uuids, milli: s.req.milli, assumed: true})
	p.gpus.mu.Unlock()
	s.chosen, s.reserved = uuids, true
	klog.FromContext(ctx).V(3).Info("Reserved GPUs", "pod", klog.KObj(pod), "node", nodeName, "gpus", uuids, "milli", s.req.milli, "quality", c.quality.String())
	return nil
}

// Unreserve drops the reservation when a later step failed.
func (p *Plugin) Unreserve(_ context.Context, state fwk.CycleState, pod *v1.Pod, _ string) {
	s, ok := getState(state)
	if !ok || !s.reserved {
		return
	}
	p.gpus.unreserve(pod.UID)
	s.reserved = false
}

// ReservedGPUs names the GPUs Reserve booked for the pod in this cycle
// (nil when it booked none). Simulators read it where the scheduler would
// run PreBind.
func (p *Plugin) ReservedGPUs(state fwk.CycleState) []string {
	s, ok := getState(state)
	if !ok || !s.reserved {
		return nil
	}
	return s.chosen
}

// PreBindPreFlight tells the framework whether PreBind has work.
func (p *Plugin) PreBindPreFlight(_ context.Context, state fwk.CycleState, pod *v1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	s, ok := getState(state)
	if !ok || !s.reserved || p.bindsItself() {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return nil, nil
}

// bindsItself reports whether GPUPack's Bind runs before any other
// binder in this profile (the shipped profile enables it at bind).
func (p *Plugin) bindsItself() bool {
	p.bindsFirstOnce.Do(func() {
		lister, ok := p.handle.(interface{ ListPlugins() *schedconfig.Plugins })
		if !ok {
			return
		}
		if pl := lister.ListPlugins(); pl != nil && len(pl.Bind.Enabled) > 0 {
			p.bindsFirst = pl.Bind.Enabled[0].Name == Name
		}
	})
	return p.bindsFirst
}

func (s *cycleState) gpuIDs() string {
	return contract.GPUAssignment{UUIDs: s.chosen, Milli: s.req.milli}.String()
}

// Bind binds a pod GPUPack reserved GPUs for, with the gpu-ids annotation
// in the Binding: the apiserver copies a Binding's annotations onto the
// pod in the same write that sets its node, so the pod is never bound
// without its GPUs named. Other pods are left to the next binder.
func (p *Plugin) Bind(ctx context.Context, state fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	s, ok := getState(state)
	if !ok || !s.reserved {
		return fwk.NewStatus(fwk.Skip)
	}
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Annotations: map[string]string{contract.AnnotationGPUIDs: s.gpuIDs()},
		},
		Target: v1.ObjectReference{Kind: "Node", Name: nodeName},
	}
	if err := p.handle.ClientSet().CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("%s: bind pod %s/%s to %s: %w", Name, pod.Namespace, pod.Name, nodeName, err))
	}
	return nil
}

// PreBind records the chosen GPUs on the pod when another plugin binds
// (a profile that does not enable GPUPack at bind); the device plugin
// reads them in GetPreferredAllocation and Allocate.
func (p *Plugin) PreBind(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ string) *fwk.Status {
	s, ok := getState(state)
	if !ok || !s.reserved || p.bindsItself() {
		return nil
	}
	value := s.gpuIDs()
	if pod.Annotations[contract.AnnotationGPUIDs] == value {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{contract.AnnotationGPUIDs: value}}})
	if err != nil {
		return fwk.AsStatus(fmt.Errorf("%s: build patch: %w", Name, err))
	}
	if _, err := p.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("%s: record GPUs on pod %s/%s: %w", Name, pod.Namespace, pod.Name, err))
	}
	return nil
}

// EventsToRegister lists what can make a rejected pod fit: a node's
// inventory or capacity changing, or a pod freeing GPUs.
func (p *Plugin) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add | fwk.UpdateNodeAllocatable | fwk.UpdateNodeAnnotation | fwk.UpdateNodeLabel}},
		{Event: fwk.ClusterEvent{Resource: fwk.AssignedPod, ActionType: fwk.Delete}, QueueingHintFn: p.freedByDelete},
	}, nil
}

// freedByDelete frees the deleted pod's GPUs in GPUPack's state before
// the rejected pod is requeued, then requeues it if the deleted pod could
// have held GPUs. GPUPack's own informer handler sees the same delete,
// but on another goroutine: without this, the retry could run first, be
// rejected by the stale state, and wait for an unrelated event. Freeing
// twice is harmless (bookings go by UID). The scheduler also sends this
// event when an unscheduled pod's nomination moves; such a pod (no node
// name) holds no booking and is left alone.
func (p *Plugin) freedByDelete(_ klog.Logger, _ *v1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	deleted, ok := unwrap[*v1.Pod](oldObj)
	if !ok {
		return fwk.Queue, fmt.Errorf("%s: unexpected object %T", Name, oldObj)
	}
	if deleted.Spec.NodeName != "" {
		p.gpus.deletePod(deleted)
	}
	if _, named := deleted.Annotations[contract.AnnotationGPUIDs]; named {
		return fwk.Queue, nil
	}
	r, err := parseRequest(deleted, &p.args)
	if err != nil || r.wantsGPU() {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil // held no GPU: GPUPack's verdict cannot change
}
