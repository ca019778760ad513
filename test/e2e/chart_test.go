package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/kubegpu/kubegpu/deploy/grafana"
	"github.com/kubegpu/kubegpu/deploy/render"
	dpmetrics "github.com/kubegpu/kubegpu/deviceplugin/metrics"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/scaler/presets"
	"github.com/kubegpu/kubegpu/scaler/server"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// chartSchedulerConfig renders the chart and writes its scheduler
// ConfigMap's file to disk, as the Deployment mounts it.
func chartSchedulerConfig(t *testing.T, values map[string]any) string {
	t.Helper()
	ms, err := render.Render(render.Options{ChartDir: chartDir, Values: values})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Kind != "ConfigMap" || m.Name != "kubegpu-scheduler-config" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(m.Content), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, ok := obj.(*corev1.ConfigMap).Data["kubegpu-scheduler-config.yaml"]
		if !ok {
			t.Fatal("scheduler ConfigMap lacks kubegpu-scheduler-config.yaml")
		}
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Fatal("the chart renders no scheduler ConfigMap")
	return ""
}

// TestChartSchedulerArgs: the chart's scheduler container args parse
// with kube-scheduler's own flag set and validate, and --config points at
// the mounted ConfigMap key.
func TestChartSchedulerArgs(t *testing.T) {
	ms, err := render.Render(render.Options{ChartDir: chartDir, Values: map[string]any{"scheduler": map[string]any{"extraArgs": []any{"--kube-api-qps=50"}}}})
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	for _, m := range ms {
		if m.Kind == "Deployment" && m.Name == "kubegpu-scheduler" {
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(m.Content), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			dep = obj.(*appsv1.Deployment)
		}
	}
	if dep == nil {
		t.Fatal("no scheduler Deployment")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	parse := func(args []string) (*options.Options, error) {
		opts := options.NewOptions()
		fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		for _, f := range opts.Flags.FlagSets {
			fs.AddFlagSet(f)
		}
		return opts, fs.Parse(args)
	}
	opts, err := parse(c.Args)
	if err != nil {
		t.Fatalf("scheduler args %v: %v", c.Args, err)
	}
	// As kube-scheduler does once --config is read.
	if opts.ComponentConfig, err = loadSchedulerConfig(t, chartSchedulerConfig(t, nil)); err != nil {
		t.Fatal(err)
	}
	if errs := opts.Validate(); len(errs) > 0 {
		t.Errorf("scheduler args %v: %v", c.Args, errs)
	}
	if _, err := parse([]string{"--no-such-flag"}); err == nil {
		t.Error("an unknown kube-scheduler flag parsed")
	}
	mounted := ""
	for _, vm := range c.VolumeMounts {
		if vm.Name == "config" {
			mounted = vm.MountPath + "/kubegpu-scheduler-config.yaml"
		}
	}
	if opts.ConfigFile != mounted || mounted == "" {
		t.Errorf("--config=%q, want the mounted ConfigMap key %q", opts.ConfigFile, mounted)
	}
}

// TestChartSchedulerConfig: the chart's KubeSchedulerConfiguration loads
// and validates through kube-scheduler's own code, elects a leader in the
// release namespace, and its profile is exactly registry.Profile (and so
// deploy/scheduler's, see TestDeploySchedulerConfig). Plugin arguments
// set through values reach the plugins' validation.
func TestChartSchedulerConfig(t *testing.T) {
	cfg, err := loadSchedulerConfig(t, chartSchedulerConfig(t, nil))
	if err != nil {
		t.Fatalf("chart scheduler config: %v", err)
	}
	if le := cfg.LeaderElection; !le.LeaderElect || le.ResourceNamespace != render.Namespace || le.ResourceName != "kubegpu-scheduler" {
		t.Errorf("leader election %+v, want on, Lease kubegpu-scheduler in %s", le, render.Namespace)
	}
	want, err := loadSchedulerConfig(t, writeConfig(t, "", registry.Profile))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName != contract.SchedulerName {
		t.Fatalf("profiles %d, want one named %s", len(cfg.Profiles), contract.SchedulerName)
	}
	if !apiequality.Semantic.DeepEqual(cfg.Profiles, want.Profiles) {
		t.Errorf("chart profile differs from registry.Profile:\nchart:    %+v\nregistry: %+v", cfg.Profiles[0], want.Profiles[0])
	}

	nvlink, err := loadSchedulerConfig(t, chartSchedulerConfig(t, map[string]any{"scheduler": map[string]any{
		"gpuPackArgs": map[string]any{"multiGPUInterconnect": "NVLink"},
		"gangArgs":    map[string]any{"defaultTimeout": "10m"},
	}}))
	if err != nil {
		t.Fatalf("chart scheduler config with plugin args: %v", err)
	}
	if apiequality.Semantic.DeepEqual(nvlink.Profiles, want.Profiles) {
		t.Error("gpuPackArgs and gangArgs did not change the profile")
	}
	_, err = loadSchedulerConfig(t, chartSchedulerConfig(t, map[string]any{"scheduler": map[string]any{
		"gpuPackArgs": map[string]any{"multiGPUInterconnect": "Sometimes"},
	}}))
	if err == nil || !strings.Contains(err.Error(), "multiGPUInterconnect") {
		t.Errorf("bad gpuPackArgs: error %v, want one naming multiGPUInterconnect", err)
	}
}

// kubeStateMetrics are the kube-state-metrics v2 series the dashboards
// read (names from its docs/metrics; extended resources appear with "."
// and "/" turned into "_", e.g. resource="nvidia_com_gpu").
var kubeStateMetrics = []string{
	"kube_node_status_allocatable",
	"kube_pod_container_resource_requests",
	"kube_pod_container_status_waiting_reason",
	"kube_pod_created",
	"kube_pod_owner",
	"kube_pod_status_phase",
	"kube_pod_status_unschedulable",
	"kube_horizontalpodautoscaler_spec_max_replicas",
	"kube_horizontalpodautoscaler_spec_min_replicas",
	"kube_horizontalpodautoscaler_status_current_replicas",
	"kube_horizontalpodautoscaler_status_desired_replicas",
}

// inferenceServerMetrics are the names of the scaler's built-in presets
// (vLLM, Triton, TGI, SGLang; checked against each project's docs, see
// scaler/presets), histograms with their series suffixes.
func inferenceServerMetrics() []string {
	var out []string
	for _, name := range presets.Names() {
		p, ok := presets.Lookup(name)
		if !ok {
			continue // custom
		}
		out = append(out, p.Queue, p.Running)
		out = append(out, p.KVCache...)
		out = append(out, p.Counters...)
		for _, h := range p.Latency {
			out = append(out, h.Name+"_bucket", h.Name+"_sum", h.Name+"_count")
		}
	}
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}

// registered reports whether reg holds a metric named name. Registries
// cannot list their collectors, and Gather leaves out vectors with no
// series yet, so it asks the registry itself: registering a probe with
// the same name fails exactly when the name is taken.
func registered(t *testing.T, reg prometheus.Registerer, name string) bool {
	t.Helper()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "kubegpu dashboard test probe"})
	err := reg.Register(probe)
	if err == nil {
		reg.Unregister(probe)
		return false
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) || strings.Contains(err.Error(), "already exists with the same fully-qualified name") ||
		strings.Contains(err.Error(), "previously registered descriptor with the same fully-qualified name") {
		return true
	}
	t.Fatalf("probe %s: %v", name, err)
	return false
}

