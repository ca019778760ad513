package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/kubegpu/kubegpu/deploy/render"
	"github.com/kubegpu/kubegpu/pkg/testenv"
)

// The deploy tests live here, next to the other control-plane tests,
// because linking the apiserver into another test package costs a 30 s,
// 3 GB link on the build machines.

const (
	chartDir     = "../../deploy/helm/kubegpu"
	manifestsDir = "../../deploy/manifests"
	kedaModule   = "github.com/kedacore/keda/v2"
	// The Prometheus Operator's ServiceMonitor CRD, vendored (see its
	// README.md).
	serviceMonitorCRD = "testdata/prometheus-operator/monitoring.coreos.com_servicemonitors.yaml"
)

// readObjects splits a multi-document YAML (or JSON) file into objects.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeObjects(path, data)
}

func decodeObjects(what string, data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if m == nil {
			continue // an empty document
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: a document without apiVersion or kind", what)
		}
		out = append(out, u)
	}
}

// applier creates objects with server-side dry run (DryRun=All,
// strict field validation) through the dynamic client, as
// `kubectl apply --dry-run=server` does: the apiserver runs decoding,
// defaulting, validation (CRD schemas included) and admission, and
// stores nothing.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, env *testenv.Env) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}
}

func (a *applier) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk, u.GetName(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameRoot {
		return a.dyn.Resource(m.Resource), nil
	}
	ns := u.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return a.dyn.Resource(m.Resource).Namespace(ns), nil
}

func (a *applier) dryRun(ctx context.Context, u *unstructured.Unstructured) error {
	r, err := a.resource(u)
	if err != nil {
		return err
	}
	_, err = r.Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict})
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// dryRunFile applies every object of a file; the real files and the
// broken cases below go through this same path.
func (a *applier) dryRunFile(ctx context.Context, path string) (int, error) {
	objs, err := readObjects(path)
	if err != nil {
		return 0, err
	}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			continue // created for real by ensureNamespaces
		}
		if err := a.dryRun(ctx, u); err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	return len(objs), nil
}

// kedaCRDs returns KEDA's CRD files from the KEDA module this repository
// builds against (the module zip carries config/crd).
func kedaCRDs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", kedaModule).Output()
	if err != nil {
		t.Fatalf("locate %s: %v", kedaModule, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no KEDA CRDs under %s (run `go mod download %s`): %v", dir, kedaModule, err)
	}
	return files
}

// installCRDs creates the CRDs for real and waits until each serves.
func installCRDs(ctx context.Context, t *testing.T, a *applier, files []string) {
	t.Helper()
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	var names []string
	for _, f := range files {
		objs, err := readObjects(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range objs {
			if _, err := a.dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			names = append(names, u.GetName())
		}
	}
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			u, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", name, err)
		}
	}
	a.mapper.Reset()
}

// ensureNamespaces creates, for real, the Namespace objects among objs
// (validated by that create) and every other namespace they use: a
// dry-run create of a Namespace leaves nothing behind, and namespaced
// objects need theirs to exist.
func ensureNamespaces(ctx context.Context, t *testing.T, env *testenv.Env, a *applier, objs []*unstructured.Unstructured) {
	t.Helper()
	want := map[string]bool{}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			r, err := a.resource(u)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Create(ctx, u, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("Namespace %s: %v", u.GetName(), err)
			}
		} else if ns := u.GetNamespace(); ns != "" {
			want[ns] = true
		}
	}
	for ns := range want {
		_, err := env.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
}

