package kedatest_test

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

	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	"google.golang.org/grpc"
	v2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubegpu/kubegpu/scaler/internal/testpki"
	"github.com/kubegpu/kubegpu/scaler/server"
)

// Exposition text shaped like each server's real /metrics output (names and
// labels as vLLM V1, Triton r24 and TGI 2.x print them).
const vllmText = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 30.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 31.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 31.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.5
`

const tritonText = `# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="resnet50",version="1"} 1200
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

const (
	ns         = "ml"
	metricName = "s0-" + server.MetricName
)

// fakePods serves body on 127.0.0.1 and 127.0.0.2 at one shared port, as
// two replicas of a Deployment do, and returns the pods that point at them.
func fakePods(t *testing.T, app, body string) ([]*corev1.Pod, int) {
	t.Helper()
	port := 0
	var pods []*corev1.Pod
	for i := 1; i <= 2; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			fmt.Fprint(w, body)
		}))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		pods = append(pods, readyPod(fmt.Sprintf("%s-%d", app, i), app, ip))
	}
	return pods, port
}

func readyPod(name, app, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// fakeProm answers /api/v1/query like Prometheus; hang makes it block
// until the caller gives up, like an overloaded server.
type fakeProm struct {
	srv  *httptest.Server
	hang atomic.Bool
}

func newFakeProm(t *testing.T) *fakeProm {
	t.Helper()
	p := &fakeProm{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.hang.Load() {
			<-r.Context().Done()
			return
		}
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query().Get("query")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(q, "histogram_quantile"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.4"]}]}}`)
		case strings.Contains(q, "vllm:num_requests_waiting"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[`+
				`{"metric":{"pod":"llama-0"},"value":[1700000000,"5"]},{"metric":{"pod":"llama-1"},"value":[1700000000,"6"]}]}}`)
		case strings.Contains(q, "vllm:num_requests_running"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[`+
				`{"metric":{"pod":"llama-0"},"value":[1700000000,"8"]},{"metric":{"pod":"llama-1"},"value":[1700000000,"8"]}]}}`)
		default:
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// env is a running scaler plus the fake servers it reads.
type env struct {
	addr     string
	ports    map[string]int // app -> metrics port
	prom     *fakeProm
	deadPort int
}

// startScaler runs kubegpu-scaler's gRPC server (with the real pods and
// Prometheus sources, a pod informer on a fake clientset) under tls.
func startScaler(t *testing.T, tlsFiles server.TLSFiles) *env {
	t.Helper()
	e := &env{ports: map[string]int{}, prom: newFakeProm(t)}
	var objs []*corev1.Pod
	for app, body := range map[string]string{"vllm": vllmText, "triton": tritonText, "tgi": tgiText} {
		pods, port := fakePods(t, app, body)
		objs = append(objs, pods...)
		e.ports[app] = port
	}
	// A replica whose server is gone: its port is closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.deadPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	objs = append(objs, readyPod("gone-1", "gone", "127.0.0.1"))

	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, p := range objs {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	// Shutdown waits for the informers, which stop only once ctx is done.
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("cache for %v did not sync", typ)
		}
	}

	s, err := server.New(ctx, server.Options{
		NewSource:    server.NewSourceFactory(server.SourceOptions{PodLister: lister, Timeout: 4 * time.Second}),
		PollInterval: 50 * time.Millisecond,
		FetchTimeout: 10 * time.Second,
		MaxAge:       time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := server.ServerCredentials(tlsFiles)
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(gl)
	t.Cleanup(g.Stop)
	e.addr = gl.Addr().String()
	return e
}

// kedaScaler builds KEDA's external scaler exactly as the operator does
// for a ScaledObject trigger.
func kedaScaler(t *testing.T, name string, md, auth map[string]string) scalers.Scaler {
	t.Helper()
	sc, err := scalers.NewExternalScaler(&scalersconfig.ScalerConfig{
		ScalableObjectName:      name,
		ScalableObjectNamespace: ns,
		ScalableObjectType:      "ScaledObject",
		TriggerType:             "external",
		TriggerMetadata:         md,
		AuthParams:              auth,
		MetricType:              v2.AverageValueMetricType,
		GlobalHTTPTimeout:       3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(context.Background()) })
	return sc
}

func withTLS(md map[string]string, on bool) map[string]string {
	if on {
		md["enableTLS"] = "true"
	}
	return md
}

// pollValue asks until the scaler answers (its first fetch runs in the
// background) and returns KEDA's metric value and activity.
func pollValue(t *testing.T, sc scalers.Scaler) (float64, bool, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		vals, active, err := sc.GetMetricsAndActivity(ctx, metricName)
		cancel()
		if err == nil {
			if len(vals) != 1 {
				t.Fatalf("got %d metric values, want 1", len(vals))
			}
			if vals[0].MetricName != metricName {
				t.Errorf("metric name %q, want %q", vals[0].MetricName, metricName)
			}
			return vals[0].Value.AsApproximateFloat64(), active, nil
		}
		if time.Now().After(deadline) {
			return 0, false, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runKEDAClient(t *testing.T, tlsOn bool, tlsFiles server.TLSFiles, auth map[string]string) {
	e := startScaler(t, tlsFiles)
	tests := []struct {
		name string
		md   map[string]string
		want float64
	}{
		// 2 pods x 3 waiting = 6 over 2 per replica.
		{"vllm-pods", map[string]string{"source": "pods", "preset": "vllm", "podSelector": "app=vllm",
			"metricsPort": strconv.Itoa(e.ports["vllm"]), "targetQueueDepth": "2"}, 3},
		// 2 pods x (5+2) pending = 14 over 4.
		{"triton-pods", map[string]string{"source": "pods", "preset": "triton", "podSelector": "app=triton",
			"metricsPort": strconv.Itoa(e.ports["triton"]), "targetQueueDepth": "4"}, 4},
		// 2 pods x 7 queued = 14 over 7.
		{"tgi-pods", map[string]string{"source": "pods", "preset": "tgi", "podSelector": "app=tgi",
			"metricsPort": strconv.Itoa(e.ports["tgi"]), "targetQueueDepth": "7"}, 2},
		// 5+6 waiting = 11 over 2 -> 6; p95 TTFT 0.4s under a 1s SLO holds
		// nothing more.
		{"vllm-prometheus", map[string]string{"source": "prometheus", "preset": "vllm", "serverAddress": e.prom.srv.URL,
			"targetQueueDepth": "2", "targetLatency": "1s"}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.md["scalerAddress"] = e.addr
			sc := kedaScaler(t, tt.name, withTLS(tt.md, tlsOn), auth)
			specs := sc.GetMetricSpecForScaling(context.Background())
			if len(specs) != 1 || specs[0].External == nil {
				t.Fatalf("metric specs %+v, want one External", specs)
			}
			ext := specs[0].External
			if ext.Metric.Name != metricName || ext.Target.Type != v2.AverageValueMetricType ||
				ext.Target.AverageValue == nil || ext.Target.AverageValue.AsApproximateFloat64() != 1 {
				t.Errorf("spec %s target %+v, want %s AverageValue 1", ext.Metric.Name, ext.Target, metricName)
			}
			v, active, err := pollValue(t, sc)
			if err != nil {
				t.Fatal(err)
			}
			if v != tt.want || !active {
				t.Errorf("value %v active %v, want %v active", v, active, tt.want)
			}
		})
	}

	t.Run("outage is an error, not zero", func(t *testing.T) {
		for name, md := range map[string]map[string]string{
			"pods-gone": {"source": "pods", "preset": "vllm", "podSelector": "app=gone", "metricsPort": strconv.Itoa(e.deadPort), "targetQueueDepth": "2"},
			"prom-gone": {"source": "prometheus", "preset": "vllm", "serverAddress": "http://127.0.0.1:" + strconv.Itoa(e.deadPort), "targetQueueDepth": "2"},
			"no-pods":   {"source": "pods", "preset": "vllm", "podSelector": "app=nothing", "targetQueueDepth": "2"},
		} {
			md["scalerAddress"] = e.addr
			sc := kedaScaler(t, name, withTLS(md, tlsOn), auth)
			time.Sleep(200 * time.Millisecond) // let the first fetch fail
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			vals, active, err := sc.GetMetricsAndActivity(ctx, metricName)
			cancel()
			if err == nil || len(vals) != 0 || active {
				t.Errorf("%s: values %v active %v err %v, want an error and no value", name, vals, active, err)
			}
		}
	})

	t.Run("stale data is an error, not the old value", func(t *testing.T) {
		md := map[string]string{"scalerAddress": e.addr, "source": "prometheus", "preset": "vllm",
			"serverAddress": e.prom.srv.URL, "targetQueueDepth": "2"}
		sc := kedaScaler(t, "stale", withTLS(md, tlsOn), auth)
		if v, _, err := pollValue(t, sc); err != nil || v != 6 {
			t.Fatalf("before the hang: %v, %v", v, err)
		}
		// Prometheus stops answering; the poller waits on its fetch
		// timeout, so the last snapshot just ages past MaxAge (1s).
		e.prom.hang.Store(true)
		t.Cleanup(func() { e.prom.hang.Store(false) })
		deadline := time.Now().Add(5 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, _, err := sc.GetMetricsAndActivity(ctx, metricName)
			cancel()
			if err != nil {
				if !strings.Contains(err.Error(), "stale") {
					t.Errorf("err = %v, want stale", err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("stale data still served after 5s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func TestKEDAClientPlaintext(t *testing.T) {
	runKEDAClient(t, false, server.TLSFiles{}, nil)
}

func TestKEDAClientMTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("kubegpu test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("kubegpu-scaler")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := srv.Write(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caPair := testpki.Pair{CertPEM: ca.CertPEM}
	caFile, _, err := caPair.Write(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("keda-operator")
	if err != nil {
		t.Fatal(err)
	}
	auth := map[string]string{"caCert": string(ca.CertPEM), "tlsClientCert": string(client.CertPEM), "tlsClientKey": string(client.KeyPEM)}
	files := server.TLSFiles{Cert: cert, Key: key, ClientCA: caFile}
	runKEDAClient(t, true, files, auth)

	t.Run("refused clients", func(t *testing.T) {
		e := startScaler(t, files)
		other, err := testpki.NewCA("someone else")
		if err != nil {
			t.Fatal(err)
		}
		stranger, err := other.Client("keda-operator")
		if err != nil {
			t.Fatal(err)
		}
		md := func() map[string]string {
			return map[string]string{"scalerAddress": e.addr, "source": "pods", "preset": "vllm", "podSelector": "app=vllm",
				"metricsPort": strconv.Itoa(e.ports["vllm"]), "targetQueueDepth": "2"}
		}
		cases := map[string]struct {
			md   map[string]string
			auth map[string]string
		}{
			"plaintext":               {md(), nil},
			"TLS without client cert": {withTLS(md(), true), map[string]string{"caCert": string(ca.CertPEM)}},
			"client cert of another CA": {withTLS(md(), true), map[string]string{"caCert": string(ca.CertPEM),
				"tlsClientCert": string(stranger.CertPEM), "tlsClientKey": string(stranger.KeyPEM)}},
		}
		for name, c := range cases {
			sc := kedaScaler(t, "refused", c.md, c.auth)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			vals, _, err := sc.GetMetricsAndActivity(ctx, metricName)
			cancel()
			if err == nil || len(vals) != 0 {
				t.Errorf("%s: values %v err %v, want refused", name, vals, err)
			}
			if specs := sc.GetMetricSpecForScaling(context.Background()); len(specs) != 0 {
				t.Errorf("%s: got metric specs %v, want none", name, specs)
			}
		}
	})
}
