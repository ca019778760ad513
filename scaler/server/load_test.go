package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubegpu/kubegpu/scaler/internal/faultsrv"
)

// faultyLoad is the scaler serving 500 ScaledObjects, one in faultyEvery
// of them on a misbehaving source, with the production defaults (5s
// polls, 3s source timeout, 8 MiB body limit, 10s fetch timeout).
type faultyLoad struct {
	client  pb.ExternalScalerClient
	healthy []*pb.GetMetricsRequest
	faulty  []*pb.GetMetricsRequest
	// faultOf names each faulty request's fault.
	faultOf map[*pb.GetMetricsRequest]faultsrv.Fault
}

const (
	loadObjects = 500
	faultyEvery = 5 // 100 of 500 faulty
)

// startFaultyLoad builds the 500 ScaledObjects: the healthy ones as in
// bench500 (2 vLLM pods each or a fake Prometheus), the faulty ones
// cycling through every fault on pods (2 pods each) and on Prometheus.
// With faults false the same 100 ScaledObjects read healthy endpoints of
// the same servers: the baseline. It returns once every ScaledObject has
// been asked about once, so all pollers run.
func startFaultyLoad(tb testing.TB, faults bool) *faultyLoad {
	tb.Helper()
	listen := func(h http.Handler, ips ...string) int {
		port := 0
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				tb.Skipf("cannot listen on %s: %v", ip, err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			srv := httptest.NewUnstartedServer(h)
			srv.Listener.Close()
			srv.Listener = l
			srv.Start()
			tb.Cleanup(srv.Close)
		}
		return port
	}
	goodIPs := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}
	goodPort := listen(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, benchVLLM) }), goodIPs...)
	promAnswer := func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Query().Get("query"), "histogram_quantile") {
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.3"]}]}}`)
			return
		}
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"3"]},{"metric":{"pod":"b"},"value":[1,"4"]}]}}`)
	}
	prom := httptest.NewServer(http.HandlerFunc(promAnswer))
	tb.Cleanup(prom.Close)
	// One server plays every faulty pod and Prometheus, the fault named
	// by the first path segment; flapping at 2.5s, half a poll.
	podsFault := faultsrv.New(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, benchVLLM) }, "vllm:num_requests_waiting{engine=\"0\"} 3\n")
	podsFault.FlapPeriod = 2500 * time.Millisecond
	badPort := listen(faultsrv.ByPath(podsFault), "127.0.0.5", "127.0.0.6")
	promFault := faultsrv.New(promAnswer, `{"metric":{"pod":"x"},"value":[1,"1"]},`)
	promFault.FlapPeriod = 2500 * time.Millisecond
	badProm := httptest.NewServer(faultsrv.ByPath(promFault))
	tb.Cleanup(badProm.Close)

	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	addPod := func(name, app, ip string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", Labels: map[string]string{"app": app}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		if err := idx.Add(p); err != nil {
			tb.Fatal(err)
		}
	}
	ld := &faultyLoad{faultOf: map[*pb.GetMetricsRequest]faultsrv.Fault{}}
	for i := 0; i < loadObjects; i++ {
		name := fmt.Sprintf("model-%03d", i)
		md := map[string]string{"scalerAddress": "kubegpu-scaler:9090", "preset": "vllm", "targetQueueDepth": "2", "targetLatency": "1s"}
		req := &pb.GetMetricsRequest{MetricName: MetricName, ScaledObjectRef: &pb.ScaledObjectRef{Name: name, Namespace: "ml", ScalerMetadata: md}}
		faulty := i%faultyEvery == faultyEvery-1
		pods := i%2 == 0
		var fault faultsrv.Fault
		if faulty {
			if faults {
				fault = faultsrv.Faults[(i/faultyEvery)%len(faultsrv.Faults)]
			}
			ld.faulty = append(ld.faulty, req)
			ld.faultOf[req] = fault
		} else {
			ld.healthy = append(ld.healthy, req)
		}
		switch {
		case pods && faulty:
			md["source"], md["podSelector"], md["metricsPort"], md["metricsPath"] = "pods", "app="+name, strconv.Itoa(badPort), "/"+fault.String()+"/metrics"
			addPod(name+"-0", name, "127.0.0.5")
			addPod(name+"-1", name, "127.0.0.6")
		case pods:
			md["source"], md["podSelector"], md["metricsPort"] = "pods", "app="+name, strconv.Itoa(goodPort)
			addPod(name+"-0", name, goodIPs[i%4])
			addPod(name+"-1", name, goodIPs[(i+1)%4])
		case faulty:
			md["source"], md["serverAddress"] = "prometheus", badProm.URL+"/"+fault.String()
		default:
			md["source"], md["serverAddress"] = "prometheus", prom.URL
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	s, err := New(ctx, Options{NewSource: NewSourceFactory(SourceOptions{PodLister: corelisters.NewPodLister(idx)})})
	if err != nil {
		tb.Fatal(err)
	}
	ld.client = serveLoopback(tb, s)

	// First contact, all at once as KEDA does after a restart: the
	// healthy ones answer, the faulty ones fail (slow ones after the
	// 5s first-fetch wait).
	var wg sync.WaitGroup
	errs := make(chan error, loadObjects)
	for _, r := range append(slices.Clone(ld.healthy), ld.faulty...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
			defer ccancel()
			resp, err := ld.client.GetMetrics(cctx, r)
			if f, bad := ld.faultOf[r]; bad {
				if err == nil && f != faultsrv.Flap && f != faultsrv.Healthy {
					errs <- fmt.Errorf("%s (%s): answered %v", r.ScaledObjectRef.Name, f, resp)
				}
				return
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", r.ScaledObjectRef.Name, err)
			} else if v := resp.MetricValues[0].MetricValueFloat; v < 3 {
				errs <- fmt.Errorf("%s: value %v, want >= 3", r.ScaledObjectRef.Name, v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Error(err)
	}
	if tb.Failed() {
		tb.FailNow()
	}
	if got := s.Tracked(); got != loadObjects {
		tb.Fatalf("tracking %d ScaledObjects, want %d", got, loadObjects)
	}
	return ld
}

// loadResult is what run measured.
type loadResult struct {
	healthy      []time.Duration // sorted
	faultyErrors int
	faultyCalls  int
}

func (r loadResult) q(p float64) time.Duration {
	return r.healthy[int(p*float64(len(r.healthy)-1))]
}

// run calls GetMetrics calls times from workers goroutines, every
// faultyEvery-th call on a faulty ScaledObject (as KEDA asks about all of
// them), and times the healthy calls. A healthy call must answer a
// value; a faulty one must answer Unavailable or, flapping, a value.
func (ld *faultyLoad) run(tb testing.TB, calls, workers int) loadResult {
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	per := calls / workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			durs := make([]time.Duration, 0, per)
			var ferrs, fcalls int
			for i := 0; i < per; i++ {
				n := w*per + i
				if n%faultyEvery == faultyEvery-1 {
					r := ld.faulty[n%len(ld.faulty)]
					fcalls++
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := ld.client.GetMetrics(ctx, r)
					cancel()
					if err != nil {
						ferrs++
						if status.Code(err) != codes.Unavailable {
							tb.Errorf("%s (%s): %v, want Unavailable", r.ScaledObjectRef.Name, ld.faultOf[r], err)
						}
					} else if f := ld.faultOf[r]; f != faultsrv.Flap && f != faultsrv.Healthy {
						tb.Errorf("%s (%s) answered a value", r.ScaledObjectRef.Name, f)
					}
					continue
				}
				r := ld.healthy[n%len(ld.healthy)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				resp, err := ld.client.GetMetrics(ctx, r)
				d := time.Since(start)
				cancel()
				if err != nil {
					tb.Errorf("%s: %v", r.ScaledObjectRef.Name, err)
					continue
				}
				if v := resp.MetricValues[0].MetricValueFloat; v < 3 {
					tb.Errorf("%s: value %v, want >= 3", r.ScaledObjectRef.Name, v)
				}
				durs = append(durs, d)
			}
			mu.Lock()
			res.healthy = append(res.healthy, durs...)
			res.faultyErrors += ferrs
			res.faultyCalls += fcalls
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(res.healthy)
	return res
}

// TestGetMetrics500FaultySources serves 500 ScaledObjects, 100 of them on
// crashing, flapping, hanging, garbage-answering or endless sources, to 8
// concurrent callers, and checks that every healthy ScaledObject keeps
// answering its value, every faulty one answers Unavailable (never a
// value from missing data), and healthy calls are not held up by the
// faulty ones. The goal is p99 < 5 ms, which
// BenchmarkGetMetrics500Faulty reports; here 8 callers share 2 cores with
// the other packages' tests, so the tail is mostly CPU queueing and the
// test asserts p99 < 250 ms (KUBEGPU_SCALER_P99_BOUND): far above the
// goal, far below the 3 s a healthy call would wait if it shared a lock
// or a fetch with a hanging source. It logs the p99 it measured.
func TestGetMetrics500FaultySources(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 500 pollers against live fake servers")
	}
	bound := 250 * time.Millisecond
	if v := os.Getenv("KUBEGPU_SCALER_P99_BOUND"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KUBEGPU_SCALER_P99_BOUND: %v", err)
		}
		bound = d
	}
	ld := startFaultyLoad(t, true)
	res := ld.run(t, 10000, 8)
	p50, p99, pmax := res.q(0.5), res.q(0.99), res.q(1)
	t.Logf("500 ScaledObjects, %d faulty; %d healthy calls from 8 callers: p50 %v p99 %v max %v; faulty: %d of %d calls Unavailable",
		len(ld.faulty), len(res.healthy), p50, p99, pmax, res.faultyErrors, res.faultyCalls)
	if res.faultyErrors == 0 {
		t.Error("no faulty ScaledObject answered Unavailable")
	}
	if p99 > bound {
		t.Errorf("healthy GetMetrics p99 %v over %v", p99, bound)
	}
}

// BenchmarkGetMetrics500Faulty reports the healthy calls' latency with
// 100 of 500 ScaledObjects on faulty sources (faults=100), and the same
// 100 on healthy endpoints (faults=0) as the baseline: b.N calls, one at
// a time as BenchmarkGetMetrics500 makes them, so the figure is the
// server's and not 8 callers queueing for 2 cores.
func BenchmarkGetMetrics500Faulty(b *testing.B) {
	for _, faults := range []bool{false, true} {
		b.Run(fmt.Sprintf("faults=%d", map[bool]int{false: 0, true: loadObjects / faultyEvery}[faults]), func(b *testing.B) {
			ld := startFaultyLoad(b, faults)
			b.ResetTimer()
			res := ld.run(b, max(b.N, 1), 1)
			b.StopTimer()
			b.ReportMetric(float64(res.q(0.5))/1e6, "p50-ms")
			b.ReportMetric(float64(res.q(0.99))/1e6, "p99-ms")
			b.ReportMetric(float64(res.q(1))/1e6, "max-ms")
			b.ReportMetric(float64(res.faultyErrors)/float64(max(1, res.faultyCalls)), "faulty-unavailable")
			if rss, err := vmRSS(); err == nil {
				b.ReportMetric(rss/(1<<20), "rss-MiB")
			}
		})
	}
}
