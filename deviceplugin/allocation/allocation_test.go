package allocation

import (
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func pod(name string, phase v1.PodPhase, ids ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)}, Status: v1.PodStatus{Phase: phase}}
	if ids != nil {
		p.Annotations = map[string]string{contract.AnnotationGPUIDs: strings.Join(ids, ",")}
	}
	return p
}

// aged sets the pod's creation time to sec seconds after an epoch.
func aged(p *v1.Pod, sec int64) *v1.Pod {
	p.CreationTimestamp = metav1.NewTime(time.Unix(1_700_000_000+sec, 0))
	return p
}

func TestPreferred(t *testing.T) {
	node := gpunode.MustShape("dgx1-v100")
	u := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, node.GPUs[i].UUID)
		}
		slices.Sort(out)
		return out
	}
	all := u(0, 1, 2, 3, 4, 5, 6, 7)
	deleting := pod("deleting", v1.PodPending, u(0, 1)...)
	deleting.DeletionTimestamp = &metav1.Time{}
	tests := []struct {
		name        string
		pods        []*v1.Pod
		inUse       InUse
		available   []string
		mustInclude []string
		size        int
		want        []string
		wantSrc     Source
	}{
		{"annotated pod", []*v1.Pod{pod("a", v1.PodPending, u(5, 2)...)}, InUse{}, all, nil, 2, u(2, 5), SourceAnnotation},
		// A malformed annotation (whitespace, a GPU named twice) is never honoured.
		{"malformed annotation falls back", []*v1.Pod{pod("a", v1.PodPending, " "+node.GPUs[5].UUID+" ", node.GPUs[2].UUID, node.GPUs[5].UUID)}, InUse{}, all, nil, 2, u(2, 3), SourceTopology},
		{"two pods same set", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...), pod("b", v1.PodPending, u(3, 1)...)}, InUse{}, all, nil, 2, u(1, 3), SourceAnnotation},
		// Two waiting pods with different sets of the same size: the
		// kubelet admits the older one first.
		{"oldest of two", []*v1.Pod{aged(pod("a", v1.PodPending, u(1, 3)...), 2), aged(pod("b", v1.PodPending, u(4, 5)...), 1)}, InUse{}, all, nil, 2, u(4, 5), SourceAnnotation},
		{"same age: name order", []*v1.Pod{pod("b", v1.PodPending, u(4, 5)...), pod("a", v1.PodPending, u(1, 3)...)}, InUse{}, all, nil, 2, u(1, 3), SourceAnnotation},
		{"claimed pod skipped", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...), pod("b", v1.PodPending, u(4, 5)...)}, InUse{Claimed: map[types.UID]bool{"uid-a": true}}, all, nil, 2, u(4, 5), SourceAnnotation},
		// Shares in use or reserved keep a GPU from being offered whole.
		{"shared GPU not offered whole", []*v1.Pod{pod("s", v1.PodRunning, node.GPUs[0].UUID+":250")}, InUse{}, all, nil, 4, u(4, 5, 6, 7), SourceTopology},
		{"slot in use keeps GPU", nil, InUse{Known: true, Slots: map[string]bool{SlotID(node.GPUs[4].UUID, 7): true}}, all, nil, 4, u(0, 1, 2, 3), SourceTopology},
		{"only shared GPUs left", []*v1.Pod{pod("s", v1.PodPending, node.GPUs[0].UUID+":250")}, InUse{}, u(0, 1), nil, 2, nil, SourceNone},
		// Size disambiguates.
		{"size picks the pod", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...), pod("b", v1.PodPending, u(4, 5, 6)...)}, InUse{}, all, nil, 3, u(4, 5, 6), SourceAnnotation},
		{"running pod is done (no podresources)", []*v1.Pod{pod("a", v1.PodRunning, u(1, 3)...)}, InUse{}, all, nil, 2, u(2, 3), SourceTopology},
		{"podresources: in-use set skipped", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...)}, InUse{Known: true, Devices: map[string]bool{node.GPUs[1].UUID: true}}, all, nil, 2, u(2, 3), SourceTopology},
		{"podresources: running pod not yet holding GPUs", []*v1.Pod{pod("a", v1.PodRunning, u(1, 3)...)}, InUse{Known: true, Devices: map[string]bool{}}, all, nil, 2, u(1, 3), SourceAnnotation},
		{"deleting pod ignored", []*v1.Pod{deleting}, InUse{}, all, nil, 2, u(2, 3), SourceTopology},
		{"succeeded pod ignored", []*v1.Pod{pod("a", v1.PodSucceeded, u(6, 7)...)}, InUse{}, all, nil, 2, u(2, 3), SourceTopology},
		{"annotated GPU not available", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...)}, InUse{}, u(0, 2, 3, 4), nil, 2, u(2, 3), SourceTopology},
		{"mustInclude not in annotation", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...)}, InUse{}, all, u(7), 2, u(6, 7), SourceTopology},
		{"mustInclude in annotation", []*v1.Pod{pod("a", v1.PodPending, u(1, 3)...)}, InUse{}, all, u(3), 2, u(1, 3), SourceAnnotation},
		{"unannotated 4 gets a quad", nil, InUse{}, all, nil, 4, u(0, 1, 2, 3), SourceTopology},
		{"quad with mustInclude 5", nil, InUse{}, all, u(5), 4, u(4, 5, 6, 7), SourceTopology},
		{"too large", nil, InUse{}, u(0, 1), nil, 3, nil, SourceNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src := Preferred(node, tt.pods, tt.inUse, tt.available, tt.mustInclude, tt.size)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) || src != tt.wantSrc {
				t.Errorf("Preferred = %v (%s), want %v (%s)", got, src, tt.want, tt.wantSrc)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name      string
		pods      []*v1.Pod
		requested []string
		want      Verdict
	}{
		{"honoured", []*v1.Pod{pod("a", v1.PodPending, "g1", "g2")}, []string{"g2", "g1"}, Honoured},
		{"mismatch", []*v1.Pod{pod("a", v1.PodPending, "g1", "g2")}, []string{"g1", "g3"}, Mismatch},
		{"other size is not compared", []*v1.Pod{pod("a", v1.PodPending, "g1", "g2")}, []string{"g3"}, Unannotated},
		{"no annotation", []*v1.Pod{pod("a", v1.PodPending)}, []string{"g3"}, Unannotated},
		{"one of two", []*v1.Pod{pod("a", v1.PodPending, "g1"), pod("b", v1.PodPending, "g2")}, []string{"g2"}, Honoured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, _ := Check(tt.pods, InUse{}, tt.requested); got != tt.want {
				t.Errorf("Check = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBestSetWithoutNode(t *testing.T) {
	got, ok := BestSet(nil, []string{"a", "b", "c"}, []string{"c"}, 2)
	if !ok || !slices.Equal(got, []string{"c", "a"}) {
		t.Errorf("BestSet(nil) = %v, %v", got, ok)
	}
	if _, ok := BestSet(gpunode.MustShape("pcie-4xl4"), []string{"x"}, []string{"x"}, 1); ok {
		t.Error("BestSet accepted a mustInclude ID unknown to the node")
	}
}
