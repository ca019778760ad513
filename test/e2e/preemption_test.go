package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupreempt"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// Priority classes of the preemption tests.
// ("high-never" has preemptionPolicy Never).
var priorityClasses = map[string]int32{"low": 10, "mid": 20, "high": 1000, "high-never": 1000, "top": 2000}

// preemptionRun is one scenario run under one preemption plugin.
type preemptionRun struct {
	env   *testenv.Env
	ctx   context.Context
	invs  map[string]*gpunode.Node
	stock bool // DefaultPreemption instead of GPUPreempt
	// hold pauses the reaper: deleted pods stay terminating, as with a
	// kubelet whose containers take their grace period to stop.
	hold atomic.Bool
}

// stockProfile is kubegpu's profile with the stock DefaultPreemption in
// place of GPUPreempt: the baseline the tests compare against.
func stockProfile(t *testing.T) string {
	t.Helper()
	p := registry.Profile
	for _, cut := range []string{
		"      - name: GPUPreempt\n      disabled:\n      - name: DefaultPreemption\n",
		"      - name: GPUPreempt\n",
	} {
		if !strings.Contains(p, cut) {
			t.Fatalf("registry.Profile changed: no %q to cut", cut)
		}
		p = strings.Replace(p, cut, "", 1)
	}
	if strings.Contains(p, gpupreempt.Name) {
		t.Fatalf("stock profile still names %s:\n%s", gpupreempt.Name, p)
	}
	return p
}

// startPreemption starts a control plane with the priority classes, runs
// setup (nodes and bound pods), starts the scheduler and a reaper that
// finishes graceful deletions (no kubelet runs to do it).
func startPreemption(t *testing.T, stock bool, setup func(r *preemptionRun)) *preemptionRun {
	t.Helper()
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	r := &preemptionRun{env: env, ctx: ctx, invs: map[string]*gpunode.Node{}, stock: stock}
	for name, value := range priorityClasses {
		pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value}
		if name == "high-never" {
			pc.PreemptionPolicy = ptr.To(v1.PreemptNever)
		}
		if _, err := env.Client.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setup(r)
	if stock {
		env.StartScheduler(t, testenv.SchedulerConfig{Profiles: stockProfile(t), Registry: registry.Plugins()})
	} else {
		startScheduler(t, env)
	}
	go r.reap(ctx)
	return r
}

// reap deletes pods at once when their graceful deletion starts, as a
// kubelet would once the containers stop.
func (r *preemptionRun) reap(ctx context.Context) {
	_ = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if r.hold.Load() {
			return false, nil
		}
		list, err := r.env.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient; keep polling until ctx ends
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				_ = r.env.Client.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			}
		}
		return false, nil
	})
}

