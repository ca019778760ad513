package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// Sizes of BenchmarkThroughput, overridable for quick runs.
const (
	benchNodesEnv = "KUBEGPU_BENCH_NODES" // default 5000
	benchPodsEnv  = "KUBEGPU_BENCH_PODS"  // default 10000
	// Rounds of the two profiles, alternating which runs first; the
	// line printed is the mean (default 1).
	benchRoundsEnv = "KUBEGPU_BENCH_ROUNDS"
)

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// throughputPods is the whole-GPU mix (1/2/4/8 GPUs, 60/20/12/8 %): about
// 2.1 GPUs a pod, so 10000 pods take 60 % of 5000 nodes' 35000 GPUs and
// every pod fits under both profiles. Shares are left out of the
// comparison because the default profile cannot place them (only GPUPack
// knows kubegpu.io/gpu-milli); BenchmarkThroughput measures them in a
// separate kubegpu-only run.
func throughputPods(n int, shares bool) []*v1.Pod {
	r := rand.New(rand.NewPCG(7, 11))
	pods := make([]*v1.Pod, n)
	for i := range pods {
		name := fmt.Sprintf("p-%05d", i)
		x := r.IntN(100)
		if shares && x < 25 {
			pods[i] = newPod(name, withResource(contract.ResourceGPUMilli, strconv.Itoa(250*(1+r.IntN(3)))))
			continue
		}
		gpus := 1
		switch {
		case x < 60:
		case x < 80:
			gpus = 2
		case x < 92:
			gpus = 4
		default:
			gpus = 8
		}
		pods[i] = newPod(name, withResource(contract.ResourceGPU, strconv.Itoa(gpus)))
	}
	return pods
}

// benchNodes are the API objects of n nodes of mixed shapes.
func benchNodes(n int) ([]testenv.GPUNode, error) {
	out := make([]testenv.GPUNode, n)
	for i := range out {
		name := fmt.Sprintf("node-%05d", i)
		base, err := gpunode.Shape(mixedShapes[i%len(mixedShapes)])
		if err != nil {
			return nil, err
		}
		inv := base.Clone()
		for j := range inv.GPUs {
			inv.GPUs[j].UUID = fmt.Sprintf("GPU-%s-%d", name, j)
		}
		annot, err := gpunode.Encode(inv)
		if err != nil {
			return nil, err
		}
		out[i] = testenv.GPUNode{
			Name: name, GPUs: len(inv.GPUs), Labels: gfdLabels(inv),
			Annotations: map[string]string{contract.AnnotationTopology: annot},
			// Share slots, as the device plugin advertises them where
			// sharing is on.
			Extra: v1.ResourceList{contract.ResourceGPUMilli: *resource.NewQuantity(int64(1000*len(inv.GPUs)), resource.DecimalSI)},
		}
	}
	return out, nil
}

