package metrics

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/deviceplugin/kubelet"
	"github.com/kubegpu/kubegpu/pkg/nvml"
)

func TestGPUCollector(t *testing.T) {
	b, m, err := nvml.OpenFake("pcie-4xl4")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	inv, err := inventory.New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	inv.SetHealth(m.UUID(2), false, "test")
	tests := []struct {
		name        string
		assignments Assignments
		inject      bool
		want        []string
	}{
		{
			name: "pod labels from podresources",
			assignments: func(context.Context) (map[string]kubelet.Owner, error) {
				return map[string]kubelet.Owner{m.UUID(1): {Namespace: "ml", Pod: "train-0", Container: "main"}}, nil
			},
			want: []string{
				`kubegpu_gpu_temperature_celsius{container="main",gpu="1",model="NVIDIA L4",namespace="ml",pod="train-0",uuid="` + m.UUID(1) + `"} 35`,
				`kubegpu_gpu_power_watts{container="",gpu="0",model="NVIDIA L4",namespace="",pod="",uuid="` + m.UUID(0) + `"} 16`,
				`kubegpu_gpu_memory_total_bytes{container="",gpu="3",model="NVIDIA L4",namespace="",pod="",uuid="` + m.UUID(3) + `"} 2.4152899584e+10`,
				`kubegpu_gpu_healthy{container="",gpu="2",model="NVIDIA L4",namespace="",pod="",uuid="` + m.UUID(2) + `"} 0`,
				`kubegpu_gpu_telemetry_errors 0`,
			},
		},
		{
			name:        "podresources unreachable, NVML read failing",
			assignments: func(context.Context) (map[string]kubelet.Owner, error) { return nil, errors.New("no kubelet") },
			inject:      true,
			want: []string{
				`kubegpu_gpu_temperature_celsius{container="",gpu="1",model="NVIDIA L4",namespace="",pod="",uuid="` + m.UUID(1) + `"} 35`,
				`kubegpu_gpu_telemetry_errors 1`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.inject {
				_ = m.InjectError("GetPowerUsage", 0, gonvml.ERROR_UNKNOWN)
				defer m.ClearErrors()
			}
			r := Registry(&GPUCollector{Inventory: inv, Assignments: tt.assignments}, NewCounters())
			if n, err := testutil.GatherAndCount(r, "kubegpu_gpu_xid_errors_total"); err != nil || n != 4 {
				t.Errorf("xid series: %d, %v", n, err)
			}
			mfs, err := r.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			for _, mf := range mfs {
				if !strings.HasPrefix(mf.GetName(), "kubegpu_gpu") {
					continue
				}
				for _, mt := range mf.GetMetric() {
					var labels []string
					for _, l := range mt.GetLabel() {
						labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
					}
					v := mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
					name := mf.GetName()
					if len(labels) > 0 {
						name += "{" + strings.Join(labels, ",") + "}"
					}
					sb.WriteString(name + " " + strings.TrimSpace(formatFloat(v)) + "\n")
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(sb.String(), w+"\n") {
					t.Errorf("missing %s in\n%s", w, sb.String())
				}
			}
		})
	}
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
