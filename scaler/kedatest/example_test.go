package kedatest_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

// readStrict decodes one manifest, failing on any field the type lacks (a
// typo would be dropped silently by the API server's lenient decoding).
func readStrict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestExampleInferenceVLLM checks that examples/inference-vllm fits
// together: typed and strict Kubernetes and KEDA objects, KEDA's own
// ScaledObject checks, and trigger metadata that this scaler accepts and
// that selects the Deployment's pods on their metrics port.
func TestExampleInferenceVLLM(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "inference-vllm")
	var dep appsv1.Deployment
	var svc corev1.Service
	var so kedav1alpha1.ScaledObject
	readStrict(t, filepath.Join(dir, "deployment.yaml"), &dep)
	readStrict(t, filepath.Join(dir, "service.yaml"), &svc)
	readStrict(t, filepath.Join(dir, "scaledobject.yaml"), &so)

	for _, tm := range []struct{ got, want string }{
		{dep.APIVersion + "/" + dep.Kind, "apps/v1/Deployment"},
		{svc.APIVersion + "/" + svc.Kind, "v1/Service"},
		{so.APIVersion + "/" + so.Kind, "keda.sh/v1alpha1/ScaledObject"},
	} {
		if tm.got != tm.want {
			t.Errorf("type %s, want %s", tm.got, tm.want)
		}
	}
	if dep.Namespace != svc.Namespace || dep.Namespace != so.Namespace || dep.Namespace == "" {
		t.Errorf("namespaces %q %q %q differ", dep.Namespace, svc.Namespace, so.Namespace)
	}

	pod := dep.Spec.Template
	sel, err := metav1LabelSelector(dep)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("deployment selector does not match its pods (%v)", err)
	}
	if pod.Spec.SchedulerName != "kubegpu-scheduler" {
		t.Errorf("schedulerName %q", pod.Spec.SchedulerName)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if gpus := c.Resources.Limits["nvidia.com/gpu"]; gpus.Value() != 1 {
		t.Errorf("nvidia.com/gpu limit %v, want 1", gpus.String())
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		t.Error("no HTTP readiness probe: the scaler scrapes only Ready pods")
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Error("service selector does not match the pods")
	}

	if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(&so); err != nil {
		t.Error(err)
	}
	if err := kedav1alpha1.CheckFallbackValid(&so); err != nil {
		t.Error(err)
	}
	if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
		t.Error(err)
	}
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != dep.Name {
		t.Errorf("scaleTargetRef %+v, want %s", so.Spec.ScaleTargetRef, dep.Name)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "external" {
		t.Fatalf("triggers %+v, want one external", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	if md["scalerAddress"] != "kubegpu-scaler.kubegpu-system.svc:9090" {
		t.Errorf("scalerAddress %q", md["scalerAddress"])
	}
	m, err := metadata.Parse(md)
	if err != nil {
		t.Fatalf("trigger metadata rejected by the scaler: %v", err)
	}
	if m.Source != metadata.SourcePods || !m.PodSelector.Matches(labels.Set(pod.Labels)) {
		t.Errorf("trigger podSelector %q does not select the Deployment's pods", m.PodSelectorRaw)
	}
	ports := map[int32]bool{}
	for _, p := range c.Ports {
		ports[p.ContainerPort] = true
	}
	if !ports[int32(m.MetricsPort)] {
		t.Errorf("metricsPort %s is not a container port", strconv.Itoa(m.MetricsPort))
	}
}

func metav1LabelSelector(dep appsv1.Deployment) (labels.Selector, error) {
	if dep.Spec.Selector == nil {
		return labels.Nothing(), nil
	}
	return labels.ValidatedSelectorFromSet(dep.Spec.Selector.MatchLabels)
}
