// Command kubegpu-device-plugin is the kubegpu kubelet device plugin (a
// DaemonSet on GPU nodes). This file only reads flags and wires; see
// package deviceplugin.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/nvml"
)

func main() {
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	klog.InitFlags(fs)
	var (
		nvmlSpec     = fs.String("nvml", "real", "NVML backend: real, or fake:NAME for a fake machine")
		resource     = fs.String("resource-name", contract.ResourceGPU, "extended resource name to advertise")
		pluginDir    = fs.String("device-plugin-dir", "/var/lib/kubelet/device-plugins", "the kubelet's device plugin folder")
		podResources = fs.String("pod-resources-socket", "/var/lib/kubelet/pod-resources/kubelet.sock", "the kubelet's podresources API socket (\"\" to disable)")
		nodeName     = fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
		metricsAddr  = fs.String("metrics-addr", ":9400", "address for /metrics and /healthz (\"\" to disable)")
		recovery     = fs.Bool("health-recovery", true, "mark GPUs healthy again when NVML reads them without error")
		recoveryIvl  = fs.Duration("health-recovery-interval", 30*time.Second, "how often unhealthy GPUs are re-checked")
		cdi          = fs.Bool("cdi", false, "also return CDI device names (nvidia.com/gpu=UUID) from Allocate")
		sharing      = fs.Bool("gpu-sharing", false, "also advertise GPU shares (1000 slots per GPU) as --shared-resource-name")
		shared       = fs.String("shared-resource-name", contract.ResourceGPUMilli, "extended resource name of GPU shares, in thousandths of a GPU")
	)
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := klog.Background()
	ctx = klog.NewContext(ctx, logger)

	backend, err := nvml.Open(*nvmlSpec)
	if err != nil {
		logger.Error(err, "Cannot open NVML")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	defer func() { _ = backend.Shutdown() }()

	cfg := deviceplugin.Config{
		Backend:            backend,
		ResourceName:       *resource,
		PluginDir:          *pluginDir,
		PodResourcesSocket: *podResources,
		NodeName:           *nodeName,
		MetricsAddr:        *metricsAddr,
		CDI:                *cdi,
		Sharing:            *sharing,
		SharedResourceName: *shared,
		Health:             inventory.HealthOptions{Recovery: *recovery, RecoveryInterval: *recoveryIvl},
	}
	if client, err := apiClient(*kubeconfig); err != nil {
		logger.Info("WARNING: no API server client", "err", err)
	} else {
		cfg.Client = client
	}
	if err := deviceplugin.Run(ctx, cfg); err != nil {
		logger.Error(err, "Device plugin failed")
		_ = backend.Shutdown()
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	logger.Info("Device plugin stopped")
	klog.Flush()
}

func apiClient(kubeconfig string) (corev1client.CoreV1Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	return corev1client.NewForConfig(cfg)
}
