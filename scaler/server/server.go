// Package server implements KEDA's ExternalScaler gRPC service.
//
// Freshness model: each ScaledObject gets a background poller that fetches
// its source every PollInterval and stores the snapshot and decision in
// memory; IsActive/GetMetrics only read that memory, so KEDA's polls (every
// pollingInterval, for every ScaledObject) never wait on a scrape. A value
// is therefore at most PollInterval (+ fetch time) old. A failed fetch makes
// the next GetMetrics fail with codes.Unavailable at once (KEDA's fallback
// applies), and a snapshot older than MaxAge (a wedged poller) is refused the
// same way: stale data must not scale a model down. A failing source is
// fetched with backoff (doubling up to MaxBackoff), so sources that hang or
// answer garbage take less CPU from the healthy ones.
package server

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/policy"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// MetricName is the single metric this scaler reports per trigger; KEDA
// prefixes it with the trigger index ("s0-...").
const MetricName = "inference-desired-replicas"

// SourceFactory builds the source for one ScaledObject. An error that is a
// *metadata.KeyError is reported as InvalidArgument.
type SourceFactory func(namespace string, m *metadata.Metadata) (source.Source, error)

// Options configure a Server. Zero values take the defaults below.
type Options struct {
	NewSource SourceFactory
	// PollInterval is how often each ScaledObject's source is fetched (5s).
	PollInterval time.Duration
	// FetchTimeout bounds one fetch (10s).
	FetchTimeout time.Duration
	// MaxAge is the oldest snapshot served (max(3*PollInterval, 30s)).
	MaxAge time.Duration
	// FirstFetchWait is how long a request waits for a new ScaledObject's
	// first fetch before answering Unavailable (5s).
	FirstFetchWait time.Duration
	// IdleTTL drops ScaledObjects KEDA has not asked about for this long,
	// e.g. deleted ones (10m).
	IdleTTL time.Duration
	// StreamInterval is the StreamIsActive push period (PollInterval).
	StreamInterval time.Duration
	// MaxBackoff caps the wait between fetches of a failing source, which
	// doubles from PollInterval with each failure in a row
	// (4*PollInterval). A source that is down, hanging or answering
	// garbage then costs a quarter of a healthy one, leaving the CPU to
	// the healthy ones; one success restores PollInterval.
	MaxBackoff time.Duration
	Metrics    *Metrics
	Now        func() time.Time
}

// Server is the ExternalScaler implementation.
type Server struct {
	pb.UnimplementedExternalScalerServer

	opts Options
	ctx  context.Context

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	namespace, name string
	hash            uint64
	md              *metadata.Metadata
	sourceType      string
	cancel          context.CancelFunc
	ready           chan struct{}
	lastUsed        atomic.Int64
	// win is touched only by the entry's poller goroutine.
	win policy.Window

	mu   sync.RWMutex
	snap source.Snapshot
	dec  policy.Decision
	err  error
}

// New returns a Server whose pollers live until ctx is done.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.NewSource == nil {
		return nil, errors.New("server: NewSource is required")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 10 * time.Second
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = max(3*opts.PollInterval, 30*time.Second)
	}
	if opts.FirstFetchWait <= 0 {
		opts.FirstFetchWait = 5 * time.Second
	}
	if opts.IdleTTL <= 0 {
		opts.IdleTTL = 10 * time.Minute
	}
	if opts.StreamInterval <= 0 {
		opts.StreamInterval = opts.PollInterval
	}
	if opts.MaxBackoff < opts.PollInterval {
		opts.MaxBackoff = 4 * opts.PollInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, ctx: ctx, entries: map[string]*entry{}}
	go s.janitor()
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { pb.RegisterExternalScalerServer(g, s) }

