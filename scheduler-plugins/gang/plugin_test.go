package gang

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// fakeHandle gives the plugin what it uses of the framework: a snapshot
// built from the nodes and the pods placed so far, waiting pods, the
// queue's Activate and an event recorder.
type fakeHandle struct {
	fwk.Handle
	nodes     []*v1.Node
	placed    []*v1.Pod
	waiting   map[types.UID]*fakeWaiting
	activated map[string]bool
	recorder  *events.FakeRecorder
}

func (h *fakeHandle) SnapshotSharedLister() fwk.SharedLister {
	return cache.NewSnapshot(h.placed, h.nodes)
}

func (h *fakeHandle) GetWaitingPod(uid types.UID) fwk.WaitingPod {
	if w, ok := h.waiting[uid]; ok {
		return w
	}
	return nil
}

func (h *fakeHandle) Activate(_ klog.Logger, pods map[string]*v1.Pod) {
	for k := range pods {
		h.activated[k] = true
	}
}

func (h *fakeHandle) EventRecorder() events.EventRecorderLogger { return h.recorder }

// fakeWaiting records what the plugin decided for a waiting pod; the test
// plays the framework's part (Unreserve after a rejection).
type fakeWaiting struct {
	pod      *v1.Pod
	allowed  bool
	rejected string
}

func (w *fakeWaiting) GetPod() *v1.Pod             { return w.pod }
func (w *fakeWaiting) GetPendingPlugins() []string { return []string{Name} }
func (w *fakeWaiting) Allow(string)                { w.allowed = true }
func (w *fakeWaiting) Reject(_, msg string) bool   { w.rejected = msg; return true }
func (w *fakeWaiting) Preempt(_, msg string) bool  { w.rejected = msg; return true }

// harness runs pods through PreFilter, Reserve and Permit as one
// scheduling cycle each, on a fixed node, with a fake clock.
type harness struct {
	t      *testing.T
	p      *Plugin
	h      *fakeHandle
	now    time.Time
	states map[types.UID]fwk.CycleState
}

func newHarness(t *testing.T, gpusPerNode ...int64) *harness {
	h := &fakeHandle{waiting: map[types.UID]*fakeWaiting{}, activated: map[string]bool{}, recorder: events.NewFakeRecorder(100)}
	for i, n := range gpusPerNode {
		h.nodes = append(h.nodes, &v1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n" + string(rune('1'+i))},
			Status:     v1.NodeStatus{Allocatable: v1.ResourceList{contract.ResourceGPU: *resource.NewQuantity(n, resource.DecimalSI)}},
		})
	}
	registerMetrics() // unregistered metrics ignore updates
	p := newPlugin(DefaultArgs())
	p.handle = h
	hs := &harness{t: t, p: p, h: h, now: time.Unix(1_000_000, 0), states: map[types.UID]fwk.CycleState{}}
	p.now = func() time.Time { return hs.now }
	return hs
}

func gangPod(name, gang string, size string, gpus int64, timeout string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels:      map[string]string{contract.LabelGang: gang},
			Annotations: map[string]string{contract.AnnotationGangSize: size, contract.AnnotationGangTimeout: timeout}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c", Resources: v1.ResourceRequirements{
			Requests: v1.ResourceList{contract.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)},
		}}}},
	}
}

// schedule runs one cycle for pod onto node and returns the first
// non-success status.
func (hs *harness) schedule(pod *v1.Pod, node string) *fwk.Status {
	ctx := context.Background()
	state := framework.NewCycleState()
	if _, s := hs.p.PreFilter(ctx, state, pod, nil); !s.IsSuccess() {
		return s
	}
	if s := hs.p.Reserve(ctx, state, pod, node); !s.IsSuccess() {
		return s
	}
	hs.states[pod.UID] = state
	placed := pod.DeepCopy()
	placed.Spec.NodeName = node
	hs.h.placed = append(hs.h.placed, placed)
	s, wait := hs.p.Permit(ctx, state, pod, node)
	if s.Code() == fwk.Wait {
		hs.h.waiting[pod.UID] = &fakeWaiting{pod: pod}
		if wait <= 0 {
			hs.t.Errorf("%s: Wait with timeout %s", pod.Name, wait)
		}
	}
	return s
}

// unreserve plays the framework after a rejection or timeout.
func (hs *harness) unreserve(pod *v1.Pod) {
	hs.p.Unreserve(context.Background(), hs.states[pod.UID], pod, "")
	delete(hs.h.waiting, pod.UID)
	kept := hs.h.placed[:0]
	for _, p := range hs.h.placed {
		if p.UID != pod.UID {
			kept = append(kept, p)
		}
	}
	hs.h.placed = kept
}

