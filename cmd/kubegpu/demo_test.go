package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDemo runs the whole demo in-process with the short load: every step
// it checks must hold, the summary must name every example and the
// report must hold the GPU map of every node.
func TestDemo(t *testing.T) {
	report := filepath.Join(t.TempDir(), "report.html")
	var out bytes.Buffer
	start := time.Now()
	err := runDemo(context.Background(), &out, demoOptions{Examples: "../../examples", Report: report, Short: true, Timeout: 150 * time.Second})
	t.Logf("demo output (%s):\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"all 8 steps passed",
		"default/whole-gpus", "default/gpu-memory", "default/gpu-model", "default/gpu-share",
		"gang job/ddp: 4 members", "ml/llama-",
		"-> scale to", // the HPA rule changed the replica count
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"All steps passed", "<svg", "At the peak of the burst", "At the end", "250/1000"} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, n := range demoCluster {
		if !bytes.Contains(html, []byte(">"+n.name+"<")) {
			t.Errorf("report's GPU map lacks node %s", n.name)
		}
	}
}

func TestDemoBadExamples(t *testing.T) {
	err := runDemo(context.Background(), &bytes.Buffer{}, demoOptions{Examples: t.TempDir(), Timeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "--examples") {
		t.Fatalf("err = %v, want a hint at --examples", err)
	}
	err = runDemo(context.Background(), &bytes.Buffer{}, demoOptions{Examples: "../../examples", Timeout: 0})
	if err == nil {
		t.Fatal("zero timeout accepted")
	}
}

func TestHPADesired(t *testing.T) {
	spec := &scaledObjectSpec{min: 1, max: 8, upPods: 4, downPods: 1}
	for _, c := range []struct {
		name          string
		current       int
		value, target float64
		want          int
	}{
		{name: "steady", current: 1, value: 1, target: 1, want: 1},
		{name: "within tolerance", current: 5, value: 5.4, target: 1, want: 5},
		{name: "grow limited by scale-up policy", current: 1, value: 9, target: 1, want: 5},
		{name: "grow capped at max", current: 6, value: 20, target: 1, want: 8},
		{name: "shrink one per period", current: 8, value: 1, target: 1, want: 7},
		{name: "never below min", current: 1, value: 0, target: 1, want: 1},
		{name: "average value target", current: 2, value: 12, target: 4, want: 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := spec.hpaDesired(c.current, c.value, c.target); got != c.want {
				t.Errorf("hpaDesired(%d, %g, %g) = %d, want %d", c.current, c.value, c.target, got, c.want)
			}
		})
	}
}

// TestReadScaledObject reads the example as the demo's KEDA does.
func TestReadScaledObject(t *testing.T) {
	objs, err := loadManifests("../../examples/inference-vllm/scaledobject.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := readScaledObject(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if spec.min != 1 || spec.max != 8 || spec.upPods != 4 || spec.downPods != 1 || spec.pollingInterval != 15 {
		t.Errorf("spec = %+v", spec)
	}
	if spec.metadata["preset"] != "vllm" || spec.metadata["source"] != "pods" {
		t.Errorf("trigger metadata = %v", spec.metadata)
	}
	bad := objs[0].DeepCopy()
	bad.Object["spec"].(map[string]any)["triggers"] = []any{}
	if _, err := readScaledObject(bad); err == nil {
		t.Error("ScaledObject without triggers accepted")
	}
}

// TestLoadSim checks the fake model servers' queueing: below capacity
// nothing waits, above it the queue grows by the excess.
func TestLoadSim(t *testing.T) {
	for _, c := range []struct {
		name         string
		rate         float64
		minQ, maxQ   float64
		wantSlowTTFT bool
	}{
		{name: "under capacity", rate: 4, minQ: 0, maxQ: 0},
		// 20 req/s against 8 req/s for 2 s: about 24 waiting.
		{name: "over capacity", rate: 20, minQ: 18, maxQ: 26, wantSlowTTFT: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := &loadSim{replicas: map[string]*fakeVLLM{}}
			f := newTestReplica(t)
			l.add(f)
			l.setPhase(loadPhase{Name: c.name, Rate: c.rate})
			now := time.Unix(0, 0)
			for range 40 {
				now = now.Add(loadTick)
				l.step(now, loadTick)
			}
			q, p95 := l.take()
			if q < c.minQ || q > c.maxQ {
				t.Errorf("queue %g, want %g..%g", q, c.minQ, c.maxQ)
			}
			if slow := p95 > 0.5; slow != c.wantSlowTTFT {
				t.Errorf("p95 TTFT %gs", p95)
			}
		})
	}
}

func newTestReplica(t *testing.T) *fakeVLLM {
	t.Helper()
	f, err := newFakeVLLM(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "r0"}}, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}
