package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

type fakeSource struct {
	mu   sync.Mutex
	snap source.Snapshot
	err  error
}

func (f *fakeSource) set(s source.Snapshot, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap, f.err = s, err
}

func (f *fakeSource) Fetch(context.Context) (source.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.At = time.Now()
	return s, f.err
}

type harness struct {
	client  pb.ExternalScalerClient
	src     *fakeSource
	built   atomic.Int32
	metrics *Metrics
	reg     *prometheus.Registry
}

func start(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{src: &fakeSource{}, reg: prometheus.NewRegistry()}
	h.metrics = NewMetrics(h.reg)
	opts.Metrics = h.metrics
	opts.NewSource = func(string, *metadata.Metadata) (source.Source, error) {
		h.built.Add(1)
		return h.src, nil
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 20 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(h.metrics.UnaryInterceptor), grpc.StreamInterceptor(h.metrics.StreamInterceptor))
	s.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = pb.NewExternalScalerClient(conn)
	return h
}

func ref(kv ...string) *pb.ScaledObjectRef {
	md := map[string]string{"scalerAddress": "kubegpu-scaler.kubegpu:9090", "source": "pods", "podSelector": "app=llm", "preset": "vllm", "targetQueueDepth": "4"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return &pb.ScaledObjectRef{Name: "llama", Namespace: "ml", ScalerMetadata: md}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestGetMetricSpec(t *testing.T) {
	h := start(t, Options{})
	resp, err := h.client.GetMetricSpec(ctx(t), ref())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.MetricSpecs) != 1 || resp.MetricSpecs[0].MetricName != MetricName || resp.MetricSpecs[0].TargetSizeFloat != 1 {
		t.Errorf("spec %+v", resp.MetricSpecs)
	}
}

func TestGetMetricsAndIsActive(t *testing.T) {
	h := start(t, Options{})
	h.src.set(source.Snapshot{QueueTotal: 9, RunningTotal: 4, ReadyReplicas: 2}, nil)
	resp, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName})
	if err != nil {
		t.Fatal(err)
	}
	if v := resp.MetricValues[0]; v.MetricValueFloat != 3 || v.MetricValue != 3 || v.MetricName != MetricName {
		t.Errorf("value %+v, want 3 (ceil(9/4))", v)
	}
	act, err := h.client.IsActive(ctx(t), ref())
	if err != nil || !act.Result {
		t.Errorf("IsActive = %v, %v", act, err)
	}
	// Real zero demand: inactive at once; the value is held by the
	// scale-down stabilization window.
	h.src.set(source.Snapshot{ReadyReplicas: 1}, nil)
	time.Sleep(60 * time.Millisecond)
	act, err = h.client.IsActive(ctx(t), ref())
	if err != nil || act.Result {
		t.Errorf("IsActive at zero demand = %v, %v", act, err)
	}
	resp, err = h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName})
	if err != nil || resp.MetricValues[0].MetricValueFloat != 3 {
		t.Errorf("held value = %v, %v, want 3 within the stabilization window", resp, err)
	}
	// Without stabilization the value drops to 0 with demand.
	noStab := ref("scaleDownStabilization", "0")
	h.src.set(source.Snapshot{QueueTotal: 9, ReadyReplicas: 2}, nil)
	if _, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: noStab, MetricName: MetricName}); err != nil {
		t.Fatal(err)
	}
	h.src.set(source.Snapshot{ReadyReplicas: 1}, nil)
	time.Sleep(60 * time.Millisecond)
	resp, err = h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: noStab, MetricName: MetricName})
	if err != nil || resp.MetricValues[0].MetricValueFloat != 0 {
		t.Errorf("value = %v, %v, want 0 at zero demand without stabilization", resp, err)
	}
	act, err = h.client.IsActive(ctx(t), noStab)
	if err != nil || act.Result {
		t.Errorf("IsActive at zero demand = %v, %v", act, err)
	}
	if got := testutil.ToFloat64(h.metrics.desired.WithLabelValues("ml", "llama")); got != 0 {
		t.Errorf("desired gauge = %v", got)
	}
}

func TestInvalidMetadata(t *testing.T) {
	h := start(t, Options{})
	tests := []struct {
		name string
		ref  *pb.ScaledObjectRef
		key  string
	}{
		{"unknown key", ref("targetQueueDeph", "3"), "targetQueueDeph"},
		{"bad value", ref("targetQueueDepth", "-2"), "targetQueueDepth"},
		{"bad preset", ref("preset", "ollama"), "preset"},
		{"no name", &pb.ScaledObjectRef{Namespace: "ml"}, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: tt.ref, MetricName: MetricName})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("GetMetrics err = %v, want InvalidArgument naming %q", err, tt.key)
			}
			if _, err := h.client.IsActive(ctx(t), tt.ref); status.Code(err) != codes.InvalidArgument {
				t.Errorf("IsActive err = %v", err)
			}
			if _, err := h.client.GetMetricSpec(ctx(t), tt.ref); status.Code(err) != codes.InvalidArgument {
				t.Errorf("GetMetricSpec err = %v", err)
			}
		})
	}
	_, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: "s0-other"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown metric name: %v", err)
	}
}

