package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupreempt"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// Priority classes of the preemption tests.
var priorityClasses = map[string]int32{"low": 10, "mid": 20, "high": 1000, "top": 2000}

// preemptionRun is one scenario run under one preemption plugin.
type preemptionRun struct {
	env   *testenv.Env
	ctx   context.Context
	invs  map[string]*gpunode.Node
	stock bool // DefaultPreemption instead of GPUPreempt
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
