package gang

import (
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	batchlisters "k8s.io/client-go/listers/batch/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// gangKey names a gang within its namespace. Job gangs are named
// "job/<job name>" so they cannot collide with a label-named gang.
type gangKey struct {
	namespace, name string
}

func (k gangKey) String() string { return k.namespace + "/" + k.name }

// identity is what a pod says about its gang. size and timeout are read
// per pod (a Job's parallelism may change); the latest member wins.
type identity struct {
	key gangKey
	// job is the owning Job's name for Job gangs: the size comes from
	// its parallelism, looked up through the lister.
	job     string
	size    int
	timeout time.Duration
}

// gangKeyOf tells whether the pod belongs to one of our gangs, without
// looking anything up: the informer handlers use it to count bound
// members. A pod in an upstream PodGroup (spec.schedulingGroup) is left
// to the upstream gang plugins.
func gangKeyOf(pod *v1.Pod) (gangKey, string, bool) {
	if pod.Spec.SchedulingGroup != nil {
		return gangKey{}, "", false
	}
	if name := pod.Labels[contract.LabelGang]; name != "" {
		return gangKey{pod.Namespace, name}, "", true
	}
	if pod.Annotations[contract.LabelGang] == "true" {
		if ref := metav1.GetControllerOf(pod); ref != nil && ref.Kind == "Job" {
			return gangKey{pod.Namespace, "job/" + ref.Name}, ref.Name, true
		}
	}
	return gangKey{}, "", false
}

// jobGetter finds a Job by namespace and name (the scheduler's Job lister).
type jobGetter func(namespace, name string) (*batchv1.Job, error)

// parseIdentity reads a pod's gang identity. ok is false for pods that are
// not in one of our gangs. Malformed annotations are errors that name the
// annotation.
func parseIdentity(pod *v1.Pod, defaultTimeout time.Duration, jobs jobGetter) (id identity, ok bool, err error) {
	key, job, ok := gangKeyOf(pod)
	if !ok {
		if pod.Spec.SchedulingGroup == nil && pod.Labels[contract.LabelGang] == "" && pod.Annotations[contract.LabelGang] == "true" {
			return identity{}, false, fmt.Errorf("annotation %s=true asks for a Job gang, but the pod has no controlling batch/v1 Job", contract.LabelGang)
		}
		return identity{}, false, nil
	}
	id = identity{key: key, job: job, timeout: defaultTimeout}
	if value, set := pod.Annotations[contract.AnnotationGangTimeout]; set {
		d, err := time.ParseDuration(value)
		if err != nil {
			return identity{}, true, fmt.Errorf("annotation %s=%q: want a Go duration such as 300s: %w", contract.AnnotationGangTimeout, value, err)
		}
		if d <= 0 || d > MaxTimeout {
			return identity{}, true, fmt.Errorf("annotation %s=%q: want more than 0 and at most %s", contract.AnnotationGangTimeout, value, MaxTimeout)
		}
		id.timeout = d
	}
	if job == "" {
		value, set := pod.Annotations[contract.AnnotationGangSize]
		if !set {
			return identity{}, true, fmt.Errorf("label %s=%s needs annotation %s", contract.LabelGang, key.name, contract.AnnotationGangSize)
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return identity{}, true, fmt.Errorf("annotation %s=%q: want a positive integer", contract.AnnotationGangSize, value)
		}
		id.size = n
		return id, true, nil
	}
	j, err := jobs(pod.Namespace, job)
	if err != nil {
		return identity{}, true, fmt.Errorf("gang Job %s/%s: %w", pod.Namespace, job, err)
	}
	id.size = 1
	if p := j.Spec.Parallelism; p != nil {
		id.size = int(*p)
	}
	if id.size < 1 {
		return identity{}, true, fmt.Errorf("gang Job %s/%s has parallelism %d: nothing to place", pod.Namespace, job, id.size)
	}
	return id, true, nil
}

// Identity is a pod's gang as other plugins of the profile see it
// (preemption evicts and places gangs whole).
type Identity struct {
	// Key names the gang: "namespace/name", or "namespace/job/NAME" for a
	// Job gang.
	Key  string
	Size int
}

// KeyOf names the pod's kubegpu gang without any lookup; ok is false for
// pods in none (pods of an upstream PodGroup included).
func KeyOf(pod *v1.Pod) (string, bool) {
	k, _, ok := gangKeyOf(pod)
	if !ok {
		return "", false
	}
	return k.String(), true
}

// Identify reads the pod's gang and its size; Job gangs take the size from
// the Job's parallelism through jobs. ok is false for pods in no gang.
func Identify(pod *v1.Pod, jobs batchlisters.JobLister) (Identity, bool, error) {
	get := func(namespace, name string) (*batchv1.Job, error) {
		if jobs == nil {
			return nil, fmt.Errorf("no Job lister to size gang Job %s/%s", namespace, name)
		}
		return jobs.Jobs(namespace).Get(name)
	}
	id, ok, err := parseIdentity(pod, DefaultTimeout, get)
	if err != nil || !ok {
		return Identity{}, ok, err
	}
	return Identity{Key: id.key.String(), Size: id.size}, true, nil
}
