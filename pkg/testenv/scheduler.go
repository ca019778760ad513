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
	done    chan error
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
		t.Fatalf("testenv: write scheduler config: %v", err)
	}

	opts := options.NewOptions()
	if err := opts.Flags.FlagSet("misc").Parse([]string{"--config=" + path}); err != nil {
		t.Fatalf("testenv: scheduler flags: %v", err)
	}
	// No serving endpoint: tests talk to the API, and a fixed port would
	// collide between parallel test packages.
	if err := opts.Flags.FlagSet("secure serving").Parse([]string{"--secure-port=0"}); err != nil {
		t.Fatalf("testenv: scheduler flags: %v", err)
	}

	var regOpts []app.Option
	for name, factory := range cfg.Registry {
		regOpts = append(regOpts, app.WithPlugin(name, factory))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cc, sched, err := app.Setup(ctx, opts, regOpts...)
	if err != nil {
		cancel()
		t.Fatalf("testenv: scheduler setup: %v", err)
	}
	s := &Scheduler{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := app.Run(ctx, cc, sched)
		// kube-scheduler registers its config under a process-wide
		// configz name and fails at start if the name is taken: free it so
		// the next scheduler of this process (a restart) can run.
		configz.Delete("componentconfig")
		if err != nil && ctx.Err() == nil {
			t.Errorf("testenv: scheduler stopped: %v", err)
		}
		s.done <- err
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop cancels the scheduler and waits for it to return. Safe to call
// more than once.
func (s *Scheduler) Stop() {
	if s.stopped.Swap(true) {
		return
	}
	s.cancel()
	<-s.done
}
