package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubegpu/kubegpu/scaler/presets"
	autosim "github.com/kubegpu/kubegpu/scaler/sim"
)

func newSimAutoscaleCommand() *cobra.Command {
	var (
		traceFile, jsonFile, plotFile, signal string
		policies                              []string
		speed, goal                           float64
		slo, coldStart                        time.Duration
		sweep                                 bool
		minR, maxR                            int32
		seed                                  uint64
		trigger                               map[string]string
		needs, bound                          time.Duration
	)
	c := &cobra.Command{
		Use:   "autoscale --trace FILE",
		Short: "Autoscaling simulator: replay an LLM request trace through kubegpu's scaler and KEDA/HPA baselines",
		Long: `Replays an Azure LLM inference trace (TIMESTAMP, ContextTokens,
GeneratedTokens) against simulated vLLM-like servers with continuous
batching and a KV-cache budget, scaled by the control loop production runs:
kubegpu's scaler policy (fed through the scaler's own metric scraping), KEDA's
Prometheus scaler on queue depth, an HPA on GPU utilisation, or a fixed count.
Prints SLO attainment, TTFT/E2E percentiles and GPU-hours per policy.
See docs/autoscale-simulator.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := autosim.DefaultConfig()
			cfg.SLO, cfg.Signal, cfg.Goal = slo, presets.Signal(signal), goal/100
			cfg.Min, cfg.Max, cfg.Seed = minR, maxR, seed
			cfg.Model.ColdStart = coldStart
			if len(trigger) > 0 {
				// The user's keys over the default trigger; an empty value
				// removes a key.
				cfg.Trigger = autosim.KubegpuTrigger(cfg.SLO, cfg.Signal, cfg.Goal)
				for k, v := range trigger {
					if v == "" {
						delete(cfg.Trigger, k)
					} else {
						cfg.Trigger[k] = v
					}
				}
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			tr, err := autosim.LoadTrace(traceFile)
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "%d requests over %s, speed %gx, policies %s, sweep %v\n",
				len(tr.Requests), tr.Duration().Round(time.Second), speed, strings.Join(policies, ","), sweep)
			progress := func(r *autosim.Result, elapsed time.Duration) {
				fmt.Fprintf(stderr, "%6.1fs %-28s %.2f%% in SLO, %.3f GPU-h\n", elapsed.Seconds(), r.Setting, 100*r.Attainment, r.GPUHours)
			}
			rep, err := autosim.RunAll(cmd.Context(), tr, speed, autosim.Options{Config: cfg, Policies: policies, Sweep: sweep, Progress: progress})
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "%6.1fs done\n", rep.Wall.Seconds())
			if err := autosim.WriteTable(cmd.OutOrStdout(), rep, sweep); err != nil {
				return err
			}
			if needs > 0 {
				ws, err := autosim.Needs(cmd.Context(), cfg, tr.Scaled(speed), needs)
				if err != nil {
					return err
				}
				if err := autosim.WriteNeeds(cmd.OutOrStdout(), ws, needs, rep.PeakNeed); err != nil {
					return err
				}
			}
			if bound > 0 {
				bcfg := cfg
				bcfg.Initial = rep.Initial
				b, err := autosim.ClairvoyantBound(cmd.Context(), bcfg, tr.Scaled(speed), bound)
				if err != nil {
					return err
				}
				if err := autosim.WriteBound(cmd.OutOrStdout(), b, rep.CheapestBaseline(cfg.Goal)); err != nil {
					return err
				}
				rep.Bound = b
			}
			if jsonFile != "" {
				if err := rep.WriteJSONFile(jsonFile, sweep); err != nil {
					return err
				}
			}
			if plotFile != "" {
				if err := autosim.Plot(plotFile, rep); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&traceFile, "trace", "", "request trace CSV (Azure LLM inference trace format)")
	f.StringSliceVar(&policies, "policy", autosim.PolicyNames(), "policies to run: "+strings.Join(autosim.PolicyNames(), ","))
	f.Float64Var(&speed, "speed", 1, "replay the trace this many times faster")
	f.DurationVar(&slo, "slo", 2*time.Second, "latency SLO")
	f.StringVar(&signal, "slo-signal", string(presets.SignalTTFT), "latency the SLO bounds: ttft or e2e")
	f.Float64Var(&goal, "goal", 99, "SLO attainment goal, % of requests (sets the static count, the sweep's choice and kubegpu's percentile)")
	f.DurationVar(&coldStart, "cold-start", autosim.DefaultModel().ColdStart, "time from replica creation to serving")
	f.BoolVar(&sweep, "sweep", false, "run each baseline over its threshold range and report the cheapest setting reaching the goal")
	f.Int32Var(&minR, "min-replicas", 1, "minReplicaCount")
	f.Int32Var(&maxR, "max-replicas", 100, "maxReplicaCount")
	f.Uint64Var(&seed, "seed", 1, "seed of the load balancer's random endpoint choice")
	f.StringToStringVar(&trigger, "kubegpu-trigger", nil, "trigger metadata keys for the kubegpu policy over its defaults (e.g. targetQueueDepth=8,burstWindow=0; key= removes a key)")
	f.DurationVar(&needs, "needs", 0, "also print the replicas each window of this length needs on its own, and what an oracle autoscaler would cost (e.g. 5m)")
	f.DurationVar(&bound, "bound", 0, "also compute the clairvoyant bound with windows of this length (perfect foresight, cold start paid) and replay its plan (e.g. 30s)")
	f.StringVar(&jsonFile, "json", "", "write results as JSON to FILE")
	f.StringVar(&plotFile, "plot", "", "draw arrival rate, replicas and latency over time to FILE.svg")
	_ = c.MarkFlagRequired("trace")
	return c
}
