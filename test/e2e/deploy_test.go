package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupreempt"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// The deploy config test lives here rather than next to the registry
// because this package already links the scheduler; another package that
// does costs a 30 s, 3 GB link on the build machines.

const deployConfig = "../../deploy/scheduler/kubegpu-scheduler-config.yaml"

// loadSchedulerConfig reads a KubeSchedulerConfiguration the way
// kube-scheduler's --config does (decoding, defaulting), validates it
// with the scheduler's own validation, and builds GPUPack from every
// profile's GPUPack args so ours are defaulted and validated too.
func loadSchedulerConfig(t *testing.T, path string) (*schedconfig.KubeSchedulerConfiguration, error) {
	t.Helper()
	cfg, err := options.LoadConfigFromFile(klog.Background(), path)
	if err != nil {
		return nil, err
	}
	if errs := validation.ValidateKubeSchedulerConfiguration(cfg); errs != nil {
		return nil, errs
	}
	for _, prof := range cfg.Profiles {
		var args runtime.Object
		for _, pc := range prof.PluginConfig {
			if pc.Name == gpupack.Name {
				args = pc.Args
			}
		}
		if _, err := gpupack.NewStandalone(args); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// writeConfig wraps a profiles list into a complete configuration file.
func writeConfig(t *testing.T, header, profiles string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	body := "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n" + header + "profiles:\n" + profiles
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDeploySchedulerConfig: the shipped config loads and validates
// through kube-scheduler's own code, runs with leader election, and its
// profile is exactly registry.Profile (what the tests run).
func TestDeploySchedulerConfig(t *testing.T) {
	deployed, err := loadSchedulerConfig(t, deployConfig)
	if err != nil {
		t.Fatalf("%s: %v", deployConfig, err)
	}
	if !deployed.LeaderElection.LeaderElect {
		t.Errorf("%s: leader election is off, want on as in production", deployConfig)
	}
	want, err := loadSchedulerConfig(t, writeConfig(t, "", registry.Profile))
	if err != nil {
		t.Fatalf("registry.Profile: %v", err)
	}
	if len(deployed.Profiles) != 1 || deployed.Profiles[0].SchedulerName != contract.SchedulerName {
		t.Fatalf("%s: profiles %d, want one named %s", deployConfig, len(deployed.Profiles), contract.SchedulerName)
	}
	if !apiequality.Semantic.DeepEqual(deployed.Profiles, want.Profiles) {
		t.Errorf("%s profile differs from registry.Profile:\ndeploy:   %+v\nregistry: %+v", deployConfig, deployed.Profiles[0], want.Profiles[0])
	}

	// Built into a framework as the scheduler builds it, GPUPack is the
	// first binder, so the gpu-ids annotation travels in the Binding.
	r := plugins.NewInTreeRegistry()
	if err := r.Merge(registry.Plugins()); err != nil {
		t.Fatal(err)
	}
	schedmetrics.Register() // the framework counts plugins in them; once per process
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fw, err := frameworkruntime.NewFramework(ctx, r, &deployed.Profiles[0],
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informers.NewSharedInformerFactory(client, 0)),
		frameworkruntime.WithSnapshotSharedLister(internalcache.NewEmptySnapshot()))
	if err != nil {
		t.Fatalf("build the deployed profile: %v", err)
	}
	if bind := fw.ListPlugins().Bind.Enabled; len(bind) == 0 || bind[0].Name != gpupack.Name {
		t.Errorf("bind plugins %v, want %s first", bind, gpupack.Name)
	}
	// Gang's PostFilter runs before GPUPreempt, which replaces
	// DefaultPreemption.
	var post []string
	for _, p := range fw.ListPlugins().PostFilter.Enabled {
		post = append(post, p.Name)
	}
	if len(post) < 2 || !slices.Equal(post[:2], []string{gang.Name, gpupreempt.Name}) || slices.Contains(post, "DefaultPreemption") {
		t.Errorf("postFilter plugins %v, want %s then %s first and no DefaultPreemption", post, gang.Name, gpupreempt.Name)
	}

	// The same loading rejects bad GPUPack args, so the check above
	// really validates ours.
	bad := registry.Profile + "  - name: GPUPack\n    args:\n      multiGPUInterconnect: Sometimes\n"
	if _, err := loadSchedulerConfig(t, writeConfig(t, "", bad)); err == nil || !strings.Contains(err.Error(), "multiGPUInterconnect") {
		t.Errorf("bad GPUPack args: error %v, want one naming multiGPUInterconnect", err)
	}
}

// TestExamples creates every example pod in examples/*/ against the real
// apiserver and kubegpu's scheduler, on nodes that suit them, and checks
// each binds: an example that stops being valid fails here.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	invs := map[string]*gpunode.Node{
		"h100-a": addShapedNode(ctx, t, env, "dgx-h100", "h100-a", map[string]string{contract.LabelGPUSharing: "true"}),
		"h100-b": addShapedNode(ctx, t, env, "dgx-h100", "h100-b", nil),
		"l4":     addShapedNode(ctx, t, env, "pcie-4xl4", "l4", nil),
	}
	startScheduler(t, env)

	var pods []*v1.Pod
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			t.Logf("%s: %v; skipped", f, err) // e.g. a KEDA ScaledObject
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pod, ok := obj.(*v1.Pod)
		if !ok {
			// Jobs, Deployments and their Services have tests of their
			// own (gang, scaler); this test places single pods.
			t.Logf("%s: a %T, not a Pod; skipped", f, obj)
			continue
		}
		if pod.Spec.SchedulerName != contract.SchedulerName {
			t.Errorf("%s: schedulerName %q, want %s", f, pod.Spec.SchedulerName, contract.SchedulerName)
		}
		if _, err := env.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pods = append(pods, pod)
	}
	for _, pod := range pods {
		node, gpus, a := boundGPUs(ctx, t, env, pod.Name, invs)
		t.Logf("%s: node %s GPUs %v share %d", pod.Name, node, gpus, a.Milli)
		wantProduct := ""
		if aff := pod.Spec.Affinity; aff != nil && aff.NodeAffinity != nil {
			wantProduct = aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values[0]
		}
		if got := labelValue(invs[node].GPUs[0].Product); wantProduct != "" && got != wantProduct {
			t.Errorf("%s: on %s (%s), want %s", pod.Name, node, got, wantProduct)
		}
		if _, ok := pod.Annotations[contract.AnnotationGPUMemoryMin]; ok && !strings.HasPrefix(node, "h100") {
			t.Errorf("%s: on %s, want a node with 40Gi GPUs", pod.Name, node)
		}
	}
}
