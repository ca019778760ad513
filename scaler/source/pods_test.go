package source

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

// Exposition text shaped like each server's real /metrics output.
func vllmText(waiting, running int, ttft []int) string {
	return fmt.Sprintf(`# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %d.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.5
`, running, waiting, ttft[0], ttft[1], ttft[2], ttft[3], ttft[3])
}

const tritonText = `# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="resnet50",version="1"} 1200
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="resnet50",version="1"} 4800
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="resnet50",version="1"} 81234
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="resnet50",version="1"} 5
nv_inference_pending_request_count{model="bert",version="2"} 2
`

const tgiText = `# TYPE tgi_queue_size gauge
tgi_queue_size 7
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 4
# TYPE tgi_request_duration histogram
tgi_request_duration_bucket{le="0.5"} 10
tgi_request_duration_bucket{le="1"} 20
tgi_request_duration_bucket{le="+Inf"} 20
tgi_request_duration_sum 15
tgi_request_duration_count 20
`

const sglangText = `# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 11.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
`

// fakePod serves text on a loopback address; each fake pod gets its own
// 127.0.0.x so they can share the metricsPort, as real pods do.
type fakePod struct {
	name string
	ip   string
	body atomic.Value // string
	srv  *httptest.Server
}

func startPods(t *testing.T, handler func(p *fakePod) http.Handler, n int) ([]*fakePod, int) {
	t.Helper()
	var pods []*fakePod
	port := 0
	for i := 0; i < n; i++ {
		p := &fakePod{name: fmt.Sprintf("llm-%d", i), ip: fmt.Sprintf("127.0.0.%d", i+1)}
		l, err := net.Listen("tcp", net.JoinHostPort(p.ip, strconv.Itoa(port)))
		if err != nil {
			t.Skipf("cannot listen on %s: %v", p.ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		p.srv = httptest.NewUnstartedServer(handler(p))
		p.srv.Listener.Close()
		p.srv.Listener = l
		p.srv.Start()
		t.Cleanup(p.srv.Close)
		pods = append(pods, p)
	}
	return pods, port
}

func textHandler(p *fakePod) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, p.body.Load().(string))
	})
}

func lister(t testing.TB, pods ...*corev1.Pod) corelisters.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewPodLister(idx)
}

