package deviceplugin_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/deviceplugin"
	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/nvml"
	"github.com/kubegpu/kubegpu/pkg/nvml/fake"
)

// healthBound is how soon the kubelet's view of healthy GPUs must match
// the injected state (issue 10). A failing NVML event wait is noticed
// when the wait returns, after at most nvml.DefaultWaitTimeout (500ms),
// so those transitions are held to the same bound.
const (
	healthBound = time.Second
	waitBound   = healthBound
)

// healthy is the set of GPU IDs the kubelet's device manager counts as
// allocatable (healthy devices of our resource), sorted.
func (k *kubelet) healthy() []string {
	devs := k.mgr.GetAllocatableDevices(klog.Background())[contract.ResourceGPU]
	return slices.Sorted(maps.Keys(devs))
}

// faultPlugin is a device plugin on a fake machine whose Run must not
// return before the test stops it.
type faultPlugin struct {
	*deviceplugin.Plugin
	machine  *fake.Machine
	backend  nvml.Backend
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// stop checks that Run is still running, cancels it, checks that it
// returns nil, and shuts the backend down, returning Shutdown's error.
// Safe to call more than once.
func (p *faultPlugin) stop(t *testing.T) error {
	t.Helper()
	p.stopOnce.Do(func() {
		select {
		case err := <-p.done:
			t.Errorf("device plugin Run returned before it was stopped: %v", err)
		default:
			p.cancel()
			if err := <-p.done; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		}
		p.stopErr = p.backend.Shutdown()
	})
	return p.stopErr
}

// openFaulty builds a fake machine with faults already injected, as a
// node whose NVML misbehaves from boot.
func openFaulty(t *testing.T, name string, inject func(*fake.Machine)) (*fake.Machine, nvml.Backend, error) {
	t.Helper()
	m, err := fake.New(name)
	if err != nil {
		t.Fatal(err)
	}
	if inject != nil {
		inject(m)
	}
	b, err := nvml.NewWithLibrary(m.Interface())
	return m, b, err
}

// runFaultPlugin runs the plugin on backend against k. It returns Run's
// error when Run ends before it is ready (a startup failure). A Run that
// returns later, before the test stops it, fails the test: the plugin
// must keep serving through every runtime fault.
func runFaultPlugin(t *testing.T, k *kubelet, m *fake.Machine, backend nvml.Backend, health inventory.HealthOptions) (*faultPlugin, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *deviceplugin.Plugin, 1)
	done := make(chan error, 1)
	go func() {
		done <- deviceplugin.Run(ctx, deviceplugin.Config{
			Backend: backend, ResourceName: contract.ResourceGPU, PluginDir: k.dir,
			PodResourcesSocket: filepath.Join(k.dir, "no-podresources.sock"),
			MetricsAddr:        "127.0.0.1:0", Health: health,
			Ready: func(p *deviceplugin.Plugin) { ready <- p },
		})
	}()
	select {
	case p := <-ready:
		fp := &faultPlugin{Plugin: p, machine: m, backend: backend, cancel: cancel, done: done}
		t.Cleanup(func() { _ = fp.stop(t) })
		return fp, nil
	case err := <-done:
		cancel()
		_ = backend.Shutdown()
		return nil, err
	}
}

// uuids are the machine's GPU IDs except those in skip.
func uuids(m *fake.Machine, skip ...int) []string {
	var out []string
	for i := range m.GPUCount() {
		if !slices.Contains(skip, i) {
			out = append(out, m.UUID(i))
		}
	}
	slices.Sort(out)
	return out
}

