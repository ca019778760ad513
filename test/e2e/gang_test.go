package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// gangMember is a pod of the label-named gang with size members, each
// asking for gpus whole GPUs.
func gangMember(name, gang string, size, gpus int, timeout string, opts ...podOpt) *v1.Pod {
	p := newPod(name, append([]podOpt{
		withResource(contract.ResourceGPU, fmt.Sprint(gpus)),
		withAnnotation(contract.AnnotationGangSize, fmt.Sprint(size)),
		withAnnotation(contract.AnnotationGangTimeout, timeout),
	}, opts...)...)
	p.Labels = map[string]string{contract.LabelGang: gang}
	return p
}

// deletePods deletes at once: no kubelet runs to finish a graceful
// deletion of a bound pod.
func deletePods(ctx context.Context, t *testing.T, env *testenv.Env, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := env.Client.CoreV1().Pods("default").Delete(ctx, n, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
	}
}

// placement returns the node of each named pod that is bound.
func placement(ctx context.Context, t *testing.T, env *testenv.Env, names []string) map[string]string {
	t.Helper()
	list, err := env.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	bound := map[string]string{}
	for _, p := range list.Items {
		if want[p.Name] && p.Spec.NodeName != "" {
			bound[p.Name] = p.Spec.NodeName
		}
	}
	return bound
}

func waitAllBound(ctx context.Context, t *testing.T, env *testenv.Env, names []string) map[string]string {
	t.Helper()
	var bound map[string]string
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		bound = placement(ctx, t, env, names)
		return len(bound) == len(names), nil
	})
	if err != nil {
		t.Fatalf("waiting for %v to bind: %v (bound: %v)", names, err, bound)
	}
	return bound
}

// expectNoneBound checks for d that none of the pods binds.
func expectNoneBound(ctx context.Context, t *testing.T, env *testenv.Env, names []string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if bound := placement(ctx, t, env, names); len(bound) > 0 {
			t.Fatalf("gang partly bound: %v", bound)
		}
	}
}

// waitEvent waits for an event on the pod with reason whose note contains
// text, and returns the note.
func waitEvent(ctx context.Context, t *testing.T, env *testenv.Env, pod, reason, text string) string {
	t.Helper()
	return waitEventOnAny(ctx, t, env, []string{pod}, reason, text)
}

// waitEventOnAny waits for an event with reason whose note contains text
// on any of the named pods, and returns the note.
func waitEventOnAny(ctx context.Context, t *testing.T, env *testenv.Env, pods []string, reason, text string) string {
	t.Helper()
	var note string
	var seen []string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := env.Client.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient; keep polling until ctx ends
		}
		seen = seen[:0]
		for _, e := range list.Items {
			if !slices.Contains(pods, e.Regarding.Name) {
				continue
			}
			seen = append(seen, e.Regarding.Name+" "+e.Reason+": "+e.Note)
			if e.Reason == reason && strings.Contains(e.Note, text) {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event saying %q on %v: %v (events: %q)", reason, text, pods, err, seen)
	}
	return note
}

