package gpupack

import (
	"math/big"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// FuzzParseRequest builds pods from arbitrary resource quantities (in a
// container and an init container) and kubegpu.io/gpu-memory-min values.
// parseRequest must not panic; what it accepts must be in range (0-64
// whole GPUs, a share of 1-999, never both, a positive memory floor that
// is the annotation rounded up to MiB); an error must name what to fix.
func FuzzParseRequest(f *testing.F) {
	f.Add("2", "", "", "500m", "40Gi", true)
	f.Add("", "250", "", "1", "", false)
	f.Add("1", "", "4", "", "1", true)
	f.Add("", "0.5", "", "", "", false)
	f.Add("1", "100", "", "", "", false)
	f.Add("65", "", "", "", "", false)
	f.Add("1", "", "", "", "8Ei", true)
	f.Add("1", "", "", "", "9223372036854775807", true)
	f.Add("1", "", "", "", "1m", true)
	f.Add("", "", "", "", "-1Gi", true)
	args := DefaultArgs()
	f.Fuzz(func(t *testing.T, gpu, milli, initGPU, cpu, memMin string, hasMem bool) {
		// The API server only stores quantities that parse, so skip the
		// rest: they cannot reach the plugin.
		list := func(kv ...string) v1.ResourceList {
			l := v1.ResourceList{}
			for i := 0; i < len(kv); i += 2 {
				if kv[i+1] == "" {
					continue
				}
				q, err := resource.ParseQuantity(kv[i+1])
				if err != nil {
					continue
				}
				l[v1.ResourceName(kv[i])] = q
			}
			return l
		}
		main := list(args.ResourceName, gpu, args.SharedResourceName, milli, string(v1.ResourceCPU), cpu)
		init := list(args.ResourceName, initGPU)
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
			Spec: v1.PodSpec{
				InitContainers: []v1.Container{{Name: "i", Resources: v1.ResourceRequirements{Requests: init, Limits: init}}},
				Containers:     []v1.Container{{Name: "c", Resources: v1.ResourceRequirements{Requests: main, Limits: main}}},
			},
		}
		if hasMem {
			pod.Annotations = map[string]string{contract.AnnotationGPUMemoryMin: memMin}
		}
		r, err := parseRequest(pod, &args)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, args.ResourceName) && !strings.Contains(msg, args.SharedResourceName) &&
				!strings.Contains(msg, contract.AnnotationGPUMemoryMin) {
				t.Fatalf("error %q names neither resource nor annotation", msg)
			}
			return
		}
		if r.whole < 0 || r.whole > 64 {
			t.Fatalf("accepted %d whole GPUs", r.whole)
		}
		if r.milli != 0 && (r.milli < 1 || r.milli > 999) {
			t.Fatalf("accepted share %d", r.milli)
		}
		if r.whole > 0 && r.milli > 0 {
			t.Fatalf("accepted both whole %d and share %d", r.whole, r.milli)
		}
		if r.cpuMilli < 0 {
			t.Fatalf("accepted CPU %dm", r.cpuMilli)
		}
		// The effective whole-GPU request is the larger of the init
		// container's and the app container's.
		want := int64(0)
		for _, l := range []v1.ResourceList{main, init} {
			if q, ok := l[v1.ResourceName(args.ResourceName)]; ok {
				want = max(want, q.Value())
			}
		}
		if int64(r.whole) != want {
			t.Fatalf("whole = %d, want %d", r.whole, want)
		}
		if !hasMem {
			if r.memoryMiB != 0 {
				t.Fatalf("memory floor %d MiB without the annotation", r.memoryMiB)
			}
			return
		}
		if r.memoryStr != memMin {
			t.Fatalf("memoryStr = %q, want %q", r.memoryStr, memMin)
		}
		// memoryMiB must be the annotation in bytes, rounded up to MiB:
		// (memoryMiB-1) MiB < bytes <= memoryMiB MiB. Exact arithmetic, so
		// an overflow cannot hide.
		q := resource.MustParse(memMin)
		hi := resource.MustParse(new(big.Int).Lsh(big.NewInt(r.memoryMiB), 20).String())
		lo := resource.MustParse(new(big.Int).Lsh(big.NewInt(r.memoryMiB-1), 20).String())
		if r.memoryMiB < 1 || q.Cmp(hi) > 0 || q.Cmp(lo) <= 0 {
			t.Fatalf("annotation %q gave %d MiB", memMin, r.memoryMiB)
		}
	})
}
