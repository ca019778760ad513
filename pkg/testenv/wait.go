package testenv

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// WaitForPod polls until cond holds for the pod or ctx ends, and returns
// the last pod seen. The error says what was last observed.
func WaitForPod(ctx context.Context, client kubernetes.Interface, namespace, name string, cond func(*v1.Pod) bool) (*v1.Pod, error) {
	var last *v1.Pod
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pod, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient; keep polling until ctx ends
		}
		last = pod
		return cond(pod), nil
	})
	if err != nil {
		return last, fmt.Errorf("pod %s/%s: %w (last seen: %s)", namespace, name, err, describe(last))
	}
	return last, nil
}

// Bound reports whether the pod has a node.
func Bound(pod *v1.Pod) bool { return pod.Spec.NodeName != "" }

// Unschedulable reports whether the scheduler marked the pod unschedulable.
func Unschedulable(pod *v1.Pod) bool {
	c := ScheduledCondition(pod)
	return c != nil && c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable
}

// ScheduledCondition returns the pod's PodScheduled condition, or nil.
func ScheduledCondition(pod *v1.Pod) *v1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == v1.PodScheduled {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func describe(pod *v1.Pod) string {
	if pod == nil {
		return "nothing"
	}
	s := fmt.Sprintf("node=%q phase=%s", pod.Spec.NodeName, pod.Status.Phase)
	if c := ScheduledCondition(pod); c != nil {
		s += fmt.Sprintf(" scheduled=%s reason=%s message=%q", c.Status, c.Reason, c.Message)
	}
	return s
}
