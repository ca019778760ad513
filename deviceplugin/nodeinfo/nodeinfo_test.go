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
	for _, sharing := range []bool{false, true} {
		n := gpunode.MustShape("pcie-4xl4")
		raw, err := Patch(n, sharing)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Metadata struct {
				Labels      map[string]*string
				Annotations map[string]string
			}
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		str := func(s string) *string { return &s }
		want := map[string]*string{
			contract.LabelGPUProduct: str("NVIDIA-L4"), contract.LabelGPUMemory: str("23034"), contract.LabelGPUCount: str("4"),
			contract.LabelGPUSharing: nil, // removed
		}
		if sharing {
			want[contract.LabelGPUSharing] = str("true")
		}
		if len(p.Metadata.Labels) != len(want) || len(p.Metadata.Annotations) != 1 {
			t.Fatalf("sharing %v: patch touches %v / %v", sharing, p.Metadata.Labels, p.Metadata.Annotations)
		}
		for k, v := range want {
			got, ok := p.Metadata.Labels[k]
			if !ok || (v == nil) != (got == nil) || (v != nil && *got != *v) {
				t.Errorf("sharing %v: label %s = %v, want %v", sharing, k, got, v)
			}
		}
		back, err := gpunode.Decode(p.Metadata.Annotations[contract.AnnotationTopology])
		if err != nil || !back.Equal(n) {
			t.Errorf("annotation does not decode to the node: %v", err)
		}
	}
}
