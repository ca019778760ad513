package gang

import (
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// FuzzParseIdentity feeds arbitrary gang labels and annotations (and a
// Job owner with any parallelism) to parseIdentity. It must not panic; an
// identity it accepts has a size of at least 1, a timeout in (0,
// MaxTimeout] and a key in the pod's namespace; an error names the label,
// annotation or Job at fault.
func FuzzParseIdentity(f *testing.F) {
	f.Add("g", "3", "", false, "", "", int32(0), false, false)
	f.Add("g", "2", "10s", true, "", "", int32(0), false, false)
	f.Add("g", "four", "", false, "", "", int32(0), false, false)
	f.Add("g", "0", "1h", true, "", "", int32(0), false, false)
	f.Add("", "", "", false, "true", "Job", int32(4), true, false)
	f.Add("", "", "", false, "true", "Job", int32(0), true, false)
	f.Add("", "", "-5s", true, "true", "Job", int32(-1), false, false)
	f.Add("", "", "", false, "true", "ReplicaSet", int32(2), true, false)
	f.Add("g", "2", "", false, "", "", int32(0), false, true)
	f.Add("g", "99999999999999999999", "9223372036s", true, "", "", int32(0), false, false)
	f.Fuzz(func(t *testing.T, label, size, timeout string, hasTimeout bool, optIn, ownerKind string, parallelism int32, setParallelism, group bool) {
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ml", Annotations: map[string]string{}}}
		if label != "" {
			pod.Labels = map[string]string{contract.LabelGang: label}
		}
		if size != "" {
			pod.Annotations[contract.AnnotationGangSize] = size
		}
		if hasTimeout {
			pod.Annotations[contract.AnnotationGangTimeout] = timeout
		}
		if optIn != "" {
			pod.Annotations[contract.LabelGang] = optIn
		}
		if ownerKind != "" {
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: ownerKind, Name: "train", UID: "u", Controller: ptr.To(true)}}
		}
		if group {
			pod.Spec.SchedulingGroup = &v1.PodSchedulingGroup{}
		}
		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "ml"}}
		if setParallelism {
			job.Spec.Parallelism = ptr.To(parallelism)
		}
		jobs := func(ns, name string) (*batchv1.Job, error) {
			if ns == job.Namespace && name == job.Name {
				return job, nil
			}
			return nil, apierrors.NewNotFound(schema.GroupResource{Group: "batch", Resource: "jobs"}, name)
		}
		id, ok, err := parseIdentity(pod, DefaultTimeout, jobs)
		_, _, inGang := gangKeyOf(pod)
		if ok != inGang {
			t.Fatalf("ok = %v but gangKeyOf says %v", ok, inGang)
		}
		if group && (ok || err != nil) {
			t.Fatalf("pod of an upstream PodGroup: ok %v err %v, want it left alone", ok, err)
		}
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, contract.LabelGang) && !strings.Contains(msg, contract.AnnotationGangSize) &&
				!strings.Contains(msg, contract.AnnotationGangTimeout) && !strings.Contains(msg, "gang Job ml/train") {
				t.Fatalf("error %q names no label, annotation or Job", msg)
			}
			return
		}
		if !ok {
			if id != (identity{}) {
				t.Fatalf("identity %+v for a pod outside gangs", id)
			}
			return
		}
		if id.size < 1 || id.timeout <= 0 || id.timeout > MaxTimeout {
			t.Fatalf("accepted identity %+v", id)
		}
		if id.key.namespace != pod.Namespace || id.key.name == "" {
			t.Fatalf("key %+v, want one in namespace %s", id.key, pod.Namespace)
		}
		if !hasTimeout && id.timeout != DefaultTimeout {
			t.Fatalf("timeout %s without the annotation, want the default %s", id.timeout, DefaultTimeout)
		}
		if hasTimeout {
			if d, err := time.ParseDuration(timeout); err != nil || d != id.timeout {
				t.Fatalf("timeout %s from annotation %q", id.timeout, timeout)
			}
		}
		if id.job != "" && (id.key.name != "job/"+id.job || (setParallelism && int32(id.size) != parallelism)) {
			t.Fatalf("Job gang %+v from parallelism %d", id, parallelism)
		}
	})
}
