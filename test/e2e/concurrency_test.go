package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// fastClient is a clientset without client-side throttling, for tests
// that create hundreds or thousands of objects.
func fastClient(t testing.TB, env *testenv.Env) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 1e5, 1e5
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

var mixedShapes = []string{"dgx-h100", "dgx1-v100", "pcie-8x-2socket", "pcie-4xl4"}

// randomGPUPod is a pod of the concurrency mix: mostly single GPUs and
// shares, some 2- and 4-GPU pods.
func randomGPUPod(r *rand.Rand, name string) *v1.Pod {
	switch x := r.IntN(100); {
	case x < 40:
		return newPod(name, withResource(contract.ResourceGPUMilli, fmt.Sprint(100*(1+r.IntN(7)))))
	case x < 75:
		return newPod(name, withResource(contract.ResourceGPU, "1"))
	case x < 93:
		return newPod(name, withResource(contract.ResourceGPU, "2"))
	default:
		return newPod(name, withResource(contract.ResourceGPU, "4"))
	}
}

// TestGPUPackConcurrency: 500 pods created at once on 50 nodes of mixed
// shapes (more than fit), then random deletions and re-creations while
// the scheduler works. Read back through the API, no whole GPU is held
// by two pods, no GPU carries shares above 1000 or a share next to a
// whole booking, every bound GPU pod names its GPUs, and they exist on
// its node.
func TestGPUPackConcurrency(t *testing.T) {
	const nodes, pods, churn = 50, 500, 150
	env := testenv.Start(t)
	client := fastClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	start := time.Now()
	invs := createShapedNodes(ctx, t, client, nodes, "node-%02d")
	startScheduler(t, env)
	t.Logf("nodes up after %s", time.Since(start))

	r := rand.New(rand.NewPCG(1, 2))
	var all []*v1.Pod
	for i := range pods {
		all = append(all, randomGPUPod(r, fmt.Sprintf("p-%03d", i)))
	}
	create := func(p *v1.Pod) error {
		_, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		return err
	}
	if err := parallel(len(all), 16, func(i int) error { return create(all[i]) }); err != nil {
		t.Fatal(err)
	}

	t.Logf("pods created after %s", time.Since(start))
	// Churn while the scheduler is busy: delete random pods (bound or
	// not, grace 0 since no kubelet confirms) and create new ones.
	perm := r.Perm(pods)[:churn]
	var fresh []*v1.Pod
	for i := range churn {
		fresh = append(fresh, randomGPUPod(r, fmt.Sprintf("q-%03d", i)))
	}
	zero := int64(0)
	if err := parallel(churn, 16, func(i int) error {
		if err := client.CoreV1().Pods("default").Delete(ctx, all[perm[i]].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			return err
		}
		return create(fresh[i])
	}); err != nil {
		t.Fatal(err)
	}

	t.Logf("churn done after %s", time.Since(start))
	// Settled: every pod is bound or marked unschedulable, and the bound
	// count held still for a second.
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
			switch {
			case testenv.Bound(p):
				bound++
			case !testenv.Unschedulable(p):
				return false, nil
			}
		}
		if bound != lastBound {
			lastBound, stableSince = bound, time.Now()
		}
		return time.Since(stableSince) > time.Second, nil
	})
	if err != nil {
		t.Fatalf("pods did not settle: %v (bound %d)", err, lastBound)
	}
	if len(list.Items) != pods {
		t.Fatalf("%d pods listed, want %d", len(list.Items), pods)
	}
	if lastBound < pods/2 {
		t.Errorf("only %d of %d pods bound", lastBound, pods)
	}
	t.Logf("settled after %s", time.Since(start))
	t.Logf("%d of %d pods bound on %d nodes after %d deletions and re-creations", lastBound, pods, nodes, churn)
	for _, v := range checkGPUBookings(list.Items, invs) {
		t.Error(v)
	}
}

