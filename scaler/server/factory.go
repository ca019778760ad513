package server

import (
	"net/http"
	"time"

	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// SourceOptions are shared by the sources NewSourceFactory builds.
type SourceOptions struct {
	// PodLister backs source=pods; nil makes such triggers Unavailable.
	PodLister    corelisters.PodLister
	Client       *http.Client
	Timeout      time.Duration
	MaxBodyBytes int64
	Window       time.Duration
}

// NewSourceFactory builds pods and Prometheus sources. For Prometheus the
// namespace matcher defaults to the ScaledObject's namespace.
func NewSourceFactory(o SourceOptions) SourceFactory {
	return func(namespace string, m *metadata.Metadata) (source.Source, error) {
		switch m.Source {
		case metadata.SourcePods:
			return source.NewPods(source.PodsConfig{Lister: o.PodLister, Namespace: namespace, Meta: m,
				Client: o.Client, Timeout: o.Timeout, MaxBodyBytes: o.MaxBodyBytes, Window: o.Window})
		default:
			ns := m.Namespace
			if ns == "" {
				ns = namespace
			}
			return source.NewPrometheus(source.PrometheusConfig{Meta: m, Namespace: ns,
				Client: o.Client, Timeout: o.Timeout, MaxBodyBytes: o.MaxBodyBytes, Window: o.Window})
		}
	}
}
