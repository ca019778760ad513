package gpunode

import (
	"strings"
	"testing"
)

// TestWriteTableDGX1 checks the printed matrix row by row against the
// DGX-1 (V100) nvidia-smi topo -m output NVIDIA publishes (GPU columns).
func TestWriteTableDGX1(t *testing.T) {
	var sb strings.Builder
	if err := WriteTable(&sb, MustShape("dgx1-v100")); err != nil {
		t.Fatal(err)
	}
	published := []string{
		"GPU0 X NV1 NV1 NV2 NV2 SYS SYS SYS 0",
		"GPU1 NV1 X NV2 NV1 SYS NV2 SYS SYS 0",
		"GPU2 NV1 NV2 X NV2 SYS SYS NV1 SYS 0",
		"GPU3 NV2 NV1 NV2 X SYS SYS SYS NV1 0",
		"GPU4 NV2 SYS SYS SYS X NV1 NV1 NV2 1",
		"GPU5 SYS NV2 SYS SYS NV1 X NV2 NV1 1",
		"GPU6 SYS SYS NV1 SYS NV1 NV2 X NV2 1",
		"GPU7 SYS SYS SYS NV1 NV2 NV1 NV2 X 1",
	}
	var rows []string
	for _, line := range strings.Split(sb.String(), "\n") {
		if f := strings.Fields(line); len(f) == 10 && strings.HasPrefix(f[0], "GPU") && f[9] != "Affinity" {
			rows = append(rows, strings.Join(f, " "))
		}
	}
	if strings.Join(rows, "\n") != strings.Join(published, "\n") {
		t.Errorf("matrix:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(published, "\n"))
	}
	if !strings.Contains(sb.String(), "NVS  = Connection traversing an NVSwitch fabric") {
		t.Error("legend missing")
	}
}

func TestLinkLabel(t *testing.T) {
	tests := []struct {
		l    Link
		want string
	}{
		{Link{NVSwitch: true, PCIe: PCIeCrossCPU}, "NVS"},
		{Link{NVLinks: 2, PCIe: PCIeSingleSwitch}, "NV2"},
		{Link{PCIe: PCIeSingleSwitch}, "PIX"},
		{Link{PCIe: PCIeMultiSwitch}, "PXB"},
		{Link{PCIe: PCIeHostBridge}, "PHB"},
		{Link{PCIe: PCIeSameNUMA}, "NODE"},
		{Link{PCIe: PCIeCrossCPU}, "SYS"},
		{Link{PCIe: 7}, "?"},
	}
	for _, tt := range tests {
		if got := LinkLabel(tt.l); got != tt.want {
			t.Errorf("LinkLabel(%+v) = %q, want %q", tt.l, got, tt.want)
		}
	}
}
