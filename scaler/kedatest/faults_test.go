package kedatest_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubegpu/kubegpu/scaler/internal/faultsrv"
	"github.com/kubegpu/kubegpu/scaler/server"
)

// KEDA's client logs each failed call through controller-runtime's
// logger; without one set it prints a stack trace warning instead.
func init() { crlog.SetLogger(logr.Discard()) }

const (
	sourceTimeout = 300 * time.Millisecond
	maxBody       = 1 << 20
)

// faultEnv is a scaler with short timeouts in front of one faulty pair of
// vLLM pods, one faulty Prometheus and one healthy pair of pods.
type faultEnv struct {
	addr                  string
	pods, prom            *faultsrv.Handler
	podsPort, healthyPort int
	promURL               string
}

func listenPair(t *testing.T, h http.Handler) int {
	t.Helper()
	port := 0
	for i := 1; i <= 2; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(fmt.Sprintf("127.0.0.%d", i), strconv.Itoa(port)))
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.%d: %v", i, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		srv := httptest.NewUnstartedServer(h)
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
	}
	return port
}

func startFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	e := &faultEnv{}
	e.pods = faultsrv.New(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, vllmText) },
		"vllm:num_requests_waiting{engine=\"0\"} 3\n")
	e.pods.SlowDelay = 3 * time.Second
	e.podsPort = listenPair(t, e.pods)
	e.healthyPort = listenPair(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, vllmText) }))
	e.prom = faultsrv.New(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		switch {
		case strings.Contains(q, "vllm:num_requests_waiting"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"llama-0"},"value":[1,"5"]},{"metric":{"pod":"llama-1"},"value":[1,"6"]}]}}`)
		default:
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"llama-0"},"value":[1,"8"]}]}}`)
		}
	}, `{"metric":{"pod":"x"},"value":[1,"1"]},`)
	e.prom.SlowDelay = 3 * time.Second
	promSrv := httptest.NewServer(e.prom)
	t.Cleanup(promSrv.Close)
	e.promURL = promSrv.URL

	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, app := range []string{"faulty", "faulty", "fine", "fine"} {
		p := readyPod(fmt.Sprintf("%s-%d", app, i), app, fmt.Sprintf("127.0.0.%d", i%2+1))
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	factory.WaitForCacheSync(ctx.Done())

	s, err := server.New(ctx, server.Options{
		NewSource: server.NewSourceFactory(server.SourceOptions{PodLister: lister, Timeout: sourceTimeout, MaxBodyBytes: maxBody}),
		// Polls every 50ms so each fault reaches the scaler quickly; a
		// fetch is cut after 1s; data older than 2s is refused.
		PollInterval: 50 * time.Millisecond,
		FetchTimeout: time.Second,
		MaxAge:       2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	e.addr = l.Addr().String()
	return e
}

// TestKEDAClientSourceFaults drives each fault into a pods source and a
// Prometheus source while KEDA's own client polls them, and checks what
// KEDA sees: while the fault lasts every answer is either an error or the
// last good value (never zero, never "inactive"), the fault turns into an
// error within the timeouts, a healthy ScaledObject on the same scaler
// keeps its value throughout, and the value comes back once the source
// heals.
func TestKEDAClientSourceFaults(t *testing.T) {
	e := startFaultEnv(t)
	podsMD := map[string]string{"scalerAddress": e.addr, "source": "pods", "preset": "vllm", "podSelector": "app=faulty",
		"metricsPort": strconv.Itoa(e.podsPort), "targetQueueDepth": "2"}
	promMD := map[string]string{"scalerAddress": e.addr, "source": "prometheus", "preset": "vllm", "serverAddress": e.promURL,
		"targetQueueDepth": "2"}
	fineMD := map[string]string{"scalerAddress": e.addr, "source": "pods", "preset": "vllm", "podSelector": "app=fine",
		"metricsPort": strconv.Itoa(e.healthyPort), "targetQueueDepth": "2"}
	fine := kedaScaler(t, "fine", fineMD, nil)
	if v, _, err := pollValue(t, fine); err != nil || v != 3 {
		t.Fatalf("healthy ScaledObject: %v, %v; want 3", v, err)
	}

	// What the error KEDA sees must say (the source's own words travel in
	// the gRPC status).
	faults := []struct {
		f    faultsrv.Fault
		want string
	}{
		{faultsrv.Crash, "GET "},
		{faultsrv.Slow, "deadline exceeded"},
		{faultsrv.Garbage, "pods: text format parsing error; prometheus: decode: invalid character"},
		{faultsrv.Huge, "size limit"},
		{faultsrv.HugeDeclared, "Content-Length 1073741824"},
		{faultsrv.Unavailable, "HTTP 503"},
		{faultsrv.Flap, "GET "},
	}
	for _, src := range []struct {
		name string
		h    *faultsrv.Handler
		md   map[string]string
		good float64
	}{
		// 2 pods x 3 waiting over 2 per replica; Prometheus 5+6 over 2.
		{"pods", e.pods, podsMD, 3},
		{"prometheus", e.prom, promMD, 6},
	} {
		for _, ft := range faults {
			t.Run(src.name+"/"+ft.f.String(), func(t *testing.T) {
				src.h.Set(faultsrv.Healthy)
				sc := kedaScaler(t, src.name+"-"+ft.f.String(), src.md, nil)
				if v, active, err := pollValue(t, sc); err != nil || v != src.good || !active {
					t.Fatalf("before the fault: %v active %v, %v; want %v", v, active, err, src.good)
				}
				src.h.Set(ft.f)
				injected := time.Now()
				var firstErr time.Duration
				// Watch for 2.5s: longer than a fetch timeout (1s) and
				// MaxAge (2s), so a wedged fetch has to show too.
				var errs, goods int
				var lastErr error
				deadline := time.Now().Add(2500 * time.Millisecond)
				for time.Now().Before(deadline) {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					vals, active, err := sc.GetMetricsAndActivity(ctx, metricName)
					cancel()
					switch {
					case err != nil:
						if errs == 0 {
							firstErr = time.Since(injected)
						}
						errs++
						lastErr = err
						if len(vals) != 0 || active {
							t.Fatalf("error %v came with values %v active %v", err, vals, active)
						}
					case len(vals) == 1 && vals[0].Value.AsApproximateFloat64() == src.good && active:
						goods++ // the last good value, still fresh
					default:
						t.Fatalf("during %s KEDA saw values %v active %v: not the last good value %v", ft.f, vals, active, src.good)
					}
					// The healthy ScaledObject is not held up by the fault.
					ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
					fv, factive, ferr := fine.GetMetricsAndActivity(ctx, metricName)
					cancel()
					if ferr != nil || len(fv) != 1 || fv[0].Value.AsApproximateFloat64() != 3 || !factive {
						t.Fatalf("healthy ScaledObject during %s %s: %v active %v, %v", src.name, ft.f, fv, factive, ferr)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if errs == 0 {
					t.Fatalf("%s never turned into an error (%d good answers)", ft.f, goods)
				}
				want := ft.want
				for _, alt := range strings.Split(ft.want, "; ") {
					if w, ok := strings.CutPrefix(alt, src.name+": "); ok {
						want = w
					}
				}
				if !strings.Contains(lastErr.Error(), "Unavailable") || !strings.Contains(lastErr.Error(), want) {
					t.Errorf("error %q, want Unavailable naming %q", lastErr, want)
				}
				if ft.f == faultsrv.Flap && goods == 0 {
					t.Errorf("flapping source never answered between outages")
				}
				t.Logf("%s %s: first error after %v; %d errors, %d last-good answers in 2.5s; last error: %v",
					src.name, ft.f, firstErr.Round(time.Millisecond), errs, goods, lastErr)
				src.h.Set(faultsrv.Healthy)
				if v, active, err := pollValue(t, sc); err != nil || v != src.good || !active {
					t.Fatalf("after the fault: %v active %v, %v; want %v", v, active, err, src.good)
				}
			})
		}
	}
}
