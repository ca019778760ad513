package allocation

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func TestParseSlot(t *testing.T) {
	tests := []struct {
		id   string
		uuid string
		n    int
		ok   bool
	}{
		{"GPU-a::0", "GPU-a", 0, true},
		{"GPU-a::999", "GPU-a", 999, true},
		{"GPU-a::1000", "", 0, false},
		{"GPU-a::-1", "", 0, false},
		{"GPU-a::07", "", 0, false},
		{"GPU-a", "", 0, false},
		{"::3", "", 0, false},
		{"GPU-a::x", "", 0, false},
	}
	for _, tt := range tests {
		uuid, n, ok := ParseSlot(tt.id)
		if uuid != tt.uuid || n != tt.n || ok != tt.ok {
			t.Errorf("ParseSlot(%q) = %q, %d, %v; want %q, %d, %v", tt.id, uuid, n, ok, tt.uuid, tt.n, tt.ok)
		}
		if tt.ok && SlotID(uuid, n) != tt.id {
			t.Errorf("SlotID(%q, %d) = %q", uuid, n, SlotID(uuid, n))
		}
	}
}

// slots returns SlotIDs of gpu for the numbers in [from, to).
func slots(gpu string, from, to int) []string {
	var out []string
	for n := from; n < to; n++ {
		out = append(out, SlotID(gpu, n))
	}
	return out
}

func TestPreferredShare(t *testing.T) {
	node := gpunode.MustShape("pcie-4xl4")
	g := func(i int) string { return node.GPUs[i].UUID }
	var all []string
	for i := range node.GPUs {
		all = append(all, slots(g(i), 0, SlotsPerGPU)...)
	}
	// GPU 1 has 600 slots taken, GPU 2 has 100 taken.
	partly := slices.Concat(slots(g(0), 0, 1000), slots(g(1), 600, 1000), slots(g(2), 100, 1000), slots(g(3), 0, 1000))
	tests := []struct {
		name        string
		pods        []*v1.Pod
		inUse       InUse
		available   []string
		mustInclude []string
		size        int
		wantGPU     string
		wantSrc     Source
	}{
		{"annotated", []*v1.Pod{pod("a", v1.PodPending, g(2)+":250")}, InUse{}, all, nil, 250, g(2), SourceAnnotation},
		{"other size not matched", []*v1.Pod{pod("a", v1.PodPending, g(2)+":250")}, InUse{}, all, nil, 300, g(0), SourceMostFree},
		{"oldest of two", []*v1.Pod{aged(pod("a", v1.PodPending, g(1)+":250"), 5), aged(pod("b", v1.PodPending, g(3)+":250"), 2)}, InUse{}, all, nil, 250, g(3), SourceAnnotation},
		{"claimed pod skipped", []*v1.Pod{pod("a", v1.PodPending, g(1)+":250"), pod("b", v1.PodPending, g(3)+":250")}, InUse{Claimed: map[types.UID]bool{"uid-a": true}}, all, nil, 250, g(3), SourceAnnotation},
		{"holder skipped (podresources)", []*v1.Pod{pod("a", v1.PodRunning, g(1)+":250"), pod("b", v1.PodPending, g(3)+":250")}, InUse{Known: true, Holders: map[string]bool{"ns/a": true}}, all, nil, 250, g(3), SourceAnnotation},
		{"running pod done (no podresources)", []*v1.Pod{pod("a", v1.PodRunning, g(1)+":250")}, InUse{}, partly, nil, 250, g(0), SourceMostFree},
		{"annotated GPU too full", []*v1.Pod{pod("a", v1.PodPending, g(1)+":500")}, InUse{}, partly, nil, 500, g(0), SourceMostFree},
		{"most free that fits", nil, InUse{}, slices.Concat(slots(g(1), 600, 1000), slots(g(2), 100, 1000)), nil, 800, g(2), SourceMostFree},
		{"whole-taken GPU skipped", []*v1.Pod{pod("w", v1.PodRunning, g(0))}, InUse{}, slices.Concat(slots(g(0), 0, 1000), slots(g(2), 100, 1000)), nil, 100, g(2), SourceMostFree},
		{"whole in use skipped", nil, InUse{Known: true, Devices: map[string]bool{g(0): true}}, slices.Concat(slots(g(0), 0, 1000), slots(g(2), 100, 1000)), nil, 100, g(2), SourceMostFree},
		{"mustInclude pins the GPU", nil, InUse{}, all, slots(g(3), 10, 12), 5, g(3), SourceMostFree},
		{"mustInclude across GPUs", nil, InUse{}, all, []string{SlotID(g(0), 1), SlotID(g(1), 1)}, 5, "", SourceNone},
		{"no GPU fits", nil, InUse{}, slices.Concat(slots(g(1), 600, 1000), slots(g(2), 500, 1000)), nil, 600, "", SourceNone},
		{"too large", nil, InUse{}, all, nil, 1001, "", SourceNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src, gpu := PreferredShare(node, tt.pods, tt.inUse, tt.available, tt.mustInclude, tt.size)
			if gpu != tt.wantGPU || src != tt.wantSrc {
				t.Fatalf("PreferredShare = GPU %q (%s), want %q (%s)", gpu, src, tt.wantGPU, tt.wantSrc)
			}
			if gpu == "" {
				if got != nil {
					t.Errorf("slots %v without a GPU", len(got))
				}
				return
			}
			if len(got) != tt.size || len(slices.Compact(slices.Sorted(slices.Values(got)))) != tt.size {
				t.Fatalf("%d slots (distinct?), want %d", len(got), tt.size)
			}
			for _, id := range got {
				if uuid, _, ok := ParseSlot(id); !ok || uuid != gpu || !slices.Contains(tt.available, id) {
					t.Fatalf("slot %q is not an available slot of %s", id, gpu)
				}
			}
			for _, id := range tt.mustInclude {
				if !slices.Contains(got, id) {
					t.Errorf("must-include slot %s missing", id)
				}
			}
		})
	}
}

