package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/kubegpu/kubegpu/pkg/testenv"
	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

// demoOptions are the demo command's flags.
type demoOptions struct {
	// Examples is the examples/ folder whose manifests are applied.
	Examples string
	// Report is where the HTML report is written ("" writes none).
	Report string
	// Short runs the load phases in about a third of the time (tests).
	Short bool
	// Timeout bounds the whole run.
	Timeout time.Duration
}

func newDemoCommand() *cobra.Command {
	opts := demoOptions{Examples: "examples", Report: "demo-report.html", Timeout: 170 * time.Second}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run kubegpu end to end in-process: control plane, fake GPU nodes, scheduler, scaler, examples, load",
		Long: `demo starts an embedded control plane (etcd + kube-apiserver), fake GPU nodes
of mixed shapes, each with kubegpu's device plugin on fake NVML registered with
the kubelet's own device manager, kubegpu's scheduler and its KEDA external
scaler. It applies the manifests under examples/, admits every bound pod
through the device manager as a kubelet would, drives a load against the
inference example while acting as KEDA and the HPA, prints what happened and
writes an HTML report with the cluster's GPU map. It exits 0 only if every
step was checked and held. Set KUBEGPU_TEST_LOGS=2 to see the components'
logs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, cmd.OutOrStdout(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Examples, "examples", opts.Examples, "examples folder to apply")
	cmd.Flags().StringVar(&opts.Report, "report", opts.Report, `HTML report to write ("" for none)`)
	cmd.Flags().BoolVar(&opts.Short, "short", false, "shorter load phases")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", opts.Timeout, "give up after this long")
	return cmd
}

// demo is one run: the cluster it built and what it saw.
type demo struct {
	opts   demoOptions
	out    io.Writer
	start  time.Time
	env    *testenv.Env
	client kubernetes.Interface
	nodes  []*demoNode
	byName map[string]*demoNode
	// placements are the admitted pods, in admission order.
	placements []*placement
	gangs      []gangResult
	scaling    *scalingResult
	inf        *inference
	// peak is a copy of the live placements when the llama Deployment
	// was largest, for the report's GPU map.
	peak  []*placement
	steps []stepResult
}

type stepResult struct {
	Name     string
	Err      error
	Duration time.Duration
}

// runDemo runs every step in order; the first failed step ends the run
// (later steps depend on it). The report is written either way.
func runDemo(ctx context.Context, out io.Writer, opts demoOptions) (err error) {
	if opts.Timeout <= 0 {
		return errors.New("demo: --timeout must be positive")
	}
	if _, err := os.Stat(filepath.Join(opts.Examples, "gang-training", "job.yaml")); err != nil {
		return fmt.Errorf("demo: examples folder %q: %w (run from the repository root or pass --examples)", opts.Examples, err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	d := &demo{opts: opts, out: out, start: time.Now(), byName: map[string]*demoNode{}}
	defer d.stopAll()
	defer func() {
		if opts.Report == "" {
			return
		}
		if werr := d.writeReport(opts.Report); werr != nil {
			err = errors.Join(err, werr)
			return
		}
		d.printf("report: %s\n", opts.Report)
	}()

	d.printf("kubegpu demo: everything runs in this process; nothing touches a real cluster or GPU\n\n")
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"control plane: embedded etcd + kube-apiserver", d.startControlPlane},
		{"GPU nodes: device plugin on fake NVML per node, registered with the kubelet's device manager", d.startNodes},
		{"scheduler: kube-scheduler with kubegpu's profile (GPUPack, Gang)", d.startScheduler},
		{"gang-training: Job ddp, 4 pods x 8 GPUs, all-or-nothing", d.applyGang},
		{"pods: whole-gpus, gpu-memory, gpu-model, gpu-share", d.applyPods},
		{"inference-vllm: Deployment llama + Service, one replica serving", d.applyInference},
		{"autoscaling: load on llama, kubegpu-scaler asked over KEDA's gRPC API, HPA rule applied", d.autoscale},
		{"final check: every running pod holds exactly the GPUs the scheduler recorded", d.finalCheck},
	}
	for _, s := range steps {
		began := time.Now()
		d.printf("▶ %s\n", s.name)
		serr := s.run(ctx)
		r := stepResult{Name: s.name, Err: serr, Duration: time.Since(began)}
		d.steps = append(d.steps, r)
		if serr != nil {
			d.printf("✗ FAILED after %s: %v\n", r.Duration.Round(time.Millisecond), serr)
			return fmt.Errorf("demo step %q: %w", s.name, serr)
		}
		d.printf("✓ done in %s\n\n", r.Duration.Round(time.Millisecond))
	}
	d.printSummary()
	return nil
}

func (d *demo) printf(format string, args ...any) {
	fmt.Fprintf(d.out, format, args...)
}

// logf prints an indented progress line with the time since start.
func (d *demo) logf(format string, args ...any) {
	fmt.Fprintf(d.out, "  [%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) startControlPlane(ctx context.Context) error {
	env, err := testenv.Run(ctx)
	if err != nil {
		return err
	}
	d.env, d.client = env, env.Client
	d.logf("kube-apiserver %s (etcd embedded)", env.Config.Host)
	return nil
}

func (d *demo) startScheduler(ctx context.Context) error {
	s, err := d.env.RunScheduler(testenv.SchedulerConfig{Profiles: registry.Profile, Registry: registry.Plugins()})
	if err != nil {
		return err
	}
	select {
	case <-s.Done():
		return fmt.Errorf("scheduler stopped at start: %w", s.Err())
	case <-time.After(200 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	d.logf("scheduler %q running in-process", "kubegpu-scheduler")
	return nil
}

// stopAll stops the nodes (device plugins, device managers, model
// servers), then the scheduler and the control plane.
func (d *demo) stopAll() {
	if d.scaling != nil {
		d.scaling.stop()
	}
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		wg.Go(n.stop)
	}
	wg.Wait()
	if d.env != nil {
		d.env.Stop()
	}
}

func (d *demo) printSummary() {
	d.printf("summary\n")
	d.printf("  %-34s %-8s %-20s %s\n", "pod", "node", "GPUs", "container's NVIDIA_VISIBLE_DEVICES (= kubegpu.io/gpu-ids)")
	for _, p := range d.placements {
		if p.Deleted {
			continue
		}
		d.printf("  %-34s %-8s %-20s %s\n", p.Namespace+"/"+p.Name, p.Node, p.GPUText(), shortUUIDs(p.Visible))
	}
	for _, g := range d.gangs {
		d.printf("  gang %s: %d members on %s (%s), all bound %s after the last was created\n", g.Name, g.Members, strings.Join(g.Nodes, ","), g.Domain, g.BoundAfter.Round(time.Millisecond))
	}
	if s := d.scaling; s != nil {
		d.printf("  llama replicas: start %d, peak %d, end %d (min %d, max %d); %d KEDA polls, %d scaler errors\n",
			s.Initial, s.Peak, s.Final, s.Min, s.Max, len(s.Points), s.Errors)
	}
	used, shared, total := 0, 0, 0
	for _, n := range d.nodes {
		total += len(n.inv.GPUs)
		for i := range n.inv.GPUs {
			switch h := d.holders(n.name, i); {
			case len(h) == 1 && h[0].Milli == 0:
				used++
			case len(h) > 0:
				shared++
			}
		}
	}
	d.printf("  GPUs: %d of %d allocated whole, %d shared, %d free\n", used, total, shared, total-used-shared)
	d.printf("  all %d steps passed in %s\n", len(d.steps), time.Since(d.start).Round(100*time.Millisecond))
}
