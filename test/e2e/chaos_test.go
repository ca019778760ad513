package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
)

// chaosScaleEnv multiplies the chaos test's sizes (nodes, pods, gangs)
// for longer local runs: KUBEGPU_CHAOS_SCALE=5 is 500 nodes, 5000 pods.
const chaosScaleEnv = "KUBEGPU_CHAOS_SCALE"

// Sizes of TestSchedulerChaos at scale 1, the CI run.
const (
	chaosNodes    = 100
	chaosPods     = 1000
	chaosGangs    = 20
	chaosRestarts = 3
	// chaosDeletes is the share of pods deleted at random, in percent.
	chaosDeletes = 10
	// chaosGangTimeout is how long gang members wait for each other.
	chaosGangTimeout = "20s"
)

func chaosScale(t testing.TB) int {
	s := os.Getenv(chaosScaleEnv)
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", chaosScaleEnv, s)
	}
	return n
}

// chaosPod is a pod of the chaos mix: whole GPUs (1, 2, 4), shares
// (100-500 milli) and whole GPUs with a GPU memory floor.
func chaosPod(r *rand.Rand, name string) *v1.Pod {
	switch x := r.IntN(100); {
	case x < 50:
		return newPod(name, withResource(contract.ResourceGPUMilli, fmt.Sprint(100*(1+r.IntN(5)))))
	case x < 85:
		return newPod(name, withResource(contract.ResourceGPU, "1"))
	case x < 91:
		return newPod(name, withResource(contract.ResourceGPU, "2"))
	case x < 93:
		return newPod(name, withResource(contract.ResourceGPU, "4"))
	case x < 98:
		return newPod(name, withResource(contract.ResourceGPU, "1"), withAnnotation(contract.AnnotationGPUMemoryMin, "40Gi"))
	default:
		return newPod(name, withResource(contract.ResourceGPU, "2"), withAnnotation(contract.AnnotationGPUMemoryMin, "24Gi"))
	}
}

// chaosGang is gang g's members: 2-6 pods of 1, 2, 4 or 8 GPUs.
func chaosGang(r *rand.Rand, g int) []*v1.Pod {
	size := 2 + r.IntN(5)
	gpus := []int{1, 2, 4, 8}[r.IntN(4)]
	name := fmt.Sprintf("gang-%02d", g)
	pods := make([]*v1.Pod, size)
	for i := range pods {
		pods[i] = chaosMember(fmt.Sprintf("%s-m%d", name, i), name, size, gpus)
	}
	return pods
}

// chaosPriority is the PriorityClass of the gang members: training jobs
// ahead of the single pods in the queue, as clusters commonly rank them,
// without preempting anything. With equal priority the members of a gang
// sit among hundreds of single pods in the queue and the gang times out
// before its last member comes up.
const chaosPriority = "chaos-training"

func chaosMember(name, gang string, size, gpus int) *v1.Pod {
	p := gangMember(name, gang, size, gpus, chaosGangTimeout)
	p.Spec.PriorityClassName = chaosPriority
	return p
}

// bindLog records when the test first saw each pod bound, from a watch
// that runs across scheduler restarts.
type bindLog struct {
	mu      sync.Mutex
	boundAt map[string]time.Time // by pod name (names are never reused)
	created map[string]time.Time // when the test started creating it
}

func (l *bindLog) observe(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.boundAt[pod.Name]; !seen {
		l.boundAt[pod.Name] = time.Now()
	}
}

func (l *bindLog) creating(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.created[name] = time.Now()
}

// sickGPU is a GPU the test turned unhealthy, and when.
type sickGPU struct {
	node, uuid string
	at         time.Time
	// restart, when set, is when the scheduler started again after the
	// change was made while it was down: every pod bound after that was
	// placed by a scheduler that saw the GPU unhealthy.
	restart time.Time
}

