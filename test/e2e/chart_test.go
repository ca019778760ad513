package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
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
// read and their labels (from its docs/metrics; extended resources
// appear with "." and "/" turned into "_", e.g. resource="nvidia_com_gpu").
var kubeStateMetrics = map[string][]string{
	"kube_node_status_allocatable":                         {"node", "resource", "unit"},
	"kube_pod_container_resource_requests":                 {"namespace", "pod", "uid", "container", "node", "resource", "unit"},
	"kube_pod_container_status_waiting_reason":             {"namespace", "pod", "uid", "container", "reason"},
	"kube_pod_created":                                     {"namespace", "pod", "uid"},
	"kube_pod_owner":                                       {"namespace", "pod", "uid", "owner_kind", "owner_name", "owner_is_controller"},
	"kube_pod_status_phase":                                {"namespace", "pod", "uid", "phase"},
	"kube_pod_status_unschedulable":                        {"namespace", "pod", "uid"},
	"kube_horizontalpodautoscaler_spec_max_replicas":       {"namespace", "horizontalpodautoscaler"},
	"kube_horizontalpodautoscaler_spec_min_replicas":       {"namespace", "horizontalpodautoscaler"},
	"kube_horizontalpodautoscaler_status_current_replicas": {"namespace", "horizontalpodautoscaler"},
	"kube_horizontalpodautoscaler_status_desired_replicas": {"namespace", "horizontalpodautoscaler"},
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

// descRE reads a Desc's String(): client_golang has no accessors for a
// Desc's name and labels. A format change fails the self-checks below.
var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]*)", help: .*, constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// describe lists every metric a registry holds, with its label names,
// from the registry's own Describe: unlike Gather it includes vectors
// that have no series yet.
func describe(t *testing.T, reg prometheus.Registerer) map[string][]string {
	t.Helper()
	c, ok := reg.(prometheus.Collector)
	if !ok {
		t.Fatalf("registry %T cannot describe its metrics", reg)
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	out := map[string][]string{}
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		var labels []string
		for _, l := range strings.Split(m[2], ",") {
			if name, _, ok := strings.Cut(l, "="); ok {
				labels = append(labels, name)
			}
		}
		for _, l := range strings.Split(m[3], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				labels = append(labels, l)
			}
		}
		out[m[1]] = labels
	}
	return out
}

// seriesOf maps a series name to its metric: histogram and summary
// series carry suffixes and an extra label.
func seriesOf(name string, metrics map[string][]string) (string, []string, bool) {
	if labels, ok := metrics[name]; ok {
		return name, labels, true
	}
	for suffix, extra := range map[string]string{"_bucket": "le", "_sum": "", "_count": ""} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if labels, ok := metrics[base]; ok {
				if extra != "" {
					labels = append(slices.Clone(labels), extra)
				}
				return base, labels, true
			}
		}
	}
	return "", nil, false
}

// metricSource is what exports some of the dashboards' metrics: each
// metric's labels, and the labels Prometheus adds from the scrape target.
type metricSource struct {
	name         string
	metrics      map[string][]string
	targetLabels []string
}

// TestDashboardMetrics: every metric name in every PromQL expression of
// deploy/grafana/*.json is one a kubegpu component registers (read from
// the component's own registry, built as the binary builds it) or a
// kube-state-metrics / inference server name listed above; and every
// label a selector matches on is one that metric has (kube-state-metrics:
// the label sets listed above), or one Prometheus adds to its target.
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
	// Target labels: the chart's ServiceMonitors add node to the device
	// plugin's series and drop the target's namespace/pod/container from
	// the device plugin's and the scaler's (their series carry their own).
	components := []metricSource{
		{"device plugin", describe(t, dpReg), []string{"job", "instance", "service", "endpoint", "node"}},
		{"scaler", describe(t, scReg), []string{"job", "instance", "service", "endpoint"}},
		{"scheduler", describe(t, legacyregistry.Registerer()), []string{"job", "instance", "service", "endpoint", "namespace", "pod", "container"}},
	}
	// The reading works and can say no.
	if l := components[0].metrics["kubegpu_gpu_healthy"]; !slices.Contains(l, "uuid") || !slices.Contains(l, "pod") {
		t.Fatalf("kubegpu_gpu_healthy labels %v, want uuid and pod among them", l)
	}
	if l, ok := components[2].metrics["kubegpu_gang_rejections_total"]; !ok || !slices.Contains(l, "reason") {
		t.Fatalf("kubegpu_gang_rejections_total labels %v (registered %v), want reason", l, ok)
	}
	if l := components[2].metrics["scheduler_permit_wait_duration_seconds"]; len(l) == 0 || slices.Contains(l, "profile") {
		t.Fatalf("scheduler_permit_wait_duration_seconds labels %v: want result and no profile", l)
	}
	for _, bogus := range []string{"kubegpu_gpu_utilisation_ratio", "kubegpu_gang_wait_seconds_total", "scheduler_unschedulable_pod"} {
		for _, c := range components {
			if _, _, ok := seriesOf(bogus, c.metrics); ok {
				t.Fatalf("%s found in the %s registry", bogus, c.name)
			}
		}
	}
	// kube-state-metrics is scraped with honorLabels (kube-prometheus-
	// stack), so its series keep their own labels; inference servers'
	// series are matched on their scrape target's namespace and pod.
	ksm := map[string][]string{}
	for n, labels := range kubeStateMetrics {
		ksm[n] = labels
	}
	inference := map[string][]string{}
	for _, n := range inferenceServerMetrics() {
		inference[n] = nil
	}
	components = append(components,
		metricSource{"kube-state-metrics", ksm, []string{"job", "instance"}},
		metricSource{"inference server", inference, []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint"}},
	)

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
			sels, err := grafana.Selectors(q.Expr)
			if err != nil {
				t.Errorf("%s %s: %v", filepath.Base(f), q.Where, err)
				continue
			}
			for _, sel := range sels {
				source := ""
				for _, c := range components {
					if source != "" {
						break
					}
					_, labels, ok := seriesOf(sel.Metric, c.metrics)
					if !ok {
						continue
					}
					source = c.name
					for _, l := range sel.Labels {
						if !slices.Contains(labels, l) && !slices.Contains(c.targetLabels, l) {
							t.Errorf("%s %s: %s has no label %s (its labels: %v; target labels: %v)", filepath.Base(f), q.Where, sel.Metric, l, labels, c.targetLabels)
						}
					}
				}
				if source == "" {
					t.Errorf("%s %s: metric %s is registered by no kubegpu component and is not an allowed kube-state-metrics or inference server name", filepath.Base(f), q.Where, sel.Metric)
					continue
				}
				if used[source] == nil {
					used[source] = map[string]bool{}
				}
				used[source][sel.Metric] = true
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