func (hs *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-hs.h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func wantStatus(t *testing.T, what string, s *fwk.Status, code fwk.Code, text string) {
	t.Helper()
	if s.Code() != code || !strings.Contains(s.Message(), text) {
		t.Errorf("%s: status %v %q, want %v saying %q", what, s.Code(), s.Message(), code, text)
	}
}

// TestOneGangPlacesAtATime: two gangs of 2 x 8 GPUs, room for one. While
// gang a holds a partial reservation, gang b waits in PreFilter; once a is
// admitted, b is woken and finds no room, so neither ends up half placed.
func TestOneGangPlacesAtATime(t *testing.T) {
	hs := newHarness(t, 8, 8)
	a0, a1 := gangPod("a-0", "a", "2", 8, "60s"), gangPod("a-1", "a", "2", 8, "60s")
	b0 := gangPod("b-0", "b", "2", 8, "60s")

	wantStatus(t, "a-0", hs.schedule(a0, "n1"), fwk.Wait, "1 of 2 members placed")
	wantStatus(t, "b-0", hs.schedule(b0, "n2"), fwk.Unschedulable, "waiting for gang default/a to finish placing")

	upstream := gangPod("u-0", "b", "2", 8, "60s")
	upstream.Spec.SchedulingGroup = &v1.PodSchedulingGroup{}
	if _, s := hs.p.PreFilter(context.Background(), framework.NewCycleState(), upstream, nil); s.Code() != fwk.Skip {
		t.Errorf("pod of an upstream PodGroup: PreFilter %v, want Skip", s.Code())
	}

	wantStatus(t, "a-1", hs.schedule(a1, "n2"), fwk.Success, "")
	if w := hs.h.waiting[a0.UID]; !w.allowed {
		t.Errorf("a-0 not allowed when its gang completed")
	}
	if !hs.h.activated["default/b-0"] {
		t.Errorf("b-0 not woken when gang a finished placing: %v", hs.h.activated)
	}
	wantStatus(t, "b-0 again", hs.schedule(b0, "n2"), fwk.Unschedulable, "needs room for 2 more members of 8 nvidia.com/gpu each, the cluster has room for 0")
	if hs.p.holder != nil {
		t.Errorf("gang %s still holds the placement", hs.p.holder)
	}
}

// TestTimeoutReleasesWholeGang: two of three members wait with one shared
// deadline; when it passes, the framework's timeout of one member makes
// the plugin reject the other, both get a GangTimeout event, the timeout
// is counted, and another gang may place.
func TestTimeoutReleasesWholeGang(t *testing.T) {
	hs := newHarness(t, 8)
	t0, t1 := gangPod("t-0", "t", "3", 2, "10s"), gangPod("t-1", "t", "3", 2, "10s")
	before, err := testutil.GetCounterMetricValue(timeouts)
	if err != nil {
		t.Fatal(err)
	}

	wantStatus(t, "t-0", hs.schedule(t0, "n1"), fwk.Wait, "1 of 3")
	hs.now = hs.now.Add(3 * time.Second)
	state := framework.NewCycleState()
	if _, s := hs.p.PreFilter(context.Background(), state, t1, nil); !s.IsSuccess() {
		t.Fatal(s)
	}
	if s := hs.p.Reserve(context.Background(), state, t1, "n1"); !s.IsSuccess() {
		t.Fatal(s)
	}
	hs.states[t1.UID] = state
	s, wait := hs.p.Permit(context.Background(), state, t1, "n1")
	if s.Code() != fwk.Wait || wait != 7*time.Second {
		t.Errorf("t-1 Permit = %v, %s; want Wait for the 7s left of the gang's deadline", s.Code(), wait)
	}
	hs.h.waiting[t1.UID] = &fakeWaiting{pod: t1}

	hs.now = hs.now.Add(7 * time.Second)
	hs.unreserve(t0) // the framework timed t-0 out
	if msg := hs.h.waiting[t1.UID].rejected; !strings.Contains(msg, "timed out after 10s with 2 of 3 members placed") {
		t.Errorf("t-1 rejected with %q, want the timeout", msg)
	}
	hs.unreserve(t1)
	evs := hs.events()
	if len(evs) != 2 || !strings.Contains(evs[0], EventTimeout) || !strings.Contains(evs[1], EventTimeout) {
		t.Errorf("events %q, want a %s event on each member", evs, EventTimeout)
	}
	if after, _ := testutil.GetCounterMetricValue(timeouts); after != before+1 {
		t.Errorf("timeouts counter %v -> %v, want one more", before, after)
	}
	if hs.p.holder != nil {
		t.Errorf("gang %s still holds the placement after its timeout", hs.p.holder)
	}
	wantStatus(t, "other gang", hs.schedule(gangPod("o-0", "o", "2", 4, "10s"), "n1"), fwk.Wait, "1 of 2")
}
