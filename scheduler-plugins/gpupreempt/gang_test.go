package gpupreempt

import (
	"context"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
)

// nominatorHandle serves nominated pods and records the pods the
// PreFilterExtensions are told about; the rest of fwk.Handle is unused.
type nominatorHandle struct {
	fwk.Handle
	nominated map[string][]fwk.PodInfo
	added     []string
}

func (h *nominatorHandle) NominatedPodsForNode(node string) []fwk.PodInfo { return h.nominated[node] }

func (h *nominatorHandle) RunPreFilterExtensionAddPod(_ context.Context, _ fwk.CycleState, _ *v1.Pod, pi fwk.PodInfo, _ fwk.NodeInfo) *fwk.Status {
	h.added = append(h.added, pi.GetPod().Name)
	return nil
}

func TestAddNominatedLeavesOutOwnGang(t *testing.T) {
	pod := func(name, gangName string, prio int32) fwk.PodInfo {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name)},
			Spec: v1.PodSpec{Priority: &prio}}
		if gangName != "" {
			p.Labels = map[string]string{contract.LabelGang: gangName}
			p.Annotations = map[string]string{contract.AnnotationGangSize: "4"}
		}
		pi, err := framework.NewPodInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		return pi
	}
	self := pod("train-0", "train", 100)
	key, ok := gang.KeyOf(self.GetPod())
	if !ok {
		t.Fatal("test pod is in no gang")
	}
	tests := []struct {
		name      string
		nominated []fwk.PodInfo
		want      []string
	}{
		{"nothing nominated", nil, nil},
		{"own members and self left out", []fwk.PodInfo{self, pod("train-1", "train", 100), pod("train-2", "train", 100)}, nil},
		{"another gang at equal priority counts", []fwk.PodInfo{pod("infer-0", "infer", 100), pod("train-1", "train", 100)}, []string{"infer-0"}},
		{"lone pod above counts, below does not", []fwk.PodInfo{pod("hi", "", 500), pod("lo", "", 10)}, []string{"hi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &nominatorHandle{nominated: map[string][]fwk.PodInfo{"n0": tc.nominated}}
			pl := &Plugin{fh: h}
			node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n0"}}
			ni := framework.NewNodeInfo()
			ni.SetNode(node)
			s := &sim{state: framework.NewCycleState(), ni: ni, main: "n0", nominatedIn: true}
			if err := pl.addNominated(context.Background(), s, self.GetPod(), key); err != nil {
				t.Fatal(err)
			}
			var inView []string
			for _, pi := range s.ni.GetPods() {
				inView = append(inView, pi.GetPod().Name)
			}
			if !slices.Equal(inView, tc.want) || !slices.Equal(h.added, tc.want) {
				t.Errorf("view holds %v, extensions told %v; want %v", inView, h.added, tc.want)
			}
		})
	}
}