// hashMetadata identifies a metadata map without parsing it, so the hot
// path can tell "same config" with one pass over a few short strings.
func hashMetadata(md map[string]string) uint64 {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := fnv.New64a()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(md[k]))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// lookup returns the cached entry for a ScaledObject, parsing its metadata
// and starting its poller only when the object or its metadata is new.
func (s *Server) lookup(ref *pb.ScaledObjectRef) (*entry, error) {
	if ref == nil || ref.GetName() == "" || ref.GetNamespace() == "" {
		return nil, status.Error(codes.InvalidArgument, "scaledObjectRef with name and namespace is required")
	}
	key := ref.GetNamespace() + "/" + ref.GetName()
	h := hashMetadata(ref.GetScalerMetadata())
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok && e.hash == h {
		e.lastUsed.Store(s.opts.Now().UnixNano())
		return e, nil
	}
	md, err := metadata.Parse(ref.GetScalerMetadata())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	src, err := s.opts.NewSource(ref.GetNamespace(), md)
	if err != nil {
		if metadata.IsKeyError(err) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Errorf(codes.Unavailable, "metric source for %s: %v", key, err)
	}
	if old, ok := s.entries[key]; ok {
		old.cancel()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	e := &entry{namespace: ref.GetNamespace(), name: ref.GetName(), hash: h, md: md,
		sourceType: string(md.Source), cancel: cancel, ready: make(chan struct{})}
	e.lastUsed.Store(s.opts.Now().UnixNano())
	s.entries[key] = e
	go s.poll(ctx, e, src)
	klog.InfoS("Tracking ScaledObject", "scaledObject", klog.KRef(e.namespace, e.name),
		"source", md.Source, "preset", md.Preset.Name)
	return e, nil
}

func (s *Server) poll(ctx context.Context, e *entry, src source.Source) {
	err := s.refresh(ctx, e, src)
	close(e.ready)
	// KEDA asks about all its ScaledObjects at once after a restart, so
	// pollers start together; a random phase spreads their fetches over
	// the interval instead of bursting every PollInterval. The first fetch
	// above is not delayed: a request is waiting for it.
	t := time.NewTimer(rand.N(s.opts.PollInterval))
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		err = s.refresh(ctx, e, src)
		next := s.opts.PollInterval
		if err != nil {
			failures++
			next = s.backoff(failures)
		} else {
			failures = 0
		}
		// Fetches start every interval, as a ticker would, unless a
		// fetch took longer.
		t.Reset(max(0, next-time.Since(start)))
	}
}

// backoff is the wait after the n-th failed fetch in a row: PollInterval
// doubled n-1 times, at most MaxBackoff.
func (s *Server) backoff(n int) time.Duration {
	d := s.opts.PollInterval
	for i := 1; i < n && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.opts.MaxBackoff)
}

// refresh fetches once and stores the outcome; it returns the fetch error.
func (s *Server) refresh(ctx context.Context, e *entry, src source.Source) error {
	fctx, cancel := context.WithTimeout(ctx, s.opts.FetchTimeout)
	defer cancel()
	snap, err := src.Fetch(fctx)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down or replaced; keep the last state
	}
	var dec policy.Decision
	if err == nil {
		dec = e.win.Decide(e.md, snap)
	}
	e.mu.Lock()
	e.err = err
	if err == nil {
		e.snap, e.dec = snap, dec
	}
	e.mu.Unlock()
	if err != nil {
		klog.V(2).InfoS("Metric source fetch failed", "scaledObject", klog.KRef(e.namespace, e.name), "err", err)
		if s.opts.Metrics != nil {
			s.opts.Metrics.scrapeErrors.WithLabelValues(e.sourceType).Inc()
		}
		return err
	}
	klog.V(4).InfoS("Decision", "scaledObject", klog.KRef(e.namespace, e.name), "desired", dec.Desired,
		"raw", dec.Raw, "queueGrowth", dec.QueueGrowth, "fromQueue", dec.FromQueue, "fromLatency", dec.FromLatency, "active", dec.Active,
		"queue", snap.QueueTotal, "running", snap.RunningTotal, "replicas", snap.ReadyReplicas)
	if s.opts.Metrics != nil {
		s.opts.Metrics.desired.WithLabelValues(e.namespace, e.name).Set(float64(dec.Desired))
		s.opts.Metrics.snapshotAge.WithLabelValues(e.namespace, e.name).Set(float64(snap.At.Unix()))
	}
	return nil
}