// boundPod creates a pod already bound to node holding the given GPUs,
// as the scheduler and kubelet would leave it.
func (r *preemptionRun) boundPod(t *testing.T, name, node, class string, gpus []int, milli int, opts ...podOpt) {
	t.Helper()
	inv := r.invs[node]
	a := contract.GPUAssignment{Milli: milli}
	for _, g := range gpus {
		a.UUIDs = append(a.UUIDs, inv.GPUs[g].UUID)
	}
	res := withResource(contract.ResourceGPU, fmt.Sprint(len(gpus)))
	if milli > 0 {
		res = withResource(contract.ResourceGPUMilli, fmt.Sprint(milli))
	}
	p := newPod(name, append([]podOpt{res, withAnnotation(contract.AnnotationGPUIDs, a.String())}, opts...)...)
	p.Spec.NodeName = node
	p.Spec.PriorityClassName = class
	if _, err := r.env.Client.CoreV1().Pods("default").Create(r.ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func withClass(class string) podOpt {
	return func(p *v1.Pod) { p.Spec.PriorityClassName = class }
}

// startedAt sets the pod's status.startTime (no kubelet sets it), which
// orders equal-priority victims.
func (r *preemptionRun) startedAt(t *testing.T, name string, at time.Time) {
	t.Helper()
	p, err := r.env.Client.CoreV1().Pods("default").Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.StartTime = &metav1.Time{Time: at}
	if _, err := r.env.Client.CoreV1().Pods("default").UpdateStatus(r.ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// gone lists which of the named pods no longer exist, sorted.
func (r *preemptionRun) gone(t *testing.T, names []string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		if _, err := r.env.Client.CoreV1().Pods("default").Get(r.ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			out = append(out, n)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

// settle waits until the named pods have stopped disappearing for quiet.
func (r *preemptionRun) settle(t *testing.T, names []string, quiet time.Duration) []string {
	t.Helper()
	last, since := r.gone(t, names), time.Now()
	for time.Since(since) < quiet {
		time.Sleep(100 * time.Millisecond)
		if now := r.gone(t, names); !slices.Equal(now, last) {
			last, since = now, time.Now()
		}
	}
	return last
}

// milliOf sums the GPU milli the named pods held (1000 per whole GPU).
func milliOf(held map[string]int, names []string) int {
	sum := 0
	for _, n := range names {
		sum += held[n]
	}
	return sum
}

// compare runs a scenario under GPUPreempt, then under the stock
// DefaultPreemption (each on its own control plane: one scheduler runs
// per process at a time).
func compare[T any](t *testing.T, run func(t *testing.T, stock bool) T) (ours, stock T) {
	t.Helper()
	if !t.Run("GPUPreempt", func(t *testing.T) { ours = run(t, false) }) {
		t.FailNow()
	}
	t.Run("DefaultPreemption", func(t *testing.T) { stock = run(t, true) })
	return ours, stock
}

// TestPreemptionFreesNVLinkQuad: a high-priority 4-GPU pod on a full
// DGX-1 evicts the four pods of one NVLink quad, not the four
// lowest-priority single GPUs spread over both quads.
func TestPreemptionFreesNVLinkQuad(t *testing.T) {
	victims := []string{"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"}
	type outcome struct {
		gone []string
		gpus []int
	}
	ours, stock := compare(t, func(t *testing.T, stock bool) outcome {
		r := startPreemption(t, stock, func(r *preemptionRun) {
			r.invs["dgx1"] = addShapedNode(r.ctx, t, r.env, "dgx1-v100", "dgx1", nil)
			for i, v := range victims {
				class := "mid"
				if i%4 < 2 { // GPUs 0, 1, 4, 5: the cheapest four, two per quad
					class = "low"
				}
				r.boundPod(t, v, "dgx1", class, []int{i}, 0)
			}
		})
		createPods(r.ctx, t, r.env, newPod("hp", withResource(contract.ResourceGPU, "4"), withClass("high")))
		_, gpus, _ := boundGPUs(r.ctx, t, r.env, "hp", r.invs)
		o := outcome{gone: r.settle(t, victims, time.Second), gpus: gpus}
		if !stock {
			if !slices.Equal(o.gone, victims[:4]) && !slices.Equal(o.gone, victims[4:]) || !isQuad(gpus) {
				t.Errorf("evicted %v and placed the pod on GPUs %v; want one quad's four pods and that quad", o.gone, gpus)
			}
			waitEvent(r.ctx, t, r.env, "hp", gpupreempt.EventPreempting, "frees GPUs GPU-dgx1-")
			if len(o.gone) > 0 {
				waitEvent(r.ctx, t, r.env, o.gone[0], gpupreempt.EventPreempted, "for pod default/hp (priority 1000) on node dgx1: frees GPUs GPU-dgx1-")
			}
		}
		return o
	})
	inv := gpunode.MustShape("dgx1-v100")
	q, _ := inv.Quality(ours.gpus)
	sq, _ := inv.Quality(stock.gpus)
	t.Logf("FIGURES quad: GPUPreempt %d victims %v, %d GPUs freed, pod on %v (worst pair score %d); stock DefaultPreemption %d victims %v, %d GPUs freed, pod on %v (worst pair score %d)",
		len(ours.gone), ours.gone, len(ours.gone), ours.gpus, q.Worst, len(stock.gone), stock.gone, len(stock.gone), stock.gpus, sq.Worst)
}

// gangLabel makes a bound pod a member of a label-named gang.
func gangLabel(gang string, size int) podOpt {
	return func(p *v1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[contract.LabelGang] = gang
		withAnnotation(contract.AnnotationGangSize, fmt.Sprint(size))(p)
	}
}

// TestPreemptionEvictsWholeGangOnly: a low-priority 2-member gang holds
// quad 0-3 on each of two DGX-1 nodes, mid-priority single-GPU pods the
// other quads. A high-priority 4-GPU pod needs one quad: GPUPreempt
// evicts both gang members (a gang goes whole or not at all); the stock
// plugin evicts one member and leaves the other running alone.
func TestPreemptionEvictsWholeGangOnly(t *testing.T) {
	nodes := []string{"dgx1-a", "dgx1-b"}
	var all []string
	for _, n := range nodes {
		all = append(all, "gang-"+n)
		for g := 4; g < 8; g++ {
			all = append(all, fmt.Sprintf("single-%s-%d", n, g))
		}
	}
	type outcome struct{ gone []string }
	ours, stock := compare(t, func(t *testing.T, stock bool) outcome {
		r := startPreemption(t, stock, func(r *preemptionRun) {
			for _, n := range nodes {
				r.invs[n] = addShapedNode(r.ctx, t, r.env, "dgx1-v100", n, nil)
				r.boundPod(t, "gang-"+n, n, "low", []int{0, 1, 2, 3}, 0, gangLabel("train", 2))
				for g := 4; g < 8; g++ {
					r.boundPod(t, fmt.Sprintf("single-%s-%d", n, g), n, "mid", []int{g}, 0)
				}
			}
		})
		createPods(r.ctx, t, r.env, newPod("hp", withResource(contract.ResourceGPU, "4"), withClass("high")))
		node, gpus, _ := boundGPUs(r.ctx, t, r.env, "hp", r.invs)
		o := outcome{gone: r.settle(t, all, time.Second)}
		t.Logf("pod on %s GPUs %v; evicted %v", node, gpus, o.gone)
		if !stock {
			if !slices.Equal(o.gone, []string{"gang-dgx1-a", "gang-dgx1-b"}) {
				t.Errorf("evicted %v, want both gang members and nothing else", o.gone)
			}
			waitEvent(r.ctx, t, r.env, "hp", gpupreempt.EventPreempting, "preempting 2 pod(s) on node")
		}
		return o
	})
	members := func(gone []string) int {
		n := 0
		for _, g := range gone {
			if strings.HasPrefix(g, "gang-") {
				n++
			}
		}
		return n
	}
	t.Logf("FIGURES gang victim: GPUPreempt %d victims %v (%d of 2 gang members), %d GPUs freed; stock DefaultPreemption %d victims %v (%d of 2 gang members), %d GPUs freed",
		len(ours.gone), ours.gone, members(ours.gone), 4*members(ours.gone)+len(ours.gone)-members(ours.gone),
		len(stock.gone), stock.gone, members(stock.gone), 4*members(stock.gone)+len(stock.gone)-members(stock.gone))
}

// gangPreemptorScene names four full DGX-1 nodes' single-GPU pods and
// the 16 single-GPU members of a high-priority gang; fill creates the
// nodes and the pods, the first topGPUs GPUs of each node held by
// top-priority pods and the rest by low-priority ones.
func gangPreemptorScene(topGPUs int) (nodes, held, members []string, fill func(t *testing.T, r *preemptionRun)) {
	nodes = []string{"n0", "n1", "n2", "n3"}
	for _, n := range nodes {
		for g := 0; g < 8; g++ {
			held = append(held, fmt.Sprintf("%s-%d", n, g))
		}
	}
	for i := 0; i < 16; i++ {
		members = append(members, fmt.Sprintf("hg-%02d", i))
	}
	fill = func(t *testing.T, r *preemptionRun) {
		for _, n := range nodes {
			r.invs[n] = addShapedNode(r.ctx, t, r.env, "dgx1-v100", n, nil)
			for g := 0; g < 8; g++ {
				class := "low"
				if g < topGPUs {
					class = "top"
				}
				r.boundPod(t, fmt.Sprintf("%s-%d", n, g), n, class, []int{g}, 0)
			}
		}
	}
	return nodes, held, members, fill
}

// createGang creates the gang's members (gangPreemptorScene).
func createGang(r *preemptionRun, t *testing.T, members []string) {
	for _, m := range members {
		createPods(r.ctx, t, r.env, gangMember(m, "hpgang", len(members), 1, "60s", withClass("high")))
	}
}

// gangPreemptor runs the gang of gangPreemptorScene against its nodes.
func gangPreemptor(t *testing.T, topGPUs int) (ours, stock gangOutcome) {
	nodes, held, members, fill := gangPreemptorScene(topGPUs)
	return compare(t, func(t *testing.T, stock bool) gangOutcome {
		r := startPreemption(t, stock, func(r *preemptionRun) { fill(t, r) })
		createGang(r, t, members)
		var o gangOutcome
		if topGPUs*len(nodes) <= 32-16 {
			waitAllBound(r.ctx, t, r.env, members)
			o.gone = r.settle(t, held, time.Second)
		} else {
			// Give preemption time to act (or not) and the gang time
			// to (not) bind.
			o.gone = r.settle(t, held, 3*time.Second)
		}
		o.bound = len(placement(r.ctx, t, r.env, members))
		if !stock {
			if topGPUs*len(nodes) <= 16 {
				if len(o.gone) != 16 || o.bound != 16 {
					t.Errorf("evicted %d, bound %d members; want 16 and 16", len(o.gone), o.bound)
					logEvents(r.ctx, t, r.env)
				}
				waitEventOnAny(r.ctx, t, r.env, members, gpupreempt.EventPreempting, "places all 16 unplaced members")
			} else {
				if len(o.gone) != 0 || o.bound != 0 {
					t.Errorf("evicted %v, bound %d members; want nobody evicted, none bound", o.gone, o.bound)
				}
				waitEventOnAny(r.ctx, t, r.env, members, gpupreempt.EventGangNoRoom, "evicting nobody")
			}
		}
		return o
	})
}

// TestPreemptionGangMembersKeepNominations: while a gang preemption's
// victims take their time to go, every member that waits keeps its
// nomination (in its status) to the node the dry run placed it on, so
// the freed GPUs stay booked for the gang; once the victims are gone all
// 16 bind and nobody else was evicted.
func TestPreemptionGangMembersKeepNominations(t *testing.T) {
	_, held, members, fill := gangPreemptorScene(0)
	r := startPreemption(t, false, func(r *preemptionRun) { fill(t, r) })
	r.hold.Store(true)
	createGang(r, t, members)
	waitEventOnAny(r.ctx, t, r.env, members, gpupreempt.EventPreempting, "places all 16 unplaced members")
	// Members that failed before the preemption sleep in the unschedulable
	// pool until an event wakes them; a node without GPUs joining does
	// (the Gang plugin requeues on Node/Add) and changes no placement, so
	// every member runs while the victims still terminate.
	if _, err := testenv.AddGPUNode(r.ctx, r.env.Client, testenv.GPUNode{Name: "cpu-0"}); err != nil {
		t.Fatal(err)
	}

	// Every member, having waited at least once, names its node; the
	// nominations per node match the GPUs being freed there.
	var nominated map[string]int
	var terminating map[string]int
	err := wait.PollUntilContextTimeout(r.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := r.env.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient; keep polling until the timeout
		}
		nominated, terminating = map[string]int{}, map[string]int{}
		for _, p := range list.Items {
			switch {
			case slices.Contains(members, p.Name) && p.Spec.NodeName == "" && p.Status.NominatedNodeName != "":
				nominated[p.Status.NominatedNodeName]++
			case slices.Contains(held, p.Name) && p.DeletionTimestamp != nil:
				terminating[p.Spec.NodeName]++
			}
		}
		n := 0
		for _, k := range nominated {
			n += k
		}
		return n == 16, nil
	})
	if err != nil {
		logEvents(r.ctx, t, r.env)
		t.Fatalf("members nominated per node %v, want all 16 (victims terminating per node %v): %v", nominated, terminating, err)
	}
	if !maps.Equal(nominated, terminating) {
		t.Errorf("members nominated per node %v, victims terminating per node %v; want the same", nominated, terminating)
	}
	if bound := placement(r.ctx, t, r.env, members); len(bound) != 0 {
		t.Errorf("%d members bound while the victims still run", len(bound))
	}

	r.hold.Store(false)
	waitAllBound(r.ctx, t, r.env, members)
	if gone := r.settle(t, held, time.Second); len(gone) != 16 {
		logEvents(r.ctx, t, r.env)
		t.Errorf("evicted %d pods %v, want 16", len(gone), gone)
	}
	t.Logf("FIGURES gang nominations while victims terminate: members nominated per node %v, victims per node %v", nominated, terminating)
}

// logEvents writes the namespace's events to the test log, so a failure
// shows which preemptions ran and why.
func logEvents(ctx context.Context, t *testing.T, env *testenv.Env) {
	t.Helper()
	list, err := env.Client.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("list events: %v", err)
		return
	}
	for _, e := range list.Items {
		t.Logf("event %s %s: %s", e.Regarding.Name, e.Reason, e.Note)
	}
}

type gangOutcome struct {
	gone  []string
	bound int
}

// TestPreemptionGangPreemptorPlacesAll: with room for the whole gang once
// low-priority pods go, GPUPreempt evicts exactly 16 and all 16 members
// bind.
func TestPreemptionGangPreemptorPlacesAll(t *testing.T) {
	ours, stock := gangPreemptor(t, 0)
	t.Logf("FIGURES gang preemptor (room for 16): GPUPreempt %d victims, %d GPUs freed, %d/16 members bound; stock DefaultPreemption %d victims, %d GPUs freed, %d/16 bound",
		len(ours.gone), len(ours.gone), ours.bound, len(stock.gone), len(stock.gone), stock.bound)
}

// TestPreemptionGangPreemptorNoRoom: top-priority pods hold 24 of the 32
// GPUs, so the gang cannot be placed whole: GPUPreempt evicts nobody.
func TestPreemptionGangPreemptorNoRoom(t *testing.T) {
	ours, stock := gangPreemptor(t, 6)
	t.Logf("FIGURES gang preemptor (room for 8 of 16): GPUPreempt %d victims, %d/16 members bound; stock DefaultPreemption %d victims %v, %d GPUs freed, %d/16 bound",
		len(ours.gone), ours.bound, len(stock.gone), stock.gone, len(stock.gone), stock.bound)
}

// TestPreemptionSharesFewestSharers: GPU 0 of a sharing node holds
// shares of 600 and 400, GPU 1 five shares of 200 (all low priority, GPU
// 0's the oldest); top-priority pods hold the other GPUs. A
// high-priority pod asking for 500 needs one GPU with 500 free:
// GPUPreempt evicts the single 600 share; the stock plugin reprieves the
// oldest first and evicts three 200 shares.
func TestPreemptionSharesFewestSharers(t *testing.T) {
	sharers := []struct {
		name  string
		gpu   int
		milli int
	}{{"s600", 0, 600}, {"s400", 0, 400}, {"s200-a", 1, 200}, {"s200-b", 1, 200}, {"s200-c", 1, 200}, {"s200-d", 1, 200}, {"s200-e", 1, 200}}
	names := make([]string, len(sharers))
	held := map[string]int{}
	for i, s := range sharers {
		names[i] = s.name
		held[s.name] = s.milli
	}
	type outcome struct {
		gone []string
		gpu  string
	}
	ours, stock := compare(t, func(t *testing.T, stock bool) outcome {
		r := startPreemption(t, stock, func(r *preemptionRun) {
			r.invs["l4"] = addShapedNode(r.ctx, t, r.env, "pcie-4xl4", "l4", map[string]string{contract.LabelGPUSharing: "true"})
			start := time.Now().Add(-time.Hour)
			for i, s := range sharers {
				r.boundPod(t, s.name, "l4", "low", []int{s.gpu}, s.milli)
				r.startedAt(t, s.name, start.Add(time.Duration(i)*time.Minute))
			}
			for g := 2; g < 4; g++ {
				r.boundPod(t, fmt.Sprintf("whole-%d", g), "l4", "top", []int{g}, 0)
			}
		})
		createPods(r.ctx, t, r.env, newPod("hp", withResource(contract.ResourceGPUMilli, "500"), withClass("high")))
		_, gpus, _ := boundGPUs(r.ctx, t, r.env, "hp", r.invs)
		o := outcome{gone: r.settle(t, names, time.Second), gpu: fmt.Sprint(gpus)}
		if !stock {
			if !slices.Equal(o.gone, []string{"s600"}) {
				t.Errorf("evicted %v, want only s600", o.gone)
			}
			waitEvent(r.ctx, t, r.env, "s600", gpupreempt.EventPreempted, "GPU-l4-0 (600/1000)")
		}
		return o
	})
	t.Logf("FIGURES shares: GPUPreempt %d victims %v, %d milli freed, pod on GPU %s; stock DefaultPreemption %d victims %v, %d milli freed, pod on GPU %s",
		len(ours.gone), ours.gone, milliOf(held, ours.gone), ours.gpu, len(stock.gone), stock.gone, milliOf(held, stock.gone), stock.gpu)
}

// TestPreemptionRespectsPDBAndNever: a high-priority pod with
// preemptionPolicy Never evicts nobody; then a 4-GPU preemptor on a
// DGX-1 whose quad 0-3 pods are covered by a PodDisruptionBudget (no
// disruption allowed) evicts quad 4-7 instead.
func TestPreemptionRespectsPDBAndNever(t *testing.T) {
	victims := []string{"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"}
	r := startPreemption(t, false, func(r *preemptionRun) {
		r.invs["dgx1"] = addShapedNode(r.ctx, t, r.env, "dgx1-v100", "dgx1", nil)
		for i, v := range victims {
			var opts []podOpt
			if i < 4 {
				opts = append(opts, func(p *v1.Pod) { p.Labels = map[string]string{"app": "protected"} })
			}
			r.boundPod(t, v, "dgx1", "low", []int{i}, 0, opts...)
		}
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "protected", Namespace: "default"},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: ptr.To(intstr.FromInt32(4)),
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "protected"}},
			},
		}
		if _, err := r.env.Client.PolicyV1().PodDisruptionBudgets("default").Create(r.ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	never := newPod("never", withResource(contract.ResourceGPU, "4"), withClass("high-never"))
	createPods(r.ctx, t, r.env, never)
	if msg := unschedulableMessage(r.ctx, t, r.env, "never"); !strings.Contains(msg, "preemptionPolicy=Never") {
		t.Errorf("pod with preemptionPolicy Never: condition %q, want it to say so", msg)
	}
	if gone := r.settle(t, victims, time.Second); len(gone) > 0 {
		t.Fatalf("a pod with preemptionPolicy Never evicted %v", gone)
	}
	if err := r.env.Client.CoreV1().Pods("default").Delete(r.ctx, "never", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}

	createPods(r.ctx, t, r.env, newPod("hp", withResource(contract.ResourceGPU, "4"), withClass("high")))
	_, gpus, _ := boundGPUs(r.ctx, t, r.env, "hp", r.invs)
	gone := r.settle(t, victims, time.Second)
	if !slices.Equal(gone, victims[4:]) || !slices.Equal(gpus, []int{4, 5, 6, 7}) {
		t.Errorf("evicted %v, pod on GPUs %v; want v4-v7 and GPUs 4-7 (v0-v3 are under a PodDisruptionBudget)", gone, gpus)
	}
}