func TestCheckShareAndWhole(t *testing.T) {
	share := pod("s", v1.PodPending, "GPU-b:250")
	whole := pod("w", v1.PodPending, "GPU-a")
	pods := []*v1.Pod{share, whole}
	tests := []struct {
		name    string
		inUse   InUse
		ids     []string
		gpu     string
		verdict Verdict
		served  string
		wantErr string
	}{
		{name: "honoured", ids: slots("GPU-b", 0, 250), gpu: "GPU-b", verdict: Honoured, served: "s"},
		{name: "mismatch", ids: slots("GPU-c", 0, 250), gpu: "GPU-c", verdict: Mismatch},
		{name: "other size", ids: slots("GPU-c", 0, 100), gpu: "GPU-c", verdict: Unannotated},
		{name: "claimed", inUse: InUse{Claimed: map[types.UID]bool{"uid-s": true}}, ids: slots("GPU-b", 0, 250), gpu: "GPU-b", verdict: Unannotated},
		{name: "spans GPUs", ids: slices.Concat(slots("GPU-b", 0, 1), slots("GPU-c", 0, 1)), wantErr: "span"},
		{name: "GPU annotated whole", ids: slots("GPU-a", 0, 10), wantErr: "taken whole"},
		{name: "GPU in use whole", inUse: InUse{Known: true, Devices: map[string]bool{"GPU-d": true}}, ids: slots("GPU-d", 0, 10), wantErr: "taken whole"},
		{name: "not a slot", ids: []string{"GPU-b"}, wantErr: "not a share slot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpu, v, served, err := CheckShare(pods, tt.inUse, tt.ids)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CheckShare error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || gpu != tt.gpu || v != tt.verdict {
				t.Fatalf("CheckShare = %q, %v, %v; want %q, %v", gpu, v, err, tt.gpu, tt.verdict)
			}
			if name := ""; served != nil || tt.served != "" {
				if served != nil {
					name = served.Name
				}
				if name != tt.served {
					t.Errorf("served %q, want %q", name, tt.served)
				}
			}
		})
	}

	wholeTests := []struct {
		name    string
		pods    []*v1.Pod
		inUse   InUse
		ids     []string
		wantErr bool
	}{
		{"free GPU", pods, InUse{}, []string{"GPU-a", "GPU-c"}, false},
		{"annotated share", pods, InUse{}, []string{"GPU-b"}, true},
		{"finished share pod frees", []*v1.Pod{pod("s", v1.PodSucceeded, "GPU-b:250")}, InUse{}, []string{"GPU-b"}, false},
		{"slot in use", nil, InUse{Known: true, Slots: map[string]bool{SlotID("GPU-c", 3): true}}, []string{"GPU-c"}, true},
	}
	for _, tt := range wholeTests {
		if err := CheckWhole(tt.pods, tt.inUse, tt.ids); (err != nil) != tt.wantErr {
			t.Errorf("%s: CheckWhole = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}