func TestSourceDownIsUnavailableNotZero(t *testing.T) {
	h := start(t, Options{})
	h.src.set(source.Snapshot{}, errors.New("dial tcp 10.0.0.7:8000: connection refused"))
	_, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("GetMetrics err = %v, want Unavailable", err)
	}
	if _, err := h.client.IsActive(ctx(t), ref()); status.Code(err) != codes.Unavailable {
		t.Errorf("IsActive err = %v, want Unavailable", err)
	}
	if got := testutil.ToFloat64(h.metrics.scrapeErrors.WithLabelValues("pods")); got < 1 {
		t.Errorf("scrape error counter = %v", got)
	}
	// Recovery.
	h.src.set(source.Snapshot{QueueTotal: 1, ReadyReplicas: 1}, nil)
	time.Sleep(60 * time.Millisecond)
	if _, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName}); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestStaleDataIsUnavailable(t *testing.T) {
	var skew atomic.Int64
	h := start(t, Options{MaxAge: time.Second, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	h.src.set(source.Snapshot{QueueTotal: 5, ReadyReplicas: 1}, nil)
	if _, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName}); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(time.Hour))
	_, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "stale") {
		t.Errorf("err = %v, want Unavailable stale", err)
	}
}

func TestMetadataParsedOncePerScaledObject(t *testing.T) {
	h := start(t, Options{})
	h.src.set(source.Snapshot{QueueTotal: 1, ReadyReplicas: 1}, nil)
	for i := 0; i < 20; i++ {
		if _, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName}); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.built.Load(); n != 1 {
		t.Errorf("source built %d times for one ScaledObject, want 1", n)
	}
	// Changed metadata means a new configuration.
	if _, err := h.client.GetMetrics(ctx(t), &pb.GetMetricsRequest{ScaledObjectRef: ref("targetQueueDepth", "8"), MetricName: MetricName}); err != nil {
		t.Fatal(err)
	}
	if n := h.built.Load(); n != 2 {
		t.Errorf("source built %d times after metadata change, want 2", n)
	}
}

func TestStreamIsActive(t *testing.T) {
	h := start(t, Options{StreamInterval: 20 * time.Millisecond})
	h.src.set(source.Snapshot{QueueTotal: 3, ReadyReplicas: 1}, nil)
	c, cancel := context.WithCancel(ctx(t))
	stream, err := h.client.StreamIsActive(c, ref())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !msg.Result {
			t.Errorf("push %d: inactive", i)
		}
	}
	cancel()
	for {
		if _, err := stream.Recv(); err != nil {
			if status.Code(err) != codes.Canceled {
				t.Errorf("stream end = %v", err)
			}
			break
		}
	}
}

func TestStreamMetricSpecUnimplemented(t *testing.T) {
	h := start(t, Options{})
	stream, err := h.client.StreamMetricSpec(ctx(t), ref())
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("err = %v, want Unimplemented", err)
	}
}

func TestRequestMetrics(t *testing.T) {
	h := start(t, Options{})
	h.client.GetMetricSpec(ctx(t), ref())
	h.client.GetMetricSpec(ctx(t), ref("bogus", "1"))
	if got := testutil.ToFloat64(h.metrics.requests.WithLabelValues("GetMetricSpec", "OK")); got != 1 {
		t.Errorf("OK count = %v", got)
	}
	if got := testutil.ToFloat64(h.metrics.requests.WithLabelValues("GetMetricSpec", "InvalidArgument")); got != 1 {
		t.Errorf("InvalidArgument count = %v", got)
	}
}

func TestEvictIdle(t *testing.T) {
	var skew atomic.Int64
	ctx0, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx0, Options{NewSource: func(string, *metadata.Metadata) (source.Source, error) { return &fakeSource{}, nil },
		IdleTTL: time.Minute, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMetricSpec(ctx0, ref()); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(2 * time.Minute))
	s.evictIdle()
	if n := s.Tracked(); n != 0 {
		t.Errorf("tracked %d after idle TTL", n)
	}
}

// countingSource fails (or not) and counts its fetches.
type countingSource struct {
	fakeSource
	fetches atomic.Int32
}

func (c *countingSource) Fetch(ctx context.Context) (source.Snapshot, error) {
	c.fetches.Add(1)
	return c.fakeSource.Fetch(ctx)
}

func TestFailingSourceBacksOff(t *testing.T) {
	src := &countingSource{}
	src.set(source.Snapshot{}, errors.New("connection refused"))
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(c, Options{PollInterval: 20 * time.Millisecond, MaxBackoff: 160 * time.Millisecond,
		NewSource: func(string, *metadata.Metadata) (source.Source, error) { return src, nil }})
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.GetMetricsRequest{ScaledObjectRef: ref()}
	if _, err := s.GetMetrics(ctx(t), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("failing source: %v, want Unavailable", err)
	}
	// Waits 20, 40, 80, then 160ms: about 10 fetches in 1.2s where a
	// fixed 20ms interval would make 60.
	time.Sleep(1200 * time.Millisecond)
	if n := src.fetches.Load(); n < 5 || n > 20 {
		t.Errorf("%d fetches of a failing source in 1.2s, want 5-20 (backoff to 160ms)", n)
	}
	if got := s.backoff(1); got != 20*time.Millisecond {
		t.Errorf("backoff(1) = %v", got)
	}
	if got := s.backoff(100); got != 160*time.Millisecond {
		t.Errorf("backoff(100) = %v", got)
	}
	// Healed: seen within one backoff, and the interval is back to 20ms.
	src.set(source.Snapshot{QueueTotal: 8, ReadyReplicas: 1}, nil)
	deadline := time.Now().Add(time.Second)
	for {
		resp, err := s.GetMetrics(ctx(t), req)
		if err == nil {
			if v := resp.MetricValues[0].MetricValue; v != 2 {
				t.Fatalf("value %d, want 2", v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healed source still failing after 1s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := src.fetches.Load()
	time.Sleep(400 * time.Millisecond)
	if n := src.fetches.Load() - before; n < 8 {
		t.Errorf("%d fetches in 400ms after healing, want about 20", n)
	}
}