func pod(name, ip string, ready bool, lbl map[string]string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", Labels: lbl},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func parse(t testing.TB, kv ...string) *metadata.Metadata {
	t.Helper()
	md := map[string]string{"source": "pods", "podSelector": "app=llm", "preset": "vllm", "targetQueueDepth": "4"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	m, err := metadata.Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newPodsSource(t *testing.T, m *metadata.Metadata, fakes []*fakePod, extra ...*corev1.Pod) *Pods {
	t.Helper()
	var objs []*corev1.Pod
	for _, f := range fakes {
		objs = append(objs, pod(f.name, f.ip, true, map[string]string{"app": "llm"}))
	}
	objs = append(objs, extra...)
	src, err := NewPods(PodsConfig{Lister: lister(t, objs...), Namespace: "ml", Meta: m, Timeout: 500 * time.Millisecond, MaxBodyBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestPodsPresets(t *testing.T) {
	tests := []struct {
		preset, body           string
		wantQueue, wantRunning float64
	}{
		{"vllm", vllmText(3, 5, []int{0, 0, 0, 0}), 3, 5},
		{"triton", tritonText, 7, 0},
		{"tgi", tgiText, 7, 4},
		{"sglang", sglangText, 3, 11},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			fakes, port := startPods(t, textHandler, 2)
			for _, f := range fakes {
				f.body.Store(tt.body)
			}
			m := parse(t, "preset", tt.preset, "metricsPort", strconv.Itoa(port))
			// A not-ready pod and a pod of another app are not scraped.
			src := newPodsSource(t, m, fakes,
				pod("starting", "127.0.0.9", false, map[string]string{"app": "llm"}),
				pod("other", "127.0.0.10", true, map[string]string{"app": "web"}))
			snap, err := src.Fetch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if snap.ReadyReplicas != 2 || snap.QueueTotal != 2*tt.wantQueue || snap.RunningTotal != 2*tt.wantRunning {
				t.Errorf("snapshot %+v, want 2 replicas queue %v running %v", snap, 2*tt.wantQueue, 2*tt.wantRunning)
			}
			if len(snap.Replicas) != 2 || snap.Replicas[0].Queue != tt.wantQueue {
				t.Errorf("per-replica %+v", snap.Replicas)
			}
		})
	}
}

func TestPodsLatencyWindow(t *testing.T) {
	fakes, port := startPods(t, textHandler, 1)
	m := parse(t, "metricsPort", strconv.Itoa(port), "targetLatency", "500ms")
	src := newPodsSource(t, m, fakes)
	now := time.Unix(1000, 0)
	src.cfg.Now = func() time.Time { return now }

	// Lifetime: 1000 fast requests. The first scrape has no baseline, so
	// no percentile yet (lifetime totals are not a window).
	fakes[0].body.Store(vllmText(0, 1, []int{1000, 1000, 1000, 1000}))
	snap, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Latency.Valid {
		t.Fatalf("first scrape must not give a percentile: %+v", snap.Latency)
	}
	// 30s later: 100 new requests, all between 0.5s and 1s. A lifetime
	// p95 would still say <0.1s; the window must say ~0.97s.
	now = now.Add(30 * time.Second)
	fakes[0].body.Store(vllmText(0, 1, []int{1000, 1000, 1100, 1100}))
	snap, err = src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Latency.Valid || snap.Latency.Value < 900*time.Millisecond || snap.Latency.Value > time.Second || snap.Latency.Observations != 100 {
		t.Errorf("windowed p95 = %+v, want ~0.975s over 100 observations", snap.Latency)
	}
	if snap.Latency.WithinTarget != 0 {
		t.Errorf("within the 500ms target: %v of the window's requests, want 0 (all took 0.5-1s)", snap.Latency.WithinTarget)
	}
	if snap.Latency.Recent != 100 || snap.Latency.RecentOver != 30*time.Second || len(snap.Replicas) != 1 || snap.Replicas[0].Recent != 100 {
		t.Errorf("since the previous scrape: %v over %s (replicas %+v), want 100 over 30s", snap.Latency.Recent, snap.Latency.RecentOver, snap.Replicas)
	}
	// 10s later, 20 more: Recent counts since the previous scrape, not
	// over the window.
	now = now.Add(10 * time.Second)
	fakes[0].body.Store(vllmText(0, 1, []int{1000, 1000, 1120, 1120}))
	if snap, err = src.Fetch(context.Background()); err != nil || snap.Latency.Recent != 20 || snap.Latency.RecentOver != 10*time.Second || snap.Latency.Observations != 120 {
		t.Errorf("second window scrape: %+v %v, want 20 recent over 10s, 120 in the window", snap.Latency, err)
	}
	// No new requests: no distribution in the window.
	now = now.Add(80 * time.Second)
	snap, err = src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Latency.Valid {
		t.Errorf("idle window must have no percentile: %+v", snap.Latency)
	}
	// Counter reset (pod restarted in place): no negative delta.
	now = now.Add(10 * time.Second)
	fakes[0].body.Store(vllmText(0, 1, []int{1, 1, 1, 1}))
	if snap, err = src.Fetch(context.Background()); err != nil || snap.Latency.Valid {
		t.Errorf("after reset: %+v %v", snap.Latency, err)
	}
}

func TestPodsErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler func(p *fakePod) http.Handler
		kv      []string
		want    string
	}{
		{"garbage", func(*fakePod) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>oops</html>\n{{{") })
		}, nil, "parse"},
		{"wrong preset", textHandler, []string{"preset", "tgi"}, "tgi_queue_size not found"},
		{"missing latency histogram", textHandler, []string{"targetLatency", "1s", "latencySignal", "e2e"}, "vllm:e2e_request_latency_seconds not found"},
		{"http 500", func(*fakePod) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "engine dead", 500) })
		}, nil, "HTTP 500"},
		{"huge body", func(*fakePod) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				line := strings.Repeat("#", 1023) + "\n"
				for i := 0; i < 1024; i++ {
					fmt.Fprint(w, line)
				}
			})
		}, nil, "size limit"},
		{"slow", func(*fakePod) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			})
		}, nil, "deadline exceeded"},
		{"wrong path", textHandler, []string{"metricsPath", "/stats"}, "HTTP 404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes, port := startPods(t, tt.handler, 1)
			fakes[0].body.Store(vllmText(1, 1, []int{0, 0, 0, 0}))
			m := parse(t, append([]string{"metricsPort", strconv.Itoa(port)}, tt.kv...)...)
			src := newPodsSource(t, m, fakes)
			start := time.Now()
			snap, err := src.Fetch(context.Background())
			if err == nil {
				t.Fatalf("want error, got %+v", snap)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if time.Since(start) > 2*time.Second {
				t.Errorf("took %v despite 500ms timeout", time.Since(start))
			}
		})
	}
}

func TestPodsOnePodDownFailsAll(t *testing.T) {
	fakes, port := startPods(t, textHandler, 2)
	fakes[0].body.Store(vllmText(9, 1, []int{0, 0, 0, 0}))
	fakes[1].srv.Close()
	src := newPodsSource(t, parse(t, "metricsPort", strconv.Itoa(port)), fakes)
	if snap, err := src.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Errorf("want partial failure error, got %+v %v", snap, err)
	}
}

func TestPodsNoReadyPods(t *testing.T) {
	m := parse(t)
	src, err := NewPods(PodsConfig{Lister: lister(t, pod("a", "10.0.0.1", false, map[string]string{"app": "llm"})), Namespace: "ml", Meta: m})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "no ready pods") {
		t.Errorf("want no-ready-pods error, got %v", err)
	}
	if _, err := NewPods(PodsConfig{Namespace: "ml", Meta: m}); err == nil {
		t.Error("want error without lister")
	}
}
