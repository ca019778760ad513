// Package inventory is what GPUs this node has and which of them are
// healthy: discovery through an nvml.Backend, health from NVML events, and
// recovery when NVML reports a GPU well again. It knows nothing about the
// kubelet or the API server; they subscribe to its changes.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/nvml"
)

// Inventory is the node's GPUs with their current health. Safe for
// concurrent use.
type Inventory struct {
	backend nvml.Backend

	mu      sync.Mutex
	node    *gpunode.Node     // Healthy fields are current
	reasons map[string]string // why an unhealthy GPU is unhealthy, by UUID
	since   map[string]time.Time
	xids    map[string]uint64 // critical Xid events seen, by UUID
	changed chan struct{}     // closed and replaced on every health change
	// watchDown is set while the NVML event watch is not armed (it
	// failed and re-arming fails): no event could show that a GPU is
	// still failing, so recovery waits for the watch.
	watchDown bool
}

// New discovers the node's GPUs through backend; all start healthy.
func New(ctx context.Context, backend nvml.Backend) (*Inventory, error) {
	node, err := backend.Discover(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if err := node.Prepare(); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	return &Inventory{
		backend: backend,
		node:    node,
		reasons: map[string]string{},
		since:   map[string]time.Time{},
		xids:    map[string]uint64{},
		changed: make(chan struct{}),
	}, nil
}

// Backend is the NVML backend the inventory reads.
func (inv *Inventory) Backend() nvml.Backend { return inv.backend }

// Snapshot returns a copy of the node with current health, and a channel
// that is closed at the next health change.
func (inv *Inventory) Snapshot() (*gpunode.Node, <-chan struct{}) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.node.Clone(), inv.changed
}

// Reason says why GPU uuid is unhealthy ("" when healthy).
func (inv *Inventory) Reason(uuid string) string {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.reasons[uuid]
}

// XidCount is the number of critical Xid events seen on GPU uuid.
func (inv *Inventory) XidCount(uuid string) uint64 {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.xids[uuid]
}

// SetHealth marks GPU uuid healthy or not and wakes subscribers when that
// changes its state. It reports whether anything changed.
func (inv *Inventory) SetHealth(uuid string, healthy bool, reason string) bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for i := range inv.node.GPUs {
		g := &inv.node.GPUs[i]
		if g.UUID != uuid {
			continue
		}
		if !healthy {
			// A fresh event restarts the recovery clock even when the
			// GPU is unhealthy already.
			inv.since[uuid] = time.Now()
			inv.reasons[uuid] = reason
		}
		if g.Healthy == healthy {
			return false
		}
		g.Healthy = healthy
		if healthy {
			delete(inv.reasons, uuid)
			delete(inv.since, uuid)
		}
		close(inv.changed)
		inv.changed = make(chan struct{})
		return true
	}
	return false
}

// HealthOptions tunes RunHealth.
type HealthOptions struct {
	// IgnoredXids as in nvml.HealthConfig (nil: NVIDIA's defaults).
	IgnoredXids []uint64
	// Recovery re-checks unhealthy GPUs every RecoveryInterval and marks
	// healthy again those NVML answers for without error and that had no
	// new event for a whole interval.
	Recovery         bool
	RecoveryInterval time.Duration // default 30s
	// MaxBackoff caps the wait before re-arming a failed event watch
	// (default 30s; the first retry waits 100ms).
	MaxBackoff time.Duration
}