// throughputRun creates the nodes and pods on a fresh control plane,
// then starts the scheduler and returns pods/s from the first bind to the
// last, so apiserver start, object creation and informer sync are left
// out and only scheduling (and binding) is timed.
func throughputRun(b *testing.B, nodes []testenv.GPUNode, pods []*v1.Pod, cfg testenv.SchedulerConfig) float64 {
	env := testenv.Start(b)
	client := fastClient(b, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := parallel(len(nodes), 16, func(i int) error {
		_, err := testenv.AddGPUNode(ctx, client, nodes[i])
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := parallel(len(pods), 16, func(i int) error {
		_, err := client.CoreV1().Pods("default").Create(ctx, pods[i], metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}

	// Count binds from a watch, which costs the apiserver far less than
	// polling lists of 10000 pods.
	var (
		mu          sync.Mutex
		bound       = map[string]bool{}
		first, last time.Time
		all         = make(chan struct{})
	)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace("default"))
	onPod := func(obj any) {
		p, ok := obj.(*v1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if bound[p.Name] {
			return
		}
		now := time.Now()
		if len(bound) == 0 {
			first = now
		}
		bound[p.Name], last = true, now
		if len(bound) == len(pods) {
			close(all)
		}
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, obj any) { onPod(obj) },
	}); err != nil {
		b.Fatal(err)
	}
	// Shutdown waits for the informers, which stop only with their
	// context: cancel it first.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer func() { stopWatch(); factory.Shutdown() }()
	factory.Start(watchCtx.Done())
	factory.WaitForCacheSync(watchCtx.Done())

	b.ResetTimer()
	started := time.Now()
	sched := env.StartScheduler(b, cfg)
	// Stop waiting when all are bound or nothing bound for 30 s (some
	// pods may not fit; they do not count).
	for done := false; !done; {
		select {
		case <-all:
			done = true
		case <-ctx.Done():
			b.Fatal("timed out")
		case <-time.After(time.Second):
			mu.Lock()
			n, idle := len(bound), time.Since(last)
			if last.IsZero() {
				idle = time.Since(started)
			}
			mu.Unlock()
			if n == 0 && idle > 3*time.Minute {
				b.Fatalf("no pod bound %s after the scheduler started", idle.Round(time.Second))
			}
			done = n > 0 && idle > 30*time.Second
		}
	}
	b.StopTimer()
	sched.Stop()
	mu.Lock()
	defer mu.Unlock()
	if len(bound) < 2 {
		b.Fatalf("%d pods bound", len(bound))
	}
	rate := float64(len(bound)-1) / last.Sub(first).Seconds()
	b.Logf("%d of %d pods bound in %s: %.1f pods/s", len(bound), len(pods), last.Sub(first).Round(time.Millisecond), rate)
	b.ReportMetric(rate, "pods/s")
	b.ReportMetric(float64(len(bound)), "bound")
	return rate
}

// stateBytesPerNode is the heap GPUPack's state holds per node, filled
// the way the informer fills it; the node objects exist beforehand (the
// informer's cache holds them anyway).
func stateBytesPerNode(b *testing.B, specs []testenv.GPUNode) float64 {
	nodes := make([]*v1.Node, len(specs))
	for i, s := range specs {
		nodes[i] = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: s.Labels, Annotations: s.Annotations}}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := gpupack.NewStandalone(nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range nodes {
		p.ObserveNode(n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	runtime.KeepAlive(nodes)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(nodes))
}

// BenchmarkThroughput schedules the same whole-GPU pods on the same fake
// nodes with kubegpu's profile and with the default profile (plain
// kube-scheduler), one after the other on fresh control planes, and
// prints one line:
//
//	throughput: kubegpu=X pods/s default=Y pods/s ratio=Z
//
// then kubegpu's rate with shares in the mix and GPUPack's state per
// node. It runs once whatever -benchtime says; make bench-throughput runs
// it alone. Sizes: KUBEGPU_BENCH_NODES, KUBEGPU_BENCH_PODS; with
// KUBEGPU_BENCH_ROUNDS=N the two profiles run N times, alternating which
// goes first, and the line gives the mean rates.
func BenchmarkThroughput(b *testing.B) {
	nNodes := envInt(b, benchNodesEnv, 5000)
	nPods := envInt(b, benchPodsEnv, 10000)
	nodes, err := benchNodes(nNodes)
	if err != nil {
		b.Fatal(err)
	}
	// Measured first, before control planes come and go and their
	// garbage blurs the heap figures.
	state := stateBytesPerNode(b, nodes)
	ours := testenv.SchedulerConfig{Profiles: registry.Profile, Registry: registry.Plugins()}
	def := testenv.SchedulerConfig{Profiles: testenv.DefaultProfiles}
	rounds := envInt(b, benchRoundsEnv, 1)
	fmt.Printf("state: %.0f bytes/node (GPUPack, %d nodes)\n", state, nNodes)
	pods := throughputPods(nPods, false)
	var sums [2]float64 // kubegpu, default
	for r := range rounds {
		// Odd rounds run the default profile first, so that neither
		// profile always inherits the previous control plane's garbage.
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		var rate [2]float64
		for _, i := range order {
			name, cfg := "kubegpu", ours
			if i == 1 {
				name, cfg = "default", def
			}
			b.Run(name, func(b *testing.B) { rate[i] = throughputRun(b, nodes, pods, cfg) })
			if rate[i] == 0 {
				return // the run failed; it said why
			}
		}
		sums[0] += rate[0]
		sums[1] += rate[1]
		if rounds > 1 {
			fmt.Printf("throughput round %d: kubegpu=%.1f pods/s default=%.1f pods/s ratio=%.2f\n",
				r+1, rate[0], rate[1], rate[0]/rate[1])
		}
	}
	// The comparison is complete: print it before the longer shares run.
	k, d := sums[0]/float64(rounds), sums[1]/float64(rounds)
	fmt.Printf("throughput: kubegpu=%.1f pods/s default=%.1f pods/s ratio=%.2f\n", k, d, k/d)
	fmt.Printf("throughput sizes: %d nodes, %d whole-GPU pods in both runs, mean of %d round(s)\n", nNodes, nPods, rounds)
	b.Run("kubegpu-shares", func(b *testing.B) {
		fmt.Printf("throughput with 25%% shares: kubegpu=%.1f pods/s\n", throughputRun(b, nodes, throughputPods(nPods, true), ours))
	})
}
