package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/component-base/configz"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
)

// SchedulerConfig is what a test chooses about its scheduler.
type SchedulerConfig struct {
	// Profiles is the YAML of the KubeSchedulerConfiguration "profiles"
	// list (without the key), indented as a top-level list. Empty means
	// one default profile named "kubegpu-scheduler".
	Profiles string
	// Registry holds the out-of-tree plugins the profiles may enable.
	Registry frameworkruntime.Registry
}

// DefaultProfiles is a single profile with the default in-tree plugins.
const DefaultProfiles = `- schedulerName: kubegpu-scheduler
`

// Scheduler is a running in-process kube-scheduler.
type Scheduler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // set before done closes
	stopped atomic.Bool
}

var schedulerSeq atomic.Int64

// StartScheduler runs a real kube-scheduler against env, built through the
// same app.Setup path as the kubegpu-scheduler binary, with leader
// election off and its secure port disabled. It stops at the end of the
// test, before the apiserver (cleanups run last-in first-out), or earlier
// through Stop, e.g. to restart it. One scheduler runs per process at a
// time: kube-scheduler keeps process-wide state (configz, metrics).
func (e *Env) StartScheduler(t testing.TB, cfg SchedulerConfig) *Scheduler {
	t.Helper()
	s, err := e.RunScheduler(cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return s
}

// RunScheduler is StartScheduler for a caller that is not a test: the
// scheduler runs until Stop, or until Env.Stop, which stops it before the
// apiserver.
func (e *Env) RunScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	profiles := cfg.Profiles
	if strings.TrimSpace(profiles) == "" {
		profiles = DefaultProfiles
	}
	config := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
clientConnection:
  kubeconfig: %q
  qps: 1000
  burst: 2000
profiles:
%s`, e.Kubeconfig, profiles)
	path := filepath.Join(e.Dir, fmt.Sprintf("scheduler-%d.yaml", schedulerSeq.Add(1)))
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("write scheduler config: %w", err)
	}

	opts := options.NewOptions()
	if err := opts.Flags.FlagSet("misc").Parse([]string{"--config=" + path}); err != nil {
		return nil, fmt.Errorf("scheduler flags: %w", err)
	}
	// No serving endpoint: callers talk to the API, and a fixed port would
	// collide between parallel test packages.
	if err := opts.Flags.FlagSet("secure serving").Parse([]string{"--secure-port=0"}); err != nil {
		return nil, fmt.Errorf("scheduler flags: %w", err)
	}

	var regOpts []app.Option
	for name, factory := range cfg.Registry {
		regOpts = append(regOpts, app.WithPlugin(name, factory))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cc, sched, err := app.Setup(ctx, opts, regOpts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("scheduler setup: %w", err)
	}
	s := &Scheduler{cancel: cancel, done: make(chan struct{})}
	go func() {
		err := app.Run(ctx, cc, sched)
		// kube-scheduler registers its config under a process-wide
		// configz name and fails at start if the name is taken: free it so
		// the next scheduler of this process (a restart) can run.
		configz.Delete("componentconfig")
		if err != nil && ctx.Err() == nil {
			s.err = fmt.Errorf("scheduler stopped: %w", err)
		}
		close(s.done)
	}()
	e.mu.Lock()
	e.schedulers = append(e.schedulers, s)
	e.mu.Unlock()
	return s, nil
}

// Done is closed when the scheduler has returned, after Stop or because
// it failed (Err says why).
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// Err is why the scheduler stopped on its own; nil while it runs and
// after a Stop.
func (s *Scheduler) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Stop cancels the scheduler and waits for it to return; the error is
// set if it had stopped on its own before. Safe to call more than once.
func (s *Scheduler) Stop() error {
	if !s.stopped.Swap(true) {
		s.cancel()
	}
	<-s.done
	return s.err
}