// markUnhealthy re-encodes the node's topology annotation with GPU pos
// unhealthy, as the device plugin publishes it after an Xid.
func markUnhealthy(ctx context.Context, client kubernetes.Interface, node string, pos int) (string, error) {
	var uuid string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		inv, err := gpunode.Decode(n.Annotations[contract.AnnotationTopology])
		if err != nil {
			return err
		}
		inv = inv.Clone()
		inv.GPUs[pos].Healthy = false
		uuid = inv.GPUs[pos].UUID
		annot, err := gpunode.Encode(inv)
		if err != nil {
			return err
		}
		n.Annotations[contract.AnnotationTopology] = annot
		_, err = client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("mark GPU %d of %s unhealthy: %w", pos, node, err)
	}
	return uuid, nil
}

// TestSchedulerChaos submits 1000 GPU pods (whole GPUs, shares, memory
// floors) and 20 gangs to 100 nodes of mixed shapes, more than fit, while
// the scheduler is killed and restarted 3 times, 10 % of the pods are
// deleted at random (deleted gang members are re-created, as their Job
// would), and two nodes each lose a GPU (one while the scheduler is down,
// one while it runs). When the pods settle, read back from the API: no
// whole GPU is held twice, no GPU's shares exceed 1000, no pod created
// (or placed by a scheduler started) after a GPU turned unhealthy holds
// it, every gang with bound and pending members has a GangPartiallyBound
// event and is counted by kubegpu_gang_partially_bound, and every pending
// pod carries PodScheduled=False with a message. Sizes scale with
// KUBEGPU_CHAOS_SCALE.
func TestSchedulerChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 pods: skipped in -short")
	}
	scale := chaosScale(t)
	nodes, pods, gangs := chaosNodes*scale, chaosPods*scale, chaosGangs*scale
	env := testenv.Start(t)
	client := fastClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(300*scale)*time.Second)
	defer cancel()
	start := time.Now()
	r := rand.New(rand.NewPCG(10, 42))

	never := v1.PreemptNever
	if _, err := client.SchedulingV1().PriorityClasses().Create(ctx, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: chaosPriority}, Value: 1000, PreemptionPolicy: &never,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	invs := createShapedNodes(ctx, t, client, nodes, "node-%03d")

	log := &bindLog{boundAt: map[string]time.Time{}, created: map[string]time.Time{}}
	factory := informers.NewSharedInformerFactory(client, 0)
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    log.observe,
		UpdateFunc: func(_, obj any) { log.observe(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	informerCtx, stopInformer := context.WithCancel(ctx)
	factory.Start(informerCtx.Done())
	defer func() {
		stopInformer()
		factory.Shutdown()
	}()

	// The workload in waves, one per scheduler lifetime: plain pods
	// spread evenly; the gangs open the first wave, so that they meet
	// free capacity and then restarts and deletions.
	waves := chaosRestarts + 1
	batches := make([][]*v1.Pod, waves)
	gangSize := map[string]int{}
	for g := range gangs {
		members := chaosGang(r, g)
		gangSize[members[0].Labels[contract.LabelGang]] = len(members)
		batches[0] = append(batches[0], members...)
	}
	plain := make([][]*v1.Pod, waves)
	for i := range pods {
		plain[i%waves] = append(plain[i%waves], chaosPod(r, fmt.Sprintf("p-%04d", i)))
	}
	total := 0
	for w := range batches {
		batches[w] = append(batches[w], plain[w]...)
		total += len(batches[w])
	}

	create := func(p *v1.Pod) error {
		log.creating(p.Name)
		if _, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", p.Name, err)
		}
		return nil
	}
	var (
		liveMu   sync.Mutex
		live     = map[string]*v1.Pod{} // created and not deleted by the test
		deleted  int
		recreate int
	)
	submit := func(batch []*v1.Pod) {
		t.Helper()
		if err := parallel(len(batch), 16, func(i int) error {
			if err := create(batch[i]); err != nil {
				return err
			}
			liveMu.Lock()
			live[batch[i].Name] = batch[i]
			liveMu.Unlock()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// deleteRandom deletes n live pods at random, bound or not; a gang
	// member comes back under a new name, as a Job would re-create it.
	deleteRandom := func(n int) {
		t.Helper()
		liveMu.Lock()
		names := make([]string, 0, len(live))
		for name := range live {
			names = append(names, name)
		}
		slices.Sort(names)
		r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		victims := names[:min(n, len(names))]
		var again []*v1.Pod
		for _, name := range victims {
			p := live[name]
			delete(live, name)
			if g := p.Labels[contract.LabelGang]; g != "" {
				recreate++
				again = append(again, chaosMember(fmt.Sprintf("%s-r%d", g, recreate), g, gangSize[g], int(podGPUCount(p))))
			}
		}
		deleted += len(victims)
		liveMu.Unlock()
		if err := parallel(len(victims), 16, func(i int) error {
			err := client.CoreV1().Pods("default").Delete(ctx, victims[i], metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete pod %s: %w", victims[i], err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		submit(again)
	}

	// loseGangMember deletes a bound member (of the most GPUs per member)
	// of a gang placed whole and gives its GPUs to another pod, bound
	// directly as another scheduler would: a replacement member comes
	// back pending and, on a full cluster, the gang is left partly bound.
	lost := ""
	loseGangMember := func() {
		t.Helper()
		list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bound := map[string]int{}
		for i := range list.Items {
			if p := &list.Items[i]; testenv.Bound(p) && p.Labels[contract.LabelGang] != "" {
				bound[p.Labels[contract.LabelGang]]++
			}
		}
		slices.SortStableFunc(list.Items, func(a, b v1.Pod) int { return int(podGPUCount(&b) - podGPUCount(&a)) })
		for i := range list.Items {
			p := &list.Items[i]
			g := p.Labels[contract.LabelGang]
			if g == "" || !testenv.Bound(p) || bound[g] != gangSize[g] || p.Spec.NodeName == "node-000" || p.Spec.NodeName == "node-002" {
				continue
			}
			liveMu.Lock()
			delete(live, p.Name)
			recreate++
			again := chaosMember(fmt.Sprintf("%s-r%d", g, recreate), g, gangSize[g], int(podGPUCount(p)))
			liveMu.Unlock()
			// The other pod first, then the delete: the GPUs never look
			// free to the scheduler in between.
			filler := newPod("filler-"+p.Name, withResource(contract.ResourceGPU, fmt.Sprint(podGPUCount(p))),
				withAnnotation(contract.AnnotationGPUIDs, p.Annotations[contract.AnnotationGPUIDs]))
			filler.Spec.NodeName, filler.Spec.SchedulerName = p.Spec.NodeName, v1.DefaultSchedulerName
			if err := create(filler); err != nil {
				t.Fatal(err)
			}
			if err := client.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
				t.Fatal(err)
			}
			submit([]*v1.Pod{again})
			lost = g
			t.Logf("gang %s lost member %s on %s to %s; %s replaces it", g, p.Name, p.Spec.NodeName, filler.Name, again.Name)
			return
		}
		t.Logf("no gang placed whole to take a member from")
	}

	var sick []sickGPU
	sched := startScheduler(t, env)
	t.Logf("%d nodes up, scheduler started after %s", nodes, time.Since(start).Round(time.Millisecond))

	deletesPerWave := total * chaosDeletes / 100 / waves
	for w, batch := range batches {
		half := len(batch) / 2
		submit(batch[:half])
		if w == 2 {
			// A GPU turns unhealthy while the scheduler runs.
			uuid, err := markUnhealthy(ctx, client, "node-002", 5)
			if err != nil {
				t.Fatal(err)
			}
			sick = append(sick, sickGPU{node: "node-002", uuid: uuid, at: time.Now()})
		}
		submit(batch[half:])
		deleteRandom(deletesPerWave)
		if w == waves-1 {
			break
		}
		// Kill the scheduler in the middle of its work: pods are queued,
		// reserved, waiting in Permit (gangs) or binding.
		time.Sleep(time.Duration(200+r.IntN(800)) * time.Millisecond)
		sched.Stop()
		t.Logf("scheduler %d killed after %s", w+1, time.Since(start).Round(time.Millisecond))
		var down *sickGPU
		if w == 0 {
			// A GPU turns unhealthy while no scheduler runs.
			uuid, err := markUnhealthy(ctx, client, "node-000", 3)
			if err != nil {
				t.Fatal(err)
			}
			sick = append(sick, sickGPU{node: "node-000", uuid: uuid, at: time.Now()})
			down = &sick[len(sick)-1]
		}
		sched = startScheduler(t, env)
		if down != nil {
			down.restart = time.Now()
		}
	}
	t.Logf("all submitted after %s: %d pods, %d gangs, %d deleted at random, %d gang members re-created", time.Since(start).Round(time.Millisecond), pods, gangs, deleted, recreate)

	// settle waits until every pod is bound or marked unschedulable
	// with a message, and the bound count held still for two seconds.
	settle := func() *v1.PodList {
		t.Helper()
		var list *v1.PodList
		lastBound, stableSince := -1, time.Now()
		err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			var err error
			if list, err = client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
				return false, nil //nolint:nilerr // transient; poll again
			}
			bound := 0
			for i := range list.Items {
				p := &list.Items[i]
				if testenv.Bound(p) {
					bound++
				} else if !hasPendingReason(p) {
					stableSince = time.Now()
				}
			}
			if bound != lastBound {
				lastBound, stableSince = bound, time.Now()
			}
			return time.Since(stableSince) > 2*time.Second, nil
		})
		if err != nil {
			var waiting []string
			for i := range list.Items {
				if p := &list.Items[i]; !testenv.Bound(p) && !hasPendingReason(p) {
					waiting = append(waiting, p.Name)
				}
			}
			t.Fatalf("pods did not settle: %v (bound %d; without a reason: %v)", err, lastBound, waiting)
		}
		t.Logf("settled after %s: %d of %d pods bound", time.Since(start).Round(time.Millisecond), lastBound, len(list.Items))
		return list
	}
	settle()
	// On the full cluster a gang loses a member, as after a node
	// failure, and the GPUs go to another pod: the member comes back
	// and the gang is left partly bound, which must be reported.
	loseGangMember()
	list := settle()

	// Invariant 1 and 2: whole GPUs held once, shares at most 1000.
	for _, v := range checkGPUBookings(list.Items, invs) {
		t.Error(v)
	}
	// Invariant 3: nothing new lands on a GPU after it turned unhealthy.
	log.mu.Lock()
	for _, s := range sick {
		holders := 0
		for i := range list.Items {
			p := &list.Items[i]
			if p.Spec.NodeName != s.node || !holdsGPU(p, s.uuid) {
				continue
			}
			holders++
			created, bound := log.created[p.Name], log.boundAt[p.Name]
			switch {
			case created.After(s.at):
				t.Errorf("pod %s, created %s after GPU %s on %s turned unhealthy, was given it", p.Name, created.Sub(s.at), s.uuid, s.node)
			case !s.restart.IsZero() && bound.After(s.restart.Add(time.Second)):
				t.Errorf("pod %s was given unhealthy GPU %s on %s by the scheduler started after the change", p.Name, s.uuid, s.node)
			}
		}
		t.Logf("unhealthy GPU %s on %s: %d pods hold it", s.uuid, s.node, holders)
	}
	log.mu.Unlock()
	// Invariant 4: a gang with bound and pending members is reported.
	// Events and the gauge are written asynchronously: give them a few
	// seconds.
	var partly []string
	var wholeGangs, emptyGangs int
	deadline := time.Now().Add(5 * time.Second)
	for {
		var bad []string
		partly, bad, wholeGangs, emptyGangs = checkGangReports(ctx, t, client, list.Items, gangSize)
		if len(bad) == 0 || time.Now().After(deadline) {
			for _, b := range bad {
				t.Error(b)
			}
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("gangs: %d placed whole, %d partly bound and reported %v, %d with nothing bound", wholeGangs, len(partly), partly, emptyGangs)
	if lost != "" && !slices.Contains(partly, lost) {
		t.Logf("gang %s found room for its lost member's replacement", lost)
	}
	// Invariant 5: every pending pod says why.
	for i := range list.Items {
		if p := &list.Items[i]; !testenv.Bound(p) && !hasPendingReason(p) {
			t.Errorf("pending pod %s has no PodScheduled=False condition with a message: %+v", p.Name, p.Status.Conditions)
		}
	}
	t.Logf("chaos run (scale %d) took %s", scale, time.Since(start).Round(time.Millisecond))
}

// checkGangReports finds the gangs with both bound and pending members
// and returns them with every one not reported: no GangPartiallyBound
// event on a pending member, or kubegpu_gang_partially_bound not counting
// them. It also counts the gangs placed whole and those with none bound.
func checkGangReports(ctx context.Context, t *testing.T, client kubernetes.Interface, pods []v1.Pod, size map[string]int) (partly, bad []string, whole, empty int) {
	t.Helper()
	events, err := client.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, []string{fmt.Sprintf("list events: %v", err)}, 0, 0
	}
	reported := map[string]bool{}
	for _, e := range events.Items {
		if e.Reason == gang.EventPartlyBound {
			reported[e.Regarding.Name] = true
		}
	}
	type members struct{ bound, pending []string }
	byGang := map[string]*members{}
	for i := range pods {
		p := &pods[i]
		g := p.Labels[contract.LabelGang]
		if g == "" {
			continue
		}
		if byGang[g] == nil {
			byGang[g] = &members{}
		}
		if testenv.Bound(p) {
			byGang[g].bound = append(byGang[g].bound, p.Name)
		} else {
			byGang[g].pending = append(byGang[g].pending, p.Name)
		}
	}
	for g, m := range byGang {
		switch {
		case len(m.bound) > size[g]:
			bad = append(bad, fmt.Sprintf("gang %s has %d members bound, size %d", g, len(m.bound), size[g]))
		case len(m.bound) > 0 && len(m.pending) > 0:
			partly = append(partly, g)
			if !slices.ContainsFunc(m.pending, func(n string) bool { return reported[n] }) {
				bad = append(bad, fmt.Sprintf("gang %s is partly bound (%d of %d) and none of its pending members %v has a %s event", g, len(m.bound), size[g], m.pending, gang.EventPartlyBound))
			}
		case len(m.bound) == size[g]:
			whole++
		case len(m.bound) == 0:
			empty++
		}
	}
	slices.Sort(partly)
	if got := metric(t, "kubegpu_gang_partially_bound"); int(got) != len(partly) {
		bad = append(bad, fmt.Sprintf("kubegpu_gang_partially_bound = %v, %d gangs are partly bound: %v", got, len(partly), partly))
	}
	return partly, bad, whole, empty
}

// hasPendingReason tells whether an unbound pod carries the scheduler's
// reason: PodScheduled=False with a message.
func hasPendingReason(p *v1.Pod) bool {
	c := testenv.ScheduledCondition(p)
	return c != nil && c.Status == v1.ConditionFalse && c.Message != ""
}

func holdsGPU(p *v1.Pod, uuid string) bool {
	a, err := contract.ParseGPUIDs(p.Annotations[contract.AnnotationGPUIDs])
	return err == nil && slices.Contains(a.UUIDs, uuid)
}

func podGPUCount(p *v1.Pod) int64 {
	q := p.Spec.Containers[0].Resources.Limits[contract.ResourceGPU]
	return q.Value()
}