// current returns the entry's latest decision, or Unavailable when the
// source failed, has not answered yet, or its data is stale.
func (s *Server) current(ctx context.Context, e *entry) (policy.Decision, error) {
	select {
	case <-e.ready:
	default:
		t := time.NewTimer(s.opts.FirstFetchWait)
		defer t.Stop()
		select {
		case <-e.ready:
		case <-t.C:
			return policy.Decision{}, status.Error(codes.Unavailable, "no metrics yet: first fetch still running")
		case <-ctx.Done():
			return policy.Decision{}, status.FromContextError(ctx.Err()).Err()
		}
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.err != nil {
		return policy.Decision{}, status.Errorf(codes.Unavailable, "metric source: %v", e.err)
	}
	if age := s.opts.Now().Sub(e.snap.At); age > s.opts.MaxAge {
		return policy.Decision{}, status.Errorf(codes.Unavailable, "metrics are stale: last fetch %s ago (limit %s)", age.Round(time.Second), s.opts.MaxAge)
	}
	return e.dec, nil
}

// IsActive reports whether there is demand; an unknown state is an error,
// never "inactive".
func (s *Server) IsActive(ctx context.Context, ref *pb.ScaledObjectRef) (*pb.IsActiveResponse, error) {
	e, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	d, err := s.current(ctx, e)
	if err != nil {
		return nil, err
	}
	return &pb.IsActiveResponse{Result: d.Active}, nil
}

// StreamIsActive pushes the activity state every StreamInterval until the
// client goes away. While the source is failing nothing is sent, so KEDA
// keeps its last state instead of seeing a false "inactive".
func (s *Server) StreamIsActive(ref *pb.ScaledObjectRef, stream grpc.ServerStreamingServer[pb.IsActiveResponse]) error {
	e, err := s.lookup(ref)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	t := time.NewTicker(s.opts.StreamInterval)
	defer t.Stop()
	for {
		// Re-lookup so a stream keeps the entry alive and follows it if
		// the poller was replaced.
		if cur, err := s.lookup(ref); err == nil {
			e = cur
		}
		d, err := s.current(ctx, e)
		if err == nil {
			if err := stream.Send(&pb.IsActiveResponse{Result: d.Active}); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		} else if ctx.Err() == nil {
			klog.V(2).InfoS("StreamIsActive: no state to push", "scaledObject", klog.KRef(e.namespace, e.name), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// GetMetricSpec returns one metric with target policy.MetricTarget; see
// package policy for why that makes the HPA land on the desired count.
func (s *Server) GetMetricSpec(_ context.Context, ref *pb.ScaledObjectRef) (*pb.GetMetricSpecResponse, error) {
	if _, err := s.lookup(ref); err != nil {
		return nil, err
	}
	return &pb.GetMetricSpecResponse{MetricSpecs: []*pb.MetricSpec{{
		MetricName:      MetricName,
		TargetSize:      int64(policy.MetricTarget),
		TargetSizeFloat: policy.MetricTarget,
	}}}, nil
}

// GetMetrics serves the desired replica count from memory.
func (s *Server) GetMetrics(ctx context.Context, req *pb.GetMetricsRequest) (*pb.GetMetricsResponse, error) {
	if req == nil {
		return nil, status.Error(codes.InvalidArgument, "empty request")
	}
	if n := req.GetMetricName(); n != "" && n != MetricName {
		return nil, status.Errorf(codes.InvalidArgument, "unknown metric %q, this scaler reports %q", n, MetricName)
	}
	e, err := s.lookup(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	d, err := s.current(ctx, e)
	if err != nil {
		return nil, err
	}
	return &pb.GetMetricsResponse{MetricValues: []*pb.MetricValue{{
		MetricName:       MetricName,
		MetricValue:      int64(d.Desired),
		MetricValueFloat: d.MetricValue,
	}}}, nil
}

// janitor stops pollers of ScaledObjects KEDA no longer asks about.
func (s *Server) janitor() {
	t := time.NewTicker(s.opts.IdleTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.evictIdle()
		}
	}
}

func (s *Server) evictIdle() {
	cutoff := s.opts.Now().Add(-s.opts.IdleTTL).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, e := range s.entries {
		if e.lastUsed.Load() < cutoff {
			e.cancel()
			delete(s.entries, key)
			if s.opts.Metrics != nil {
				s.opts.Metrics.desired.DeleteLabelValues(e.namespace, e.name)
				s.opts.Metrics.snapshotAge.DeleteLabelValues(e.namespace, e.name)
			}
			klog.InfoS("Stopped tracking idle ScaledObject", "scaledObject", klog.KRef(e.namespace, e.name))
		}
	}
}

// Tracked reports how many ScaledObjects have a poller.
func (s *Server) Tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