// metric sums a counter or gauge family, or counts a histogram's samples,
// from the in-process scheduler's registry.
func metric(t *testing.T, name string) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				sum += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// TestGangJobLandsInOneRack places an Indexed Job of 4 pods x 8 GPUs that
// opts in with kubegpu.io/gang=true on two racks of four DGX H100 nodes:
// the gang binds whole and inside one rack. (With three 8-GPU nodes per
// rack no rack could hold 4x8 GPUs, so each rack has four.) Pods are
// created by the test as the Job controller would, since no
// controller-manager runs.
func TestGangJobLandsInOneRack(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rack := map[string]string{}
	for r := 1; r <= 2; r++ {
		for i := 1; i <= 4; i++ {
			name := fmt.Sprintf("dgx-r%d-%d", r, i)
			rack[name] = fmt.Sprintf("r%d", r)
			addShapedNode(ctx, t, env, "dgx-h100", name, map[string]string{"kubegpu.io/rack": rack[name]})
		}
	}
	startScheduler(t, env)
	waitSeconds := metric(t, "kubegpu_gang_wait_seconds")

	tmpl := gangMember("template", "", 4, 8, "10s")
	tmpl.Labels = nil
	tmpl.Annotations = map[string]string{contract.LabelGang: "true", contract.AnnotationGangTimeout: "10s"}
	tmpl.Spec.RestartPolicy = v1.RestartPolicyNever
	job, err := env.Client.BatchV1().Jobs("default").Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "default"},
		Spec: batchv1.JobSpec{
			Parallelism:    ptr.To[int32](4),
			Completions:    ptr.To[int32](4),
			CompletionMode: ptr.To(batchv1.IndexedCompletion),
			Template:       v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 4 {
		p := newPod(fmt.Sprintf("train-%d", i), withResource(contract.ResourceGPU, "8"),
			withAnnotation(contract.LabelGang, "true"), withAnnotation(contract.AnnotationGangTimeout, "10s"),
			withAnnotation("batch.kubernetes.io/job-completion-index", fmt.Sprint(i)))
		p.Labels = map[string]string{"batch.kubernetes.io/job-name": job.Name}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
		createPods(ctx, t, env, p)
		names = append(names, p.Name)
	}
	created := time.Now()
	bound := waitAllBound(ctx, t, env, names)
	t.Logf("gang bound %s after its last member was created: %v", time.Since(created).Round(time.Millisecond), bound)
	racks := map[string]bool{}
	nodes := map[string]bool{}
	for _, n := range bound {
		racks[rack[n]], nodes[n] = true, true
	}
	if len(racks) != 1 || len(nodes) != 4 {
		t.Errorf("gang spans racks %v on %d nodes, want one rack, 4 nodes: %v", racks, len(nodes), bound)
	}
	if got := metric(t, "kubegpu_gang_wait_seconds"); got != waitSeconds+1 {
		t.Errorf("kubegpu_gang_wait_seconds observed %v admissions, want 1", got-waitSeconds)
	}
}

// TestGangsCompeteWholeOrNothing runs two 8-pod gangs where the cluster
// holds one: one binds whole, the other stays whole Pending, and binds
// once the first one's pods are gone.
func TestGangsCompeteWholeOrNothing(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	addShapedNode(ctx, t, env, "dgx-h100", "n2", nil)
	startScheduler(t, env)

	members := map[string][]string{}
	for i := range 8 {
		for _, g := range []string{"a", "b"} {
			p := gangMember(fmt.Sprintf("%s-%d", g, i), g, 8, 2, "10s")
			createPods(ctx, t, env, p)
			members[g] = append(members[g], p.Name)
		}
	}
	var winner, loser string
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, g := range []string{"a", "b"} {
			if len(placement(ctx, t, env, members[g])) == 8 {
				winner, loser = g, map[string]string{"a": "b", "b": "a"}[g]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no gang bound whole: a %v, b %v", placement(ctx, t, env, members["a"]), placement(ctx, t, env, members["b"]))
	}
	t.Logf("gang %s bound whole, gang %s waits", winner, loser)
	expectNoneBound(ctx, t, env, members[loser], 3*time.Second)
	for _, n := range members[loser] {
		pod, err := testenv.WaitForPod(ctx, env.Client, "default", n, testenv.Unschedulable)
		if err != nil {
			t.Fatal(err)
		}
		if msg := testenv.ScheduledCondition(pod).Message; !strings.Contains(msg, "gang") {
			t.Errorf("%s pending with %q, want a reason naming the gang", n, msg)
		}
	}

	deletePods(ctx, t, env, members[winner]...)
	start := time.Now()
	waitAllBound(ctx, t, env, members[loser])
	t.Logf("gang %s bound whole %s after gang %s was deleted", loser, time.Since(start).Round(time.Millisecond), winner)
}

// TestGangReleasesWhenItCannotFit covers a gang the cluster cannot hold:
// rejected early when the GPUs are short, and released at once when a
// member fits no node while others already wait. None binds; events and
// conditions say why.
func TestGangReleasesWhenItCannotFit(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	startScheduler(t, env)

	// 3 members of 3 GPUs on one 8-GPU node: PreFilter turns them away.
	big := []string{"big-0", "big-1", "big-2"}
	for _, n := range big {
		createPods(ctx, t, env, gangMember(n, "big", 3, 3, "10s"))
	}
	for _, n := range big {
		pod, err := testenv.WaitForPod(ctx, env.Client, "default", n, testenv.Unschedulable)
		if err != nil {
			t.Fatal(err)
		}
		if msg := testenv.ScheduledCondition(pod).Message; !strings.Contains(msg, "needs room for 3 more members") {
			t.Errorf("%s pending with %q, want the gang's GPU shortfall", n, msg)
		}
	}
	expectNoneBound(ctx, t, env, big, time.Second)
	deletePods(ctx, t, env, big...)

	// 3 members of 1 GPU and 30 of the node's 64 CPUs: two reserve, the
	// third fits no node, and the two waiting ones are released.
	unfit := metric(t, `kubegpu_gang_rejections_total`)
	cpu := []string{"cpu-0", "cpu-1", "cpu-2"}
	for _, n := range cpu {
		createPods(ctx, t, env, gangMember(n, "cpu", 3, 1, "30s", withResource("cpu", "30")))
	}
	rejected := 0
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := env.Client.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient
		}
		who := map[string]bool{}
		for _, e := range list.Items {
			if e.Reason == "GangRejected" && strings.HasPrefix(e.Regarding.Name, "cpu-") && strings.Contains(e.Note, "fits no node") {
				who[e.Regarding.Name] = true
			}
		}
		rejected = len(who)
		return rejected >= 2, nil
	})
	if err != nil {
		t.Fatalf("want GangRejected events saying a member fits no node on the waiting members and the failed one, got %d pods", rejected)
	}
	expectNoneBound(ctx, t, env, cpu, 2*time.Second)
	if got := metric(t, `kubegpu_gang_rejections_total`); got <= unfit {
		t.Errorf("kubegpu_gang_rejections_total = %v, want more than %v", got, unfit)
	}
}

