package server

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics are the scaler's own Prometheus metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	scrapeErrors *prometheus.CounterVec
	desired      *prometheus.GaugeVec
	snapshotAge  *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubegpu_scaler_grpc_requests_total",
			Help: "External scaler gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubegpu_scaler_source_errors_total",
			Help: "Failed metric source fetches by source type.",
		}, []string{"source"}),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubegpu_scaler_desired_replicas",
			Help: "Last desired replica count per ScaledObject.",
		}, []string{"namespace", "scaledobject"}),
		snapshotAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubegpu_scaler_snapshot_timestamp_seconds",
			Help: "Unix time of the last successful source fetch per ScaledObject.",
		}, []string{"namespace", "scaledobject"}),
	}
	reg.MustRegister(m.requests, m.scrapeErrors, m.desired, m.snapshotAge)
	return m
}

func method(full string) string { return full[strings.LastIndex(full, "/")+1:] }

// UnaryInterceptor counts unary requests.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	m.requests.WithLabelValues(method(info.FullMethod), status.Code(err).String()).Inc()
	return resp, err
}

// StreamInterceptor counts streams when they end.
func (m *Metrics) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	m.requests.WithLabelValues(method(info.FullMethod), status.Code(err).String()).Inc()
	return err
}
