package source

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
)

// bodyTransport answers each PromQL query with a fixed body, in memory, so
// the fuzzer drives the whole Fetch (HTTP, limits, decoding, checks)
// without sockets.
type bodyTransport struct{ queue, running, latency string }

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	q := r.URL.Query().Get("query")
	body := b.queue
	switch {
	case strings.Contains(q, "histogram_quantile"):
		body = b.latency
	case strings.Contains(q, "num_requests_running"):
		body = b.running
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: r}, nil
}

// FuzzPrometheusFetch feeds arbitrary query answers to a Prometheus
// source. Fetch must not panic, and a snapshot it returns must never
// understate demand through bad data: finite non-negative counts and
// totals, at least one replica, and a latency that is a real duration.
func FuzzPrometheusFetch(f *testing.F) {
	f.Add(vector(podSample("a", "5"), podSample("b", "6")), vector(podSample("a", "8")), vector(`{"metric":{},"value":[1,"0.4"]}`))
	f.Add(vector(podSample("a", "0")), vector(podSample("a", "NaN")), vector(`{"metric":{},"value":[1,"NaN"]}`))
	f.Add(vector(podSample("a", "1")), vector(podSample("a", "-3")), vector(`{"metric":{},"value":[1,"+Inf"]}`))
	f.Add(vector(podSample("a", "1e308"), podSample("b", "1e308")), vector(), vector(`{"metric":{},"value":[1,"1e300"]}`))
	f.Add(vector(podSample("a", "1")), vector(podSample("a", "1e308"), podSample("b", "1e308")), vector(`{"metric":{},"value":[1,"-1"]}`))
	f.Add(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"3",4]}]}}`, "", "")
	f.Add(`<html>bad gateway</html>`, "", "")
	metas := [][]string{{"targetLatency", "1s"}, {"preset", "triton"}, {"preset", "tgi", "targetLatency", "1s", "latencySignal", "e2e"}}
	f.Fuzz(func(t *testing.T, queue, running, latency string) {
		client := &http.Client{Transport: bodyTransport{queue, running, latency}}
		for _, kv := range metas {
			src, err := NewPrometheus(PrometheusConfig{Meta: promMeta(t, "http://prom", kv...), Namespace: "ml", Client: client, MaxBodyBytes: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := src.Fetch(context.Background())
			if err != nil {
				if !strings.HasPrefix(err.Error(), "prometheus") {
					t.Fatalf("error %q does not say where it came from", err)
				}
				continue
			}
			bad := func(v float64) bool { return v < 0 || math.IsNaN(v) || math.IsInf(v, 0) }
			if bad(snap.QueueTotal) || bad(snap.RunningTotal) || snap.ReadyReplicas < 1 || len(snap.Replicas) != snap.ReadyReplicas {
				t.Fatalf("accepted snapshot %+v", snap)
			}
			for _, r := range snap.Replicas {
				if bad(r.Queue) || bad(r.Running) {
					t.Fatalf("accepted replica %+v", r)
				}
			}
			if snap.Latency.Valid && snap.Latency.Value < 0 {
				t.Fatalf("accepted latency %v", snap.Latency.Value)
			}
		}
	})
}
