package source

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

// BenchmarkScrape100Pods times one Fetch over 100 vLLM replicas (each on
// its own loopback address, same port, as pods are) at several parallelism
// bounds. Every Fetch parses 100 bodies and merges 100 histograms. With
// delay=10ms each pod answers after 10ms, like a busy server on a real
// network; that is where the parallelism bound pays.
func BenchmarkScrape100Pods(b *testing.B) {
	const n = 100
	body := vllmText(3, 5, []int{10, 30, 33, 34})
	port := 0
	var pods []*corev1.Pod
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			b.Skipf("cannot listen on %s: %v", ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("delay") != "" {
				time.Sleep(10 * time.Millisecond)
			}
			fmt.Fprint(w, body)
		}))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		b.Cleanup(srv.Close)
		pods = append(pods, pod(fmt.Sprintf("llm-%03d", i), ip, true, map[string]string{"app": "llm"}))
	}
	for _, delay := range []string{"0", "10ms"} {
		path := "/metrics"
		if delay != "0" {
			path += "?delay=1"
		}
		m := parse(b, "metricsPort", strconv.Itoa(port), "metricsPath", path, "targetLatency", "500ms")
		for _, par := range []int{1, 16, 64} {
			benchFetch(b, fmt.Sprintf("delay=%s/parallel=%d", delay, par), pods, m, par)
		}
	}
}

func benchFetch(b *testing.B, name string, pods []*corev1.Pod, m *metadata.Metadata, par int) {
	const n = 100
	b.Run(name, func(b *testing.B) {
		src, err := NewPods(PodsConfig{Lister: lister(b, pods...), Namespace: "ml", Meta: m, Parallelism: par, Timeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			snap, err := src.Fetch(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if snap.ReadyReplicas != n || snap.QueueTotal != 3*n {
				b.Fatalf("snapshot %d replicas queue %v", snap.ReadyReplicas, snap.QueueTotal)
			}
		}
	})
}