// RunHealth watches NVML health events and, if enabled, recovers GPUs,
// until ctx ends. A failed watch (NVML marks every GPU unhealthy then) is
// re-armed with exponential backoff; once re-arming succeeds, the GPUs that
// were marked for the failure alone are healthy again, with or without
// recovery.
func (inv *Inventory) RunHealth(ctx context.Context, opts HealthOptions) {
	logger := klog.FromContext(ctx).WithName("health")
	if opts.RecoveryInterval <= 0 {
		opts.RecoveryInterval = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	var wg sync.WaitGroup
	if opts.Recovery {
		wg.Go(func() { inv.recoverLoop(ctx, logger, opts.RecoveryInterval) })
	}
	defer wg.Wait()

	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	// failed holds the GPUs the last failed watch marked unhealthy for
	// the failure alone (no Xid or ECC event of their own).
	var failed map[string]bool
	for ctx.Err() == nil {
		events, err := inv.backend.WatchHealth(ctx, nvml.HealthConfig{IgnoredXids: opts.IgnoredXids})
		if errors.Is(err, nvml.ErrShutdown) {
			return
		}
		inv.setWatchDown(err != nil)
		if err != nil {
			logger.Error(err, "Cannot watch GPU health; retrying", "backoff", backoff)
		} else {
			// NVML answers again: the GPUs marked only because the
			// previous wait failed are healthy as far as we know.
			for uuid := range failed {
				if inv.SetHealth(uuid, true, "") {
					logger.Info("GPU healthy again after the NVML event watch was re-armed", "uuid", uuid)
				}
			}
			started := time.Now()
			generic := map[string]bool{}
			for ev := range events {
				inv.apply(logger, ev)
				if ev.EventType == 0 {
					generic[ev.UUID] = true
				} else {
					delete(generic, ev.UUID)
				}
			}
			if ctx.Err() != nil {
				return
			}
			inv.setWatchDown(true)
			failed = generic
			if time.Since(started) > opts.MaxBackoff {
				backoff = minBackoff // it ran well for a while: retry fast
			}
			logger.Info("NVML health watch ended; re-arming", "backoff", backoff, "markedUnhealthy", len(failed))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, opts.MaxBackoff)
	}
}

func (inv *Inventory) setWatchDown(down bool) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.watchDown = down
}

func (inv *Inventory) apply(logger klog.Logger, ev nvml.HealthEvent) {
	if ev.Xid != 0 {
		inv.mu.Lock()
		inv.xids[ev.UUID]++
		inv.mu.Unlock()
	}
	if inv.SetHealth(ev.UUID, false, ev.Reason) {
		logger.Info("GPU unhealthy", "gpu", ev.Index, "uuid", ev.UUID, "reason", ev.Reason)
	}
}

func (inv *Inventory) recoverLoop(ctx context.Context, logger klog.Logger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		inv.recoverOnce(ctx, logger, interval)
	}
}

// recoverOnce marks healthy the unhealthy GPUs that stayed quiet for
// interval and that NVML reads without error now, while the event watch
// is armed.
func (inv *Inventory) recoverOnce(ctx context.Context, logger klog.Logger, interval time.Duration) {
	inv.mu.Lock()
	if inv.watchDown {
		// Quiet means nothing while no event can arrive: the GPUs the
		// failed watch marked come back when it is re-armed.
		inv.mu.Unlock()
		return
	}
	var quiet []string
	for uuid, t := range inv.since {
		if time.Since(t) >= interval {
			quiet = append(quiet, uuid)
		}
	}
	inv.mu.Unlock()
	if len(quiet) == 0 {
		return
	}
	// Telemetry touches every GPU with cheap calls; a GPU that fell off
	// the bus or is lost fails them.
	tel, err := inv.backend.Telemetry(ctx)
	failing := failingGPUs(err)
	if err != nil && len(failing) == 0 {
		logger.V(2).Info("NVML not answering; GPUs stay unhealthy", "err", err)
		return
	}
	seen := map[string]int{}
	for _, t := range tel {
		seen[t.UUID] = t.Index
	}
	for _, uuid := range quiet {
		idx, ok := seen[uuid]
		if !ok || failing[idx] {
			continue
		}
		if inv.SetHealth(uuid, true, "") {
			logger.Info("GPU healthy again", "gpu", idx, "uuid", uuid)
		}
	}
}

// failingGPUs returns the GPU indices named in err's NVML errors; a
// non-GPU error (index -1) marks none.
func failingGPUs(err error) map[int]bool {
	out := map[int]bool{}
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		var ne *nvml.Error
		if x, ok := e.(*nvml.Error); ok {
			ne = x
		}
		if ne != nil && ne.Device >= 0 {
			out[ne.Device] = true
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
