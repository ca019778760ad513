// Command kubegpu-scaler is the KEDA external scaler for GPU inference:
// flags and wiring only; the logic lives in scaler/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/scaler/server"
	"github.com/kubegpu/kubegpu/scaler/source"
)

func main() {
	klog.InitFlags(nil)
	var (
		grpcAddr    = flag.String("grpc-addr", ":9090", "gRPC listen address for KEDA")
		metricsAddr = flag.String("metrics-addr", ":8080", "HTTP listen address for /metrics and /healthz")
		tlsCert     = flag.String("tls-cert", "", "TLS certificate file for the gRPC port")
		tlsKey      = flag.String("tls-key", "", "TLS key file for the gRPC port")
		clientCA    = flag.String("tls-client-ca", "", "CA bundle; when set, clients must present a certificate it signed (mTLS)")
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig path; empty means in-cluster config (needed for source=pods)")
		poll        = flag.Duration("poll-interval", 5*time.Second, "how often each ScaledObject's source is fetched")
		window      = flag.Duration("latency-window", time.Minute, "window for latency percentiles")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *grpcAddr, *metricsAddr, *tlsCert, *tlsKey, *clientCA, *kubeconfig, *poll, *window); err != nil {
		klog.ErrorS(err, "kubegpu-scaler failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, grpcAddr, metricsAddr, certFile, keyFile, caFile, kubeconfig string, poll, window time.Duration) error {
	creds, err := server.ServerCredentials(server.TLSFiles{Cert: certFile, Key: keyFile, ClientCA: caFile})
	if err != nil {
		return fmt.Errorf("gRPC TLS: %w", err)
	}

	srcOpts := server.SourceOptions{Timeout: source.DefaultTimeout, Window: window}
	if cfg, err := kubeConfig(kubeconfig); err != nil {
		// Prometheus triggers still work; pods triggers answer Unavailable.
		klog.ErrorS(err, "No Kubernetes access; source=pods triggers will be unavailable")
	} else {
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
		podInformer := factory.Core().V1().Pods()
		// Keep only what scraping needs: a cluster-wide pod cache is the
		// scaler's largest memory cost otherwise.
		if err := podInformer.Informer().SetTransform(stripPod); err != nil {
			return fmt.Errorf("pod informer transform: %w", err)
		}
		srcOpts.PodLister = podInformer.Lister()
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("informer cache for %v did not sync", typ)
			}
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := server.NewMetrics(reg)
	scaler, err := server.New(ctx, server.Options{NewSource: server.NewSourceFactory(srcOpts), PollInterval: poll, Metrics: m})
	if err != nil {
		return err
	}

	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.UnaryInterceptor), grpc.ChainStreamInterceptor(m.StreamInterceptor)}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	scaler.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	hs.SetServingStatus("externalscaler.ExternalScaler", healthpb.HealthCheckResponse_SERVING)

	lis, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", grpcAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	hsrv := &http.Server{Addr: metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(lis) }()
	go func() {
		if err := hsrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	klog.InfoS("kubegpu-scaler serving", "grpc", grpcAddr, "metrics", metricsAddr, "tls", creds != nil, "mtls", caFile != "")

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("server stopped: %w", err)
	}
	klog.InfoS("Shutting down")
	hs.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		g.Stop() // StreamIsActive streams would otherwise hold shutdown open
	}
	return hsrv.Shutdown(sctx)
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return rest.InClusterConfig()
}

// stripPod keeps the fields the pods source reads.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{}
	out.Name, out.Namespace, out.UID, out.Labels = p.Name, p.Namespace, p.UID, p.Labels
	out.ResourceVersion, out.DeletionTimestamp = p.ResourceVersion, p.DeletionTimestamp
	out.Status.Phase, out.Status.PodIP = p.Status.Phase, p.Status.PodIP
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}
