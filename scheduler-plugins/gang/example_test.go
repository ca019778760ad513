package gang

import (
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// TestGangTrainingExample decodes examples/gang-training/job.yaml and
// checks what the example promises: an Indexed Job of 4 x 8 GPUs that our
// plugin takes as one gang of 4, a headless Service that selects its pods,
// and the launcher environment.
func TestGangTrainingExample(t *testing.T) {
	raw, err := os.ReadFile("../../examples/gang-training/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var job *batchv1.Job
	var svc *v1.Service
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		switch o := obj.(type) {
		case *batchv1.Job:
			job = o
		case *v1.Service:
			svc = o
		default:
			t.Fatalf("unexpected %T", obj)
		}
	}
	if job == nil || svc == nil {
		t.Fatalf("want a Job and a Service, got %v and %v", job, svc)
	}
	spec := job.Spec
	if ptr.Deref(spec.CompletionMode, "") != batchv1.IndexedCompletion || ptr.Deref(spec.Parallelism, 0) != 4 || ptr.Deref(spec.Completions, 0) != 4 {
		t.Errorf("Job mode %v parallelism %v completions %v, want Indexed 4 4", spec.CompletionMode, spec.Parallelism, spec.Completions)
	}
	tmpl := spec.Template
	if tmpl.Spec.SchedulerName != contract.SchedulerName || tmpl.Spec.Subdomain != svc.Name || svc.Spec.ClusterIP != v1.ClusterIPNone {
		t.Errorf("schedulerName %q, subdomain %q, service %q clusterIP %q: want %s and a headless service named by the subdomain",
			tmpl.Spec.SchedulerName, tmpl.Spec.Subdomain, svc.Name, svc.Spec.ClusterIP, contract.SchedulerName)
	}
	if svc.Spec.Selector["batch.kubernetes.io/job-name"] != job.Name {
		t.Errorf("service selector %v does not select the Job's pods", svc.Spec.Selector)
	}
	c := tmpl.Spec.Containers[0]
	if q := c.Resources.Limits[contract.ResourceGPU]; q.Value() != 8 {
		t.Errorf("GPU limit %s, want 8", q.String())
	}
	env := map[string]v1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	want := map[string]string{"MASTER_ADDR": job.Name + "-0." + svc.Name, "MASTER_PORT": "29500", "WORLD_SIZE": "4"}
	for k, v := range want {
		if env[k].Value != v {
			t.Errorf("%s=%q, want %q", k, env[k].Value, v)
		}
	}
	if rank := env["RANK"].ValueFrom; rank == nil || rank.FieldRef == nil || rank.FieldRef.FieldPath != "metadata.annotations['batch.kubernetes.io/job-completion-index']" {
		t.Errorf("RANK = %+v, want the completion index through the downward API", env["RANK"])
	}

	// A pod the Job controller would create is one member of a gang of 4.
	pod := &v1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: tmpl.Spec}
	pod.Namespace, job.Namespace = "ml", "ml"
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: "u", Controller: ptr.To(true)}}
	id, ok, err := parseIdentity(pod, DefaultTimeout, func(string, string) (*batchv1.Job, error) { return job, nil })
	if err != nil || !ok {
		t.Fatalf("parseIdentity = %v, %v", ok, err)
	}
	if id.size != 4 || id.timeout != 300*time.Second || id.key != (gangKey{"ml", "job/" + job.Name}) {
		t.Errorf("identity %+v, want gang job/%s of 4 with 300s timeout", id, job.Name)
	}
}