// seriesBase strips the series suffixes of histograms and summaries.
func seriesBase(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b
		}
	}
	return name
}

// TestDashboardMetrics: every metric name in every PromQL expression of
// deploy/grafana/*.json is one a kubegpu component registers (asked of
// the component's own registry, built as the binary builds it) or a
// kube-state-metrics / inference server name listed above.
func TestDashboardMetrics(t *testing.T) {
	// Device plugin: its registry as deviceplugin.Run builds it.
	dpReg := dpmetrics.Registry(&dpmetrics.GPUCollector{}, dpmetrics.NewCounters())
	// Scaler: as cmd/kubegpu-scaler builds it.
	scReg := prometheus.NewRegistry()
	server.NewMetrics(scReg)
	// Scheduler: kube-scheduler's own metrics, and the plugins' built
	// from the shipped profile as the scheduler builds them (Gang
	// registers its metrics in the plugin factory).
	schedmetrics.Register()
	deployed, err := loadSchedulerConfig(t, deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	r := plugins.NewInTreeRegistry()
	if err := r.Merge(registry.Plugins()); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := frameworkruntime.NewFramework(ctx, r, &deployed.Profiles[0],
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informers.NewSharedInformerFactory(client, 0)),
		frameworkruntime.WithSnapshotSharedLister(internalcache.NewEmptySnapshot())); err != nil {
		t.Fatal(err)
	}
	components := []struct {
		name string
		reg  prometheus.Registerer
	}{
		{"device plugin", dpReg},
		{"scaler", scReg},
		{"scheduler", legacyregistry.Registerer()},
	}
	allowed := map[string]string{}
	for _, n := range kubeStateMetrics {
		allowed[n] = "kube-state-metrics"
	}
	for _, n := range inferenceServerMetrics() {
		allowed[n] = "inference server"
	}
	source := func(name string) string {
		if s, ok := allowed[name]; ok {
			return s
		}
		for _, c := range components {
			if registered(t, c.reg, name) || registered(t, c.reg, seriesBase(name)) {
				return c.name
			}
		}
		return ""
	}
	// The check can fail: names nobody registers are found as such.
	for _, bogus := range []string{"kubegpu_gpu_utilisation_ratio", "kubegpu_gang_wait_seconds_total", "scheduler_unschedulable_pod"} {
		if s := source(bogus); s != "" {
			t.Fatalf("%s found in the %s registry; the probe is broken", bogus, s)
		}
	}

	files, err := filepath.Glob("../../deploy/grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	used := map[string]map[string]bool{}
	for _, f := range files {
		d, err := grafana.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		qs, err := d.Queries()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, q := range qs {
			names, err := grafana.MetricNames(q.Expr)
			if err != nil {
				t.Errorf("%s %s: %v", filepath.Base(f), q.Where, err)
				continue
			}
			for _, n := range names {
				s := source(n)
				if s == "" {
					t.Errorf("%s %s: metric %s is registered by no kubegpu component and is not an allowed kube-state-metrics or inference server name", filepath.Base(f), q.Where, n)
					continue
				}
				if used[s] == nil {
					used[s] = map[string]bool{}
				}
				used[s][n] = true
			}
		}
	}
	var summary []string
	for s, names := range used {
		summary = append(summary, s+": "+strings.Join(sortedKeys(names), " "))
	}
	sort.Strings(summary)
	t.Logf("dashboard metrics by source:\n%s", strings.Join(summary, "\n"))
	for _, c := range []string{"device plugin", "scaler", "scheduler"} {
		if len(used[c]) == 0 {
			t.Errorf("no dashboard reads a %s metric", c)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
