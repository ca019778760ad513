package nodeinfo

import (
	"encoding/json"
	"testing"

	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

func TestLabelValue(t *testing.T) {
	tests := map[string]string{
		"NVIDIA H100 80GB HBM3": "NVIDIA-H100-80GB-HBM3",
		"Tesla V100-SXM2-32GB":  "Tesla-V100-SXM2-32GB",
		" weird (name) ":        "weird--name",
		"":                      "",
	}
	for in, want := range tests {
		if got := LabelValue(in); got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", in, got, want)
		}
	}
	long := LabelValue(string(make([]byte, 100)) + "x")
	if len(long) > 63 {
		t.Errorf("label value of %d chars", len(long))
	}
}

// TestPatch: the patch names only our keys, so a merge patch leaves every
// other label and annotation alone.
func TestPatch(t *testing.T) {
	n := gpunode.MustShape("pcie-4xl4")
	raw, err := Patch(n)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Metadata struct {
			Labels      map[string]string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{contract.LabelGPUProduct: "NVIDIA-L4", contract.LabelGPUMemory: "23034", contract.LabelGPUCount: "4"}
	if len(p.Metadata.Labels) != len(want) || len(p.Metadata.Annotations) != 1 {
		t.Fatalf("patch touches %v / %v", p.Metadata.Labels, p.Metadata.Annotations)
	}
	for k, v := range want {
		if p.Metadata.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, p.Metadata.Labels[k], v)
		}
	}
	back, err := gpunode.Decode(p.Metadata.Annotations[contract.AnnotationTopology])
	if err != nil || !back.Equal(n) {
		t.Errorf("annotation does not decode to the node: %v", err)
	}
}
