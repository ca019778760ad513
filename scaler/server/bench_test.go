package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

const benchVLLM = `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 30.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="m"} 33.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 34.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 34.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 9.5
`

// bench500 runs the whole scaler in-process with 500 ScaledObjects on the
// real sources: 250 scrape 2 vLLM pods each (four loopback servers stand in
// for the 500 pods), 250 query a fake Prometheus. Pollers run at the
// default 5s interval while the benchmark calls GetMetrics over gRPC.
func bench500(b *testing.B) (pb.ExternalScalerClient, []*pb.GetMetricsRequest) {
	b.Helper()
	const n = 500
	port := 0
	var ips []string
	for i := 1; i <= 4; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			b.Skipf("cannot listen on %s: %v", ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, benchVLLM)
		}))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		b.Cleanup(srv.Close)
		ips = append(ips, ip)
	}
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		if strings.Contains(q, "histogram_quantile") {
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.3"]}]}}`)
			return
		}
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"3"]},{"metric":{"pod":"b"},"value":[1,"4"]}]}}`)
	}))
	b.Cleanup(prom.Close)

	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	var reqs []*pb.GetMetricsRequest
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("model-%03d", i)
		md := map[string]string{"scalerAddress": "kubegpu-scaler:9090", "preset": "vllm", "targetQueueDepth": "2", "targetLatency": "1s"}
		if i%2 == 0 {
			md["source"], md["podSelector"], md["metricsPort"] = "pods", "app="+name, strconv.Itoa(port)
			for r := 0; r < 2; r++ {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, r), Namespace: "ml", Labels: map[string]string{"app": name}},
					Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ips[(i+r)%len(ips)],
						Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
				if err := idx.Add(p); err != nil {
					b.Fatal(err)
				}
			}
		} else {
			md["source"], md["serverAddress"] = "prometheus", prom.URL
		}
		reqs = append(reqs, &pb.GetMetricsRequest{MetricName: MetricName, ScaledObjectRef: &pb.ScaledObjectRef{Name: name, Namespace: "ml", ScalerMetadata: md}})
	}

	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	s, err := New(ctx, Options{NewSource: NewSourceFactory(SourceOptions{PodLister: corelisters.NewPodLister(idx)})})
	if err != nil {
		b.Fatal(err)
	}
	client := serveLoopback(b, s)
	// Every ScaledObject answers before timing starts.
	for _, r := range reqs {
		resp, err := client.GetMetrics(ctx, r)
		if err != nil {
			b.Fatalf("%s: %v", r.ScaledObjectRef.Name, err)
		}
		if v := resp.MetricValues[0].MetricValueFloat; v < 3 {
			b.Fatalf("%s: value %v, want >= 3", r.ScaledObjectRef.Name, v)
		}
	}
	if got := s.Tracked(); got != n {
		b.Fatalf("tracking %d ScaledObjects, want %d", got, n)
	}
	return client, reqs
}

// BenchmarkGetMetrics500 reports ns/op, p50/p99 of the per-call latency
// and the process's resident memory with 500 ScaledObjects live.
func BenchmarkGetMetrics500(b *testing.B) {
	client, reqs := bench500(b)
	measureGetMetrics(b, client, reqs)
}

// BenchmarkGetMetrics500Idle is the same server with sources that cost
// nothing to poll: the request path alone, without the pollers' scrapes and
// parses competing for the CPU.
func BenchmarkGetMetrics500Idle(b *testing.B) {
	src := &fakeSource{}
	src.set(source.Snapshot{QueueTotal: 7, ReadyReplicas: 2}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	s, err := New(ctx, Options{NewSource: func(string, *metadata.Metadata) (source.Source, error) { return src, nil }})
	if err != nil {
		b.Fatal(err)
	}
	client := serveLoopback(b, s)
	var reqs []*pb.GetMetricsRequest
	for i := 0; i < 500; i++ {
		r := &pb.GetMetricsRequest{MetricName: MetricName, ScaledObjectRef: ref()}
		r.ScaledObjectRef.Name = fmt.Sprintf("model-%03d", i)
		if _, err := client.GetMetrics(ctx, r); err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	measureGetMetrics(b, client, reqs)
}

func measureGetMetrics(b *testing.B, client pb.ExternalScalerClient, reqs []*pb.GetMetricsRequest) {
	ctx := context.Background()
	durs := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := client.GetMetrics(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durs)
	q := func(p float64) float64 { return float64(durs[int(p*float64(len(durs)-1))]) / 1e6 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	if rss, err := vmRSS(); err == nil {
		b.ReportMetric(rss/(1<<20), "rss-MiB")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}

// vmRSS reads the process's resident set size in bytes.
func vmRSS() (float64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status: %v", sc.Err())
}

// serveLoopback serves s over plaintext gRPC on a loopback port for the
// test's lifetime and returns a client dialled to it.
func serveLoopback(tb testing.TB, s *Server) pb.ExternalScalerClient {
	tb.Helper()
	g := grpc.NewServer()
	s.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go g.Serve(l)
	tb.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return pb.NewExternalScalerClient(conn)
}
