package inventory

import (
	"context"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kubegpu/kubegpu/pkg/nvml"
)

func healthy(inv *Inventory) []bool {
	n, _ := inv.Snapshot()
	out := make([]bool, len(n.GPUs))
	for i, g := range n.GPUs {
		out[i] = g.Healthy
	}
	return out
}

func countHealthy(inv *Inventory) int {
	c := 0
	for _, h := range healthy(inv) {
		if h {
			c++
		}
	}
	return c
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 3s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name     string
		recovery bool
		run      func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		})
	}{
		{"critical Xid then recovery", true, func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		}) {
			n, changed := inv.Snapshot()
			m.SendXid(2, 79)
			select {
			case <-changed:
			case <-time.After(time.Second):
				t.Fatal("no change signalled within 1s")
			}
			if h := healthy(inv); h[2] || countHealthy(inv) != len(n.GPUs)-1 || inv.XidCount(n.GPUs[2].UUID) != 1 {
				t.Fatalf("health %v", h)
			}
			// While NVML cannot read the GPU it stays unhealthy.
			_ = m.InjectError("GetTemperature", 2, gonvml.ERROR_GPU_IS_LOST)
			time.Sleep(250 * time.Millisecond)
			if healthy(inv)[2] {
				t.Fatal("recovered a GPU NVML cannot read")
			}
			_ = m.InjectError("GetTemperature", 2, gonvml.SUCCESS)
			wait(t, "recovery", func() bool { return healthy(inv)[2] })
		}},
		{"application Xid ignored", true, func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		}) {
			m.SendXid(1, 13)
			m.SendXid(1, 43)
			time.Sleep(100 * time.Millisecond)
			if !healthy(inv)[1] {
				t.Fatal("application Xid made the GPU unhealthy")
			}
		}},
		{"no recovery when disabled", false, func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		}) {
			m.SendXid(0, 48)
			wait(t, "unhealthy", func() bool { return !healthy(inv)[0] })
			time.Sleep(300 * time.Millisecond)
			if healthy(inv)[0] {
				t.Fatal("recovered with recovery disabled")
			}
		}},
		// A failing event wait marks every GPU unhealthy, but not forever:
		// the watch is re-armed and the GPUs come back, even without
		// recovery.
		{"failed wait re-armed", false, func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		}) {
			_ = m.InjectError("Wait", -1, gonvml.ERROR_UNKNOWN)
			wait(t, "all unhealthy", func() bool { return countHealthy(inv) == 0 })
			_ = m.InjectError("Wait", -1, gonvml.SUCCESS)
			wait(t, "all healthy after re-arm", func() bool { return countHealthy(inv) == len(healthy(inv)) })
			// And the re-armed watch still reports events.
			m.SendXid(1, 79)
			wait(t, "Xid after re-arm", func() bool { return !healthy(inv)[1] })
		}},
		// Recovery does not bring GPUs back while the watch that would
		// report them failing is down: the GPUs stay unhealthy for as
		// long as the wait fails, then come back with the re-armed watch.
		{"failed wait not recovered", true, func(t *testing.T, inv *Inventory, m interface {
			SendXid(int, uint64) int
			InjectError(string, int, gonvml.Return) error
		}) {
			_ = m.InjectError("Wait", -1, gonvml.ERROR_UNKNOWN)
			wait(t, "all unhealthy", func() bool { return countHealthy(inv) == 0 })
			for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
				if n := countHealthy(inv); n != 0 {
					t.Fatalf("%d GPUs healthy while the event wait fails", n)
				}
			}
			_ = m.InjectError("Wait", -1, gonvml.SUCCESS)
			wait(t, "all healthy after re-arm", func() bool { return countHealthy(inv) == len(healthy(inv)) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, m, err := nvml.OpenFake("pcie-4xl4")
			if err != nil {
				t.Fatal(err)
			}
			defer b.Shutdown()
			ctx, cancel := context.WithCancel(context.Background())
			inv, err := New(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				inv.RunHealth(ctx, HealthOptions{Recovery: tt.recovery, RecoveryInterval: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
				close(done)
			}()
			defer func() { cancel(); <-done }()
			// Let the watch register before events are sent.
			time.Sleep(50 * time.Millisecond)
			tt.run(t, inv, m)
		})
	}
}
