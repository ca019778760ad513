package source

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

func promMeta(t *testing.T, addr string, kv ...string) *metadata.Metadata {
	t.Helper()
	md := map[string]string{"source": "prometheus", "serverAddress": addr, "preset": "vllm", "targetQueueDepth": "4"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	m, err := metadata.Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildQueries(t *testing.T) {
	m := promMeta(t, "http://p", "targetLatency", "2s", "latencySignal", "e2e", "latencyPercentile", "0.99")
	q := BuildQueries(m, "team-a", time.Minute)
	want := Queries{
		Queue:   `sum by (pod) (vllm:num_requests_waiting{namespace="team-a"})`,
		Running: `sum by (pod) (vllm:num_requests_running{namespace="team-a"})`,
		Latency: `histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{namespace="team-a"}[1m])))`,
	}
	if q != want {
		t.Errorf("got  %+v\nwant %+v", q, want)
	}
	if q := BuildQueries(promMeta(t, "http://p", "preset", "triton"), "x", 30*time.Second); q.Running != "" || q.Latency != "" {
		t.Errorf("triton without latency target: %+v", q)
	}
}

// fakeProm answers /api/v1/query like Prometheus does, by matching the
// query text.
func fakeProm(t *testing.T, answers map[string]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query().Get("query")
		for frag, body := range answers {
			if strings.Contains(q, frag) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, body)
				return
			}
		}
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected query %s"}`, q)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func vector(samples ...string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
}

func podSample(pod, v string) string {
	return fmt.Sprintf(`{"metric":{"pod":%q},"value":[1700000000.123,%q]}`, pod, v)
}