// waitHealthy waits until the kubelet's healthy set is want and returns
// how long that took from since; it fails the test past bound.
func waitHealthy(t *testing.T, k *kubelet, want []string, since time.Time, bound time.Duration, what string) time.Duration {
	t.Helper()
	for {
		got := k.healthy()
		if slices.Equal(got, want) {
			return time.Since(since)
		}
		if time.Since(since) > bound {
			t.Fatalf("%s: kubelet has %d healthy GPUs %v after %v, want %d %v", what, len(got), got, bound, len(want), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// holdHealthy checks that the kubelet's healthy set stays want for d:
// no GPU flaps back while a fault persists.
func holdHealthy(t *testing.T, k *kubelet, want []string, d time.Duration, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if got := k.healthy(); !slices.Equal(got, want) {
			t.Fatalf("%s: kubelet's healthy GPUs changed to %v, want %v to hold", what, got, want)
		}
	}
}

// scrape reads /metrics, which calls the backend's Telemetry.
func scrape(t *testing.T, p *faultPlugin) string {
	t.Helper()
	resp, err := http.Get("http://" + p.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return string(body)
}

// nvmlRole is what the plugin does with one NVML call, which decides
// what a failing call must do to the kubelet's view.
type nvmlRole struct {
	// discover: the call is part of discovery; failing at boot, Run
	// returns an error naming it. (Init fails before Run, in
	// nvml.NewWithLibrary.)
	discover bool
	// watch: the call arms the health watch; failing, the watch cannot
	// be armed, and GPUs marked unhealthy by a failed event wait stay so.
	watch bool
	// perGPU: failing for one GPU while arming the watch marks that GPU
	// unhealthy (NVIDIA's device plugin does the same).
	perGPU bool
	// unused calls are not made by the plugin; failing them changes
	// nothing.
	unused bool
}

// nvmlRoles lists every call the fake can fail. A call the fake adds
// without a row here fails TestNVMLFaults, so that no call goes untested.
var nvmlRoles = map[string]nvmlRole{
	"Init":                      {discover: true},
	"Shutdown":                  {},
	"DeviceGetCount":            {discover: true, watch: true},
	"DeviceGetHandleByIndex":    {discover: true, watch: true},
	"GetUUID":                   {discover: true, watch: true},
	"GetName":                   {discover: true},
	"GetMemoryInfo":             {discover: true},
	"GetMigMode":                {discover: true},
	"GetPciInfo":                {discover: true},
	"GetNumaNodeId":             {discover: true},
	"GetTopologyCommonAncestor": {discover: true},
	"GetNvLinkState":            {discover: true},
	"GetNvLinkRemotePciInfo":    {discover: true},
	"GetNvLinkRemoteDeviceType": {discover: true},
	"GetP2PStatus":              {unused: true},
	"GetUtilizationRates":       {},
	"GetTemperature":            {},
	"GetPowerUsage":             {},
	"EventSetCreate":            {watch: true},
	"GetSupportedEventTypes":    {watch: true, perGPU: true},
	"RegisterEvents":            {watch: true, perGPU: true},
	"Wait":                      {watch: true},
}

// TestNVMLFaults fails every NVML call the fake can fail, one at a time,
// on GPU 2 (system calls have no GPU), with ERROR_UNKNOWN:
//   - from boot: a discovery call makes Run return an error that names
//     it; any other leaves the plugin serving the GPUs it could vouch for;
//   - while running, together with a failing event wait so that the
//     health watch must be re-armed under the fault: every GPU turns
//     unhealthy and stays so (no flapping) while the wait fails; once the
//     wait works, the watch re-arms and the GPUs come back, except where
//     the faulty call keeps the watch from arming (all stay down) or
//     fails for GPU 2 alone (GPU 2 stays down); /metrics keeps answering
//     throughout; clearing the fault brings every GPU back.
//
// The plugin's Run never returns before the test stops it. It logs the
// slowest propagation to the kubelet per transition.
func TestNVMLFaults(t *testing.T) {
	// Recovery on, as shipped, with a short interval; a short re-arm
	// backoff (shipped: up to 30s) so that the test runs in seconds.
	health := inventory.HealthOptions{Recovery: true, RecoveryInterval: 300 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	const gpu = 2
	for _, call := range fake.Calls() {
		role, ok := nvmlRoles[call]
		if !ok {
			t.Fatalf("fake NVML call %s has no row in nvmlRoles: say what the plugin does when it fails", call)
		}
		t.Run(call, func(t *testing.T) {
			// Each call on its own machine and kubelet folder; most of
			// the time is spent waiting out NVML's event wait.
			t.Parallel()
			k := newKubelet(t)
			// From boot.
			m, backend, err := openFaulty(t, "dgx-h100", func(m *fake.Machine) {
				if err := m.InjectError(call, gpu, gonvml.ERROR_UNKNOWN); err != nil {
					t.Fatal(err)
				}
			})
			switch {
			case call == "Init":
				if err == nil || !strings.Contains(err.Error(), "NVML Init") {
					t.Fatalf("backend with failing Init: %v, want an error naming Init", err)
				}
			case err != nil:
				t.Fatalf("backend: %v", err)
			default:
				p, err := runFaultPlugin(t, k, m, backend, health)
				if role.discover {
					if err == nil || !strings.Contains(err.Error(), call) {
						t.Fatalf("Run with failing %s at boot: %v, want an error naming the call", call, err)
					}
					break
				}
				if err != nil {
					t.Fatalf("Run with failing %s at boot: %v", call, err)
				}
				want := uuids(m)
				switch {
				case call == "Wait":
					want = nil // a failing wait marks every GPU
				case role.perGPU:
					want = uuids(m, gpu)
				}
				took := waitHealthy(t, k, want, time.Now(), 5*time.Second, "boot")
				scrape(t, p)
				t.Logf("boot with failing %s: kubelet sees %d healthy GPUs after %v", call, len(want), took.Round(time.Millisecond))
				err = p.stop(t)
				if call == "Shutdown" && (err == nil || !strings.Contains(err.Error(), "Shutdown")) {
					t.Errorf("Shutdown failing: %v, want an error naming it", err)
				}
			}
			if call == "Init" || call == "Shutdown" {
				return
			}

			// While running.
			k.stop()
			k.start()
			m, backend, err = openFaulty(t, "dgx-h100", nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := runFaultPlugin(t, k, m, backend, health)
			if err != nil {
				t.Fatal(err)
			}
			all := uuids(m)
			waitHealthy(t, k, all, time.Now(), 5*time.Second, "clean start")
			if err := m.InjectError(call, gpu, gonvml.ERROR_UNKNOWN); err != nil {
				t.Fatal(err)
			}
			scrape(t, p)
			if call != "Wait" {
				if !role.watch {
					// The health watch runs and does not call it: nothing
					// changes.
					holdHealthy(t, k, all, 200*time.Millisecond, "fault outside the watch")
				}
				if err := m.InjectError("Wait", -1, gonvml.ERROR_UNKNOWN); err != nil {
					t.Fatal(err)
				}
			}
			injected := time.Now()
			down := waitHealthy(t, k, nil, injected, waitBound, "event wait failing")
			holdHealthy(t, k, nil, 500*time.Millisecond, "event wait still failing")
			scrape(t, p)

			want := all
			switch {
			case call == "Wait":
			case role.perGPU:
				want = uuids(m, gpu)
			case role.watch:
				want = nil
			}
			if err := m.InjectError("Wait", -1, gonvml.SUCCESS); err != nil {
				t.Fatal(err)
			}
			cleared := time.Now()
			rearmed := waitHealthy(t, k, want, cleared, waitBound, "wait works again")
			if !role.perGPU {
				// (A GPU whose events could not be registered comes
				// back through recovery once NVML reads it.)
				holdHealthy(t, k, want, 300*time.Millisecond, "wait works again")
			}
			m.ClearErrors()
			fixed := time.Now()
			up := waitHealthy(t, k, all, fixed, waitBound, "fault cleared")
			scrape(t, p)
			t.Logf("%s failing at runtime: all GPUs down %v after the wait failed; %d healthy %v after it worked again; all back %v after the fault cleared",
				call, down.Round(time.Millisecond), len(want), rearmed.Round(time.Millisecond), up.Round(time.Millisecond))
		})
	}
}

// xidPolicy is the plugin's default Xid policy, split for the storm.
var (
	benignXids   = nvml.DefaultIgnoredXids()
	criticalXids = []uint64{48, 63, 64, 74, 79, 92, 94, 95, 119}
)

// startHealthyDGX runs the plugin on a fault-injectable DGX H100 against
// the kubelet's device manager and waits until the kubelet sees all GPUs
// healthy.
func startHealthyDGX(t *testing.T) (*kubelet, *fake.Machine, *faultPlugin) {
	t.Helper()
	k := newKubelet(t)
	m, backend, err := openFaulty(t, "dgx-h100", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := runFaultPlugin(t, k, m, backend, inventory.HealthOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, k, uuids(m), time.Now(), 5*time.Second, "start")
	return k, m, p
}

// TestXidStorm sends bursts of NVML events to a running plugin: each
// burst of 120 is mostly application Xids (which the plugin ignores) and
// single-bit ECC events (not health events) on every GPU, with critical
// Xids and a double-bit ECC error on one or two healthy GPUs. After each
// burst the kubelet's healthy set must be the GPUs that received no
// critical event (as delivered: a full NVML event queue drops events)
// within 1s, and hold. The plugin keeps running; the slowest burst is
// logged.
func TestXidStorm(t *testing.T) {
	k, m, p := startHealthyDGX(t)
	r := rand.New(rand.NewPCG(3, 14))
	sick := map[int]bool{}
	const bursts, perBurst = 4, 120
	var slowest time.Duration
	sent, dropped := 0, 0
	for b := range bursts {
		// One or two healthy GPUs get critical events in this burst.
		var targets []int
		for _, i := range r.Perm(m.GPUCount()) {
			if !sick[i] && len(targets) < 1+b%2 {
				targets = append(targets, i)
			}
		}
		type event struct {
			gpu  int
			typ  uint64
			data uint64
		}
		var evs []event
		for range perBurst {
			g := r.IntN(m.GPUCount())
			if r.IntN(4) == 0 {
				evs = append(evs, event{g, gonvml.EventTypeSingleBitEccError, 0})
			} else {
				evs = append(evs, event{g, gonvml.EventTypeXidCriticalError, benignXids[r.IntN(len(benignXids))]})
			}
		}
		for _, g := range targets {
			for range 3 {
				evs = append(evs, event{g, gonvml.EventTypeXidCriticalError, criticalXids[r.IntN(len(criticalXids))]})
			}
			evs = append(evs, event{g, gonvml.EventTypeDoubleBitEccError, 0})
		}
		r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		for _, e := range evs {
			n := m.SendEvent(e.gpu, e.typ, e.data)
			sent++
			if n == 0 {
				dropped++
			}
			critical := e.typ == gonvml.EventTypeDoubleBitEccError ||
				e.typ == gonvml.EventTypeXidCriticalError && !slices.Contains(benignXids, e.data)
			if critical && n > 0 {
				sick[e.gpu] = true
			}
		}
		end := time.Now()
		var down []int
		for i := range sick {
			down = append(down, i)
		}
		want := uuids(m, down...)
		took := waitHealthy(t, k, want, end, healthBound, fmt.Sprintf("burst %d", b+1))
		holdHealthy(t, k, want, 200*time.Millisecond, fmt.Sprintf("after burst %d", b+1))
		slowest = max(slowest, took)
		t.Logf("burst %d: %d events, critical on GPUs %v; kubelet shows %d healthy after %v", b+1, len(evs), targets, len(want), took.Round(100*time.Microsecond))
	}
	body := scrape(t, p)
	if !strings.Contains(body, "kubegpu_gpu_xid_errors_total") {
		t.Error("/metrics lacks kubegpu_gpu_xid_errors_total")
	}
	t.Logf("Xid storm: %d events in %d bursts (%d dropped by the full NVML event queue); slowest kubelet update %v after a burst", sent, bursts, dropped, slowest.Round(100*time.Microsecond))
}

// TestKubeletRestartsUnderFaults restarts the kubelet's device manager
// ten times while GPU health changes: before each restart a critical Xid
// lands on one more GPU, half of the time while the kubelet is down.
// After every restart the plugin re-registers and the kubelet's healthy
// set matches the plugin's within 1s of the manager starting.
func TestKubeletRestartsUnderFaults(t *testing.T) {
	k, m, p := startHealthyDGX(t)
	var down []int
	var slowest time.Duration
	for i := range 10 {
		// At most 7 of 8 down, so that the kubelet's view is never
		// trivially right (an unregistered plugin shows no GPUs).
		g := i % (m.GPUCount() - 1)
		if g == 0 && i > 0 {
			// Every GPU is down: bring them back through the inventory,
			// as recovery would, and go round again.
			for _, id := range uuids(m) {
				p.Inventory.SetHealth(id, true, "")
			}
			down = nil
		}
		whileDown := i%2 == 1
		if !whileDown {
			m.SendXid(g, 79)
		}
		k.stop()
		if whileDown {
			m.SendXid(g, 79)
		}
		down = append(down, g)
		waitFor(t, time.Second, "plugin sees the Xid", func() bool { return p.Inventory.Reason(m.UUID(g)) != "" })
		before := p.Server.Registrations()
		started := time.Now()
		k.start()
		took := waitHealthy(t, k, uuids(m, down...), started, healthBound, fmt.Sprintf("restart %d", i+1))
		slowest = max(slowest, took)
		// The device manager shows the devices while our Register call
		// is still returning, so the count can trail by a moment.
		waitFor(t, time.Second, fmt.Sprintf("registration %d counted", i+2), func() bool { return p.Server.Registrations() > before })
	}
	if n := p.Server.Registrations(); n != 11 {
		t.Errorf("%d registrations, want 11", n)
	}
	t.Logf("10 kubelet restarts with GPUs turning unhealthy around them: kubelet's healthy set right at most %v after the manager started", slowest.Round(100*time.Microsecond))
}