// checkGPUBookings returns every violation of the booking rules among
// the bound pods, read from their kubegpu.io/gpu-ids annotations.
func checkGPUBookings(pods []v1.Pod, invs map[string]*gpunode.Node) []string {
	type gpu struct{ node, uuid string }
	whole := map[gpu]string{} // holder of a whole GPU
	shares := map[gpu]int{}
	var bad []string
	for i := range pods {
		p := &pods[i]
		if !testenv.Bound(p) {
			continue
		}
		value, ok := p.Annotations[contract.AnnotationGPUIDs]
		if !ok {
			bad = append(bad, fmt.Sprintf("pod %s bound to %s without %s", p.Name, p.Spec.NodeName, contract.AnnotationGPUIDs))
			continue
		}
		a, err := contract.ParseGPUIDs(value)
		if err != nil {
			bad = append(bad, fmt.Sprintf("pod %s: %v", p.Name, err))
			continue
		}
		inv := invs[p.Spec.NodeName]
		for _, u := range a.UUIDs {
			if inv == nil || !hasGPU(inv, u) {
				bad = append(bad, fmt.Sprintf("pod %s names GPU %s, not on its node %s", p.Name, u, p.Spec.NodeName))
			}
			g := gpu{p.Spec.NodeName, u}
			if other, ok := whole[g]; ok {
				bad = append(bad, fmt.Sprintf("GPU %s on %s: held whole by %s, also given to %s", u, g.node, other, p.Name))
			}
			if a.Shared() {
				shares[g] += a.Milli
				continue
			}
			whole[g] = p.Name
			if shares[g] > 0 {
				bad = append(bad, fmt.Sprintf("GPU %s on %s: shared, also given whole to %s", u, g.node, p.Name))
			}
		}
	}
	for g, m := range shares {
		if m > 1000 {
			bad = append(bad, fmt.Sprintf("GPU %s on %s: shares sum to %d", g.uuid, g.node, m))
		}
	}
	return bad
}

func hasGPU(inv *gpunode.Node, uuid string) bool {
	for _, g := range inv.GPUs {
		if g.UUID == uuid {
			return true
		}
	}
	return false
}

// createShapedNodes creates n nodes of the mixed shapes in turn, named
// with nameFmt, in parallel, and returns their inventories by name.
func createShapedNodes(ctx context.Context, t *testing.T, client kubernetes.Interface, n int, nameFmt string) map[string]*gpunode.Node {
	t.Helper()
	invs := map[string]*gpunode.Node{}
	var mu sync.Mutex
	if err := parallel(n, 8, func(i int) error {
		name := fmt.Sprintf(nameFmt, i)
		inv, err := createShapedNode(ctx, client, mixedShapes[i%len(mixedShapes)], name)
		mu.Lock()
		invs[name] = inv
		mu.Unlock()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return invs
}

// createShapedNode is addShapedNode for code without a *testing.T (the
// node creation workers).
func createShapedNode(ctx context.Context, client kubernetes.Interface, shape, name string) (*gpunode.Node, error) {
	base, err := gpunode.Shape(shape)
	if err != nil {
		return nil, err
	}
	inv := base.Clone()
	for i := range inv.GPUs {
		inv.GPUs[i].UUID = fmt.Sprintf("GPU-%s-%d", name, i)
	}
	annot, err := gpunode.Encode(inv)
	if err != nil {
		return nil, err
	}
	labels := gfdLabels(inv)
	labels[contract.LabelGPUSharing] = "true" // these nodes serve shares too
	_, err = testenv.AddGPUNode(ctx, client, testenv.GPUNode{
		Name: name, GPUs: len(inv.GPUs), Labels: labels,
		Annotations: map[string]string{contract.AnnotationTopology: annot},
	})
	return inv, err
}

func gfdLabels(inv *gpunode.Node) map[string]string {
	return map[string]string{
		contract.LabelGPUProduct: labelValue(inv.GPUs[0].Product),
		contract.LabelGPUMemory:  fmt.Sprint(inv.GPUs[0].MemoryMiB),
		contract.LabelGPUCount:   fmt.Sprint(len(inv.GPUs)),
	}
}