func TestPrometheusFetch(t *testing.T) {
	srv := fakeProm(t, map[string]string{
		"num_requests_waiting": vector(podSample("llm-a", "6"), podSample("llm-b", "2")),
		"num_requests_running": vector(podSample("llm-a", "8"), podSample("llm-b", "3")),
		"histogram_quantile":   vector(`{"metric":{},"value":[1700000000.1,"0.75"]}`),
	})
	m := promMeta(t, srv.URL, "targetLatency", "500ms")
	src, err := NewPrometheus(PrometheusConfig{Meta: m, Namespace: "ml"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.QueueTotal != 8 || snap.RunningTotal != 11 || snap.ReadyReplicas != 2 || snap.Replicas[1].Running != 3 {
		t.Errorf("snapshot %+v", snap)
	}
	if !snap.Latency.Valid || snap.Latency.Value != 750*time.Millisecond {
		t.Errorf("latency %+v", snap.Latency)
	}
}

func TestPrometheusNaNLatencyIsNoData(t *testing.T) {
	srv := fakeProm(t, map[string]string{
		"num_requests_waiting": vector(podSample("a", "0")),
		"num_requests_running": vector(podSample("a", "0")),
		"histogram_quantile":   vector(`{"metric":{},"value":[1,"NaN"]}`),
	})
	src, _ := NewPrometheus(PrometheusConfig{Meta: promMeta(t, srv.URL, "targetLatency", "1s"), Namespace: "ml"})
	snap, err := src.Fetch(context.Background())
	if err != nil || snap.Latency.Valid {
		t.Errorf("got %+v %v", snap.Latency, err)
	}
}

func TestPrometheusErrors(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[`)
		for i := 0; i < 20000; i++ {
			fmt.Fprint(w, podSample(fmt.Sprintf("p%d", i), "1"), ",")
		}
	}))
	t.Cleanup(huge.Close)
	// Declares 1 GiB and sends nothing: refused on the header alone (a
	// read would wait for the body until the timeout).
	declared := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(declared.Close)

	tests := []struct {
		name string
		addr string
		kv   []string
		want string
	}{
		{"empty result is not zero", fakeProm(t, map[string]string{"num_requests_waiting": vector()}).URL, nil, "no series"},
		{"latency missing", fakeProm(t, map[string]string{
			"num_requests_waiting": vector(podSample("a", "1")), "num_requests_running": vector(), "histogram_quantile": vector(),
		}).URL, []string{"targetLatency", "1s"}, "no series"},
		{"prometheus error", fakeProm(t, map[string]string{}).URL, nil, "HTTP 400"},
		{"status error with 200", fakeProm(t, map[string]string{"num_requests": `{"status":"error","errorType":"timeout","error":"query timed out"}`}).URL, nil, "query timed out"},
		{"garbage", fakeProm(t, map[string]string{"num_requests": `<html>proxy error</html>`}).URL, nil, "decode"},
		{"matrix", fakeProm(t, map[string]string{"num_requests": `{"status":"success","data":{"resultType":"matrix","result":[]}}`}).URL, nil, "matrix"},
		{"bad value", fakeProm(t, map[string]string{"num_requests": vector(podSample("a", "lots"))}).URL, nil, "lots"},
		{"negative queue", fakeProm(t, map[string]string{"num_requests": vector(podSample("a", "-1"))}).URL, nil, "invalid queue value"},
		{"running NaN", fakeProm(t, map[string]string{"num_requests_waiting": vector(podSample("a", "0")), "num_requests_running": vector(podSample("a", "NaN"))}).URL, nil, "invalid running value NaN"},
		{"running negative", fakeProm(t, map[string]string{"num_requests_waiting": vector(podSample("a", "0")), "num_requests_running": vector(podSample("a", "-2"))}).URL, nil, "invalid running value -2"},
		{"queue sums to Inf", fakeProm(t, map[string]string{"num_requests_waiting": vector(podSample("a", "1e308"), podSample("b", "1e308"))}).URL, nil, "queue sums to +Inf"},
		{"latency +Inf", fakeProm(t, map[string]string{
			"num_requests_waiting": vector(podSample("a", "1")), "num_requests_running": vector(), "histogram_quantile": vector(`{"metric":{},"value":[1,"+Inf"]}`),
		}).URL, []string{"targetLatency", "1s"}, "not a duration"},
		{"latency negative", fakeProm(t, map[string]string{
			"num_requests_waiting": vector(podSample("a", "1")), "num_requests_running": vector(), "histogram_quantile": vector(`{"metric":{},"value":[1,"-1"]}`),
		}).URL, []string{"targetLatency", "1s"}, "not a duration"},
		{"down", down.URL, nil, "connection refused"},
		{"slow", slow.URL, nil, "deadline exceeded"},
		{"huge", huge.URL, nil, "size limit"},
		{"huge declared", declared.URL, nil, "Content-Length 1073741824"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := NewPrometheus(PrometheusConfig{Meta: promMeta(t, tt.addr, tt.kv...), Namespace: "ml", Timeout: 300 * time.Millisecond, MaxBodyBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := src.Fetch(context.Background())
			if err == nil {
				t.Fatalf("want error, got %+v", snap)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestLatencyDuration(t *testing.T) {
	tests := []struct {
		v, unit float64
		want    time.Duration
		wantErr bool
	}{
		{v: 0.4, unit: 1, want: 400 * time.Millisecond},
		{v: 250, unit: 0.001, want: 250 * time.Millisecond},
		{v: 0, unit: 1, want: 0},
		// Beyond a Duration: saturates instead of wrapping negative.
		{v: 1e300, unit: 1, want: time.Duration(math.MaxInt64)},
		{v: 1e10, unit: 1, want: time.Duration(math.MaxInt64)},
		{v: -1, unit: 1, wantErr: true},
		{v: math.Inf(1), unit: 1, wantErr: true},
		{v: math.Inf(-1), unit: 1, wantErr: true},
		{v: math.NaN(), unit: 1, wantErr: true},
	}
	for _, tt := range tests {
		got, err := latencyDuration(tt.v, tt.unit)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("latencyDuration(%v, %v) = %v, %v; want %v, error %v", tt.v, tt.unit, got, err, tt.want, tt.wantErr)
		}
	}
}

// A huge but finite percentile is a breached SLO, not "no latency".
func TestPrometheusHugeLatencySaturates(t *testing.T) {
	srv := fakeProm(t, map[string]string{
		"num_requests_waiting": vector(podSample("a", "1")),
		"num_requests_running": vector(podSample("a", "1")),
		"histogram_quantile":   vector(`{"metric":{},"value":[1,"1e300"]}`),
	})
	src, _ := NewPrometheus(PrometheusConfig{Meta: promMeta(t, srv.URL, "targetLatency", "1s"), Namespace: "ml"})
	snap, err := src.Fetch(context.Background())
	if err != nil || !snap.Latency.Valid || snap.Latency.Value != time.Duration(math.MaxInt64) {
		t.Fatalf("got %+v, %v; want a saturated latency", snap.Latency, err)
	}
}

func TestReadLimited(t *testing.T) {
	for _, tt := range []struct {
		size, limit int
		wantLen     int
	}{
		{0, 10, 0},
		{10, 10, 10},
		{11, 10, 11}, // one byte over: the caller sees len > limit
		{1 << 20, 100, 101},
		{100 << 10, 1 << 20, 100 << 10},
	} {
		body := strings.Repeat("x", tt.size)
		got, err := readLimited(strings.NewReader(body), nil, int64(tt.limit))
		if err != nil || len(got) != tt.wantLen || cap(got) > tt.limit+1 && cap(got) > 32<<10 {
			t.Errorf("size %d limit %d: len %d cap %d, %v; want len %d, cap at most limit+1", tt.size, tt.limit, len(got), cap(got), err, tt.wantLen)
		}
		if string(got) != body[:tt.wantLen] {
			t.Errorf("size %d limit %d: wrong bytes", tt.size, tt.limit)
		}
	}
}