// TestGangTimeoutReleasesEverything creates 2 of a gang's 3 members: both
// reserve, wait, and at the gang's 5 s timeout both are released with a
// GangTimeout event and the timeout counted. A pod that needs their GPUs
// then binds.
func TestGangTimeoutReleasesEverything(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	startScheduler(t, env)
	before := metric(t, "kubegpu_gang_timeouts_total")

	late := []string{"late-0", "late-1"}
	for _, n := range late {
		createPods(ctx, t, env, gangMember(n, "late", 3, 2, "5s"))
	}
	start := time.Now()
	for _, n := range late {
		note := waitEvent(ctx, t, env, n, "GangTimeout", "timed out after 5s")
		t.Logf("%s: %s", n, note)
	}
	if waited := time.Since(start); waited < 4*time.Second {
		t.Errorf("gang released after %s, before its 5s timeout", waited)
	}
	if bound := placement(ctx, t, env, late); len(bound) > 0 {
		t.Fatalf("timed-out gang partly bound: %v", bound)
	}
	if got := metric(t, "kubegpu_gang_timeouts_total"); got < before+1 {
		t.Errorf("kubegpu_gang_timeouts_total = %v, want at least %v", got, before+1)
	}
	// 5 GPUs fit only if the gang's 4 reserved GPUs were released.
	createPods(ctx, t, env, newPod("after", withResource(contract.ResourceGPU, "5")))
	if _, err := testenv.WaitForPod(ctx, env.Client, "default", "after", testenv.Bound); err != nil {
		t.Fatal(err)
	}
}

// TestGangDeletedMemberReleases deletes one of two waiting members of a
// 3-member gang with a long timeout: the other is released at once, with
// an event naming the deleted member, and its GPUs go to another pod.
func TestGangDeletedMemberReleases(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	startScheduler(t, env)

	createPods(ctx, t, env, gangMember("del-0", "del", 3, 2, "60s"), gangMember("del-1", "del", 3, 2, "60s"))
	// Waiting members are invisible in the API: give the scheduler a
	// moment to reserve them, then show that they hold 4 of the 8 GPUs.
	time.Sleep(2 * time.Second)
	createPods(ctx, t, env, newPod("needs-7", withResource(contract.ResourceGPU, "7")))
	if _, err := testenv.WaitForPod(ctx, env.Client, "default", "needs-7", testenv.Unschedulable); err != nil {
		t.Fatal(err)
	}
	// Let needs-7's backoff pass, so the release requeues it straight
	// into the active queue.
	time.Sleep(1500 * time.Millisecond)

	deletePods(ctx, t, env, "del-0")
	start := time.Now()
	waitEvent(ctx, t, env, "del-1", "GangRejected", "member default/del-0 was deleted")
	if _, err := testenv.WaitForPod(ctx, env.Client, "default", "needs-7", testenv.Bound); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > 20*time.Second {
		t.Errorf("release took %s: that is the timeout, not the deletion", waited)
	}
	if bound := placement(ctx, t, env, []string{"del-1"}); len(bound) > 0 {
		t.Errorf("del-1 bound without its gang: %v", bound)
	}
}