// TestDeployDryRun applies, with server-side dry run against the real
// kube-apiserver with KEDA's CRDs installed, the plain manifests
// (deploy/manifests), the chart rendered with its main options, and every
// file under examples/. Deliberately broken objects go through the same
// path and must be refused, so an invalid example fails this test.
func TestDeployDryRun(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newApplier(t, env)
	installCRDs(ctx, t, a, append(kedaCRDs(t), serviceMonitorCRD))

	// What gets applied: files on disk as users apply them, and chart
	// renderings written to files so they take the same path.
	files, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestsDir, err)
	}
	monitoring, err := filepath.Glob(filepath.Join(manifestsDir, "monitoring", "*.yaml"))
	if err != nil || len(monitoring) == 0 {
		t.Fatalf("no manifests in %s/monitoring: %v", manifestsDir, err)
	}
	files = append(files, monitoring...)
	examples, err := filepath.Glob("../../examples/*/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	files = append(files, examples...)
	variants := []struct {
		name string
		opts render.Options
	}{
		{"mtls", render.Options{Values: map[string]any{"scaler": map[string]any{"tls": map[string]any{"enabled": true, "secretName": "scaler-tls", "clientCA": true}}}}},
		{"no-pods-source", render.Options{Values: map[string]any{"scaler": map[string]any{"podsSource": false}}}},
		// Not devicePlugin.privileged: the test apiserver runs with
		// --allow-privileged=false, its default (deploy/render checks
		// what the flag renders).
		{"sharing-nvlink-runtimeclass", render.Options{Values: map[string]any{
			"devicePlugin": map[string]any{"gpuSharing": true, "runtimeClassName": "nvidia"},
			"scheduler":    map[string]any{"gpuPackArgs": map[string]any{"multiGPUInterconnect": "NVLink"}, "gangArgs": map[string]any{"defaultTimeout": "10m"}},
		}}},
		{"release-gpu-in-infra", render.Options{ReleaseName: "gpu", Namespace: "infra", Values: map[string]any{"serviceMonitors": map[string]any{"enabled": true}}}},
	}
	dir := t.TempDir()
	for _, v := range variants {
		v.opts.ChartDir = chartDir
		ms, err := render.Render(v.opts)
		if err != nil {
			t.Fatalf("render %s: %v", v.name, err)
		}
		path := filepath.Join(dir, v.name+".yaml")
		if err := os.WriteFile(path, render.Join(ms), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}

	var all []*unstructured.Unstructured
	for _, f := range files {
		objs, err := readObjects(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, objs...)
	}
	ensureNamespaces(ctx, t, env, a, all)

	total := 0
	for _, f := range files {
		n, err := a.dryRunFile(ctx, f)
		if err != nil {
			t.Error(err)
			continue
		}
		total += n
	}
	t.Logf("dry-run applied %d objects from %d files", total, len(files))

	// The example's trigger dials the Service the chart creates.
	so, err := readObjects("../../examples/inference-vllm/scaledobject.yaml")
	if err != nil {
		t.Fatal(err)
	}
	triggers, _, _ := unstructured.NestedSlice(so[0].Object, "spec", "triggers")
	addr, _, _ := unstructured.NestedString(triggers[0].(map[string]any), "metadata", "scalerAddress")
	if want := fmt.Sprintf("kubegpu-scaler.%s.svc:9090", render.Namespace); addr != want {
		t.Errorf("examples/inference-vllm scalerAddress %q, want the chart's Service %s", addr, want)
	}

	broken := []struct {
		name, yaml, wantErr string
	}{{
		name: "fractional whole GPUs",
		yaml: `apiVersion: v1
kind: Pod
metadata: {name: half-gpu}
spec:
  schedulerName: kubegpu-scheduler
  containers:
  - name: c
    image: busybox
    resources:
      limits: {nvidia.com/gpu: 500m}
`,
		wantErr: "must be an integer",
	}, {
		name: "GPU share request differs from its limit",
		yaml: `apiVersion: v1
kind: Pod
metadata: {name: share}
spec:
  containers:
  - name: c
    image: busybox
    resources:
      requests: {kubegpu.io/gpu-milli: "250"}
      limits: {kubegpu.io/gpu-milli: "500"}
`,
		wantErr: "must be equal to",
	}, {
		name: "misspelt field",
		yaml: `apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  schedulerName: kubegpu-scheduler
  containers:
  - name: c
    image: busybox
    resource:
      limits: {nvidia.com/gpu: 1}
`,
		wantErr: `unknown field "spec.containers[0].resource"`,
	}, {
		name: "ScaledObject without scaleTargetRef",
		yaml: `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: llama, namespace: ml}
spec:
  triggers:
  - type: external
    metadata: {scalerAddress: "kubegpu-scaler.kubegpu-system.svc:9090"}
`,
		wantErr: "scaleTargetRef",
	}, {
		name: "ScaledObject trigger metadata that is not a string",
		yaml: `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: llama, namespace: ml}
spec:
  scaleTargetRef: {name: llama}
  triggers:
  - type: external
    metadata:
      scalerAddress: kubegpu-scaler.kubegpu-system.svc:9090
      targetQueueDepth: 4
`,
		wantErr: "targetQueueDepth",
	}, {
		name: "ServiceMonitor with a misspelt endpoint field",
		yaml: `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: scaler, namespace: kubegpu-system}
spec:
  selector:
    matchLabels: {app.kubernetes.io/component: scaler}
  endpoints:
  - port: metrics
    intervall: 30s
`,
		wantErr: "intervall",
	}, {
		name: "Indexed Job without completions",
		yaml: `apiVersion: batch/v1
kind: Job
metadata: {name: ddp}
spec:
  completionMode: Indexed
  parallelism: 4
  template:
    metadata:
      annotations: {kubegpu.io/gang: "true"}
    spec:
      schedulerName: kubegpu-scheduler
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
`,
		wantErr: "completions",
	}}
	for _, tc := range broken {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "broken.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := a.dryRunFile(ctx, path)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("dry run error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestExamplesDocumented: every example folder explains itself in a
// README.md that names each of its manifests.
func TestExamplesDocumented(t *testing.T) {
	dirs, err := filepath.Glob("../../examples/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, d := range dirs {
		readme, err := os.ReadFile(filepath.Join(d, "README.md"))
		if err != nil {
			t.Errorf("%s: %v", d, err)
			continue
		}
		manifests, _ := filepath.Glob(filepath.Join(d, "*.yaml"))
		if len(manifests) == 0 {
			t.Errorf("%s: no manifests", d)
		}
		for _, m := range manifests {
			if !strings.Contains(string(readme), filepath.Base(m)) {
				t.Errorf("%s/README.md does not mention %s", d, filepath.Base(m))
			}
		}
	}
}