// TestGangCountsBoundMembers stands for a scheduler restarted while
// binding a gang: two of four members are already bound (as the previous
// scheduler left them) when this scheduler starts. They count toward the
// gang, so the two new members bind at once instead of waiting for four
// new ones until the timeout.
func TestGangCountsBoundMembers(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	addShapedNode(ctx, t, env, "dgx-h100", "n2", nil)
	// A scheduler crashed after binding half of an admitted gang: two
	// members are bound (written here as the binding left them), the
	// scheduler that bound them is gone, and a new one takes over.
	first := startScheduler(t, env)
	for i, node := range []string{"n1", "n2"} {
		p := gangMember(fmt.Sprintf("early-%d", i), "restart", 4, 4, "5s")
		p.Spec.NodeName = node
		createPods(ctx, t, env, p)
	}
	first.Stop()
	startScheduler(t, env)
	timeouts := metric(t, "kubegpu_gang_timeouts_total")

	late := []string{"late-2", "late-3"}
	for _, n := range late {
		createPods(ctx, t, env, gangMember(n, "restart", 4, 4, "5s"))
	}
	start := time.Now()
	short, cancelShort := context.WithTimeout(ctx, 4*time.Second)
	defer cancelShort()
	bound := waitAllBound(short, t, env, late)
	t.Logf("remaining members bound %s after creation: %v", time.Since(start).Round(time.Millisecond), bound)
	if got := metric(t, "kubegpu_gang_timeouts_total"); got != timeouts {
		t.Errorf("kubegpu_gang_timeouts_total went from %v to %v", timeouts, got)
	}
}

// TestGangScale places a 32-pod x 8-GPU gang on 200 DGX H100 nodes in 4
// blocks of 50 nodes (10 racks of 20): no rack holds it, one block does,
// and it lands there. It logs the time from the last member's creation to
// the whole gang bound.
func TestGangScale(t *testing.T) {
	if testing.Short() {
		t.Skip("200 nodes: skipped in -short")
	}
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	block := map[string]string{}
	for i := range 200 {
		name := fmt.Sprintf("dgx-%03d", i)
		block[name] = fmt.Sprintf("b%d", i/50+1)
		addShapedNode(ctx, t, env, "dgx-h100", name, map[string]string{
			"kubegpu.io/block": block[name],
			"kubegpu.io/rack":  fmt.Sprintf("r%d", i/20+1),
		})
	}
	startScheduler(t, env)
	var names []string
	for i := range 32 {
		p := gangMember(fmt.Sprintf("big-%02d", i), "big", 32, 8, "60s")
		createPods(ctx, t, env, p)
		names = append(names, p.Name)
	}
	created := time.Now()
	bound := waitAllBound(ctx, t, env, names)
	t.Logf("32-pod gang on 200 nodes bound %s after its last member was created", time.Since(created).Round(time.Millisecond))
	blocks, nodes := map[string]bool{}, map[string]bool{}
	for _, n := range bound {
		blocks[block[n]], nodes[n] = true, true
	}
	if len(blocks) != 1 || len(nodes) != 32 {
		t.Errorf("gang spans blocks %v on %d nodes, want one block, 32 nodes", blocks, len(nodes))
	}
}

// TestGangPartlyBoundIsReported: one of a gang's two members is bound (as
// a restarted scheduler finds it) and the other has no room: it stays
// Pending with a GangPartiallyBound event, and the partly-bound gauge
// counts the gang.
func TestGangPartlyBoundIsReported(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addShapedNode(ctx, t, env, "dgx-h100", "n1", nil)
	early := gangMember("short-0", "short", 2, 8, "5s")
	early.Spec.NodeName = "n1"
	createPods(ctx, t, env, early)
	startScheduler(t, env)

	createPods(ctx, t, env, gangMember("short-1", "short", 2, 8, "5s"))
	note := waitEvent(ctx, t, env, "short-1", "GangPartiallyBound", "has 1 of 2 members bound")
	t.Logf("short-1: %s", note)
	if got := metric(t, "kubegpu_gang_partially_bound"); got != 1 {
		t.Errorf("kubegpu_gang_partially_bound = %v, want 1", got)
	}
	if bound := placement(ctx, t, env, []string{"short-1"}); len(bound) > 0 {
		t.Errorf("short-1 bound without room: %v", bound)
	}
}
