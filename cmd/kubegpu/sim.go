package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack/sim"
)

// newSimCommand is the parent of the simulators; each adds itself as a
// child.
func newSimCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "sim",
		Short: "Replay real traces through kubegpu's scheduling and scaling code",
	}
	c.AddCommand(newSimPackCommand())
	c.AddCommand(newSimAutoscaleCommand())
	return c
}

func newSimPackCommand() *cobra.Command {
	var (
		nodesFile, podsFile, jsonFile, plotFile, seedsFlag, withFile string
		policies                                                     []string
		inflate                                                      float64
		diagnose                                                     bool
	)
	c := &cobra.Command{
		Use:   "pack --nodes FILE --pods FILE",
		Short: "Packing simulator: allocated GPU share vs arrived demand on the Alibaba openb trace",
		Long: `Replays an Alibaba openb trace (cluster-trace-gpu-v2023) with the evaluation
protocol of Weng et al., "Beware of Fragmentation" (USENIX ATC'23): pods in
a seeded random order, inflated to 1.3x the cluster's GPU capacity, placed
one at a time without departures. Prints allocated % at 100% and 130%
arrived per policy, averaged over seeds. See docs/simulator.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			seeds, err := parseSeeds(seedsFlag)
			if err != nil {
				return err
			}
			if inflate < 1 || inflate > 3 {
				return fmt.Errorf("--inflate %g: want 1-3", inflate)
			}
			nodes, err := sim.LoadNodes(nodesFile)
			if err != nil {
				return err
			}
			pods, err := sim.LoadPods(podsFile)
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "%d nodes, %d pods, policies %s, seeds %v\n", len(nodes), len(pods), strings.Join(policies, ","), seeds)
			start := time.Now()
			progress := func(policy string, seed uint64, done, total int) {
				if done == total {
					fmt.Fprintf(stderr, "%6.1fs %s seed %d done (%d pods)\n", time.Since(start).Seconds(), policy, seed, total)
				}
			}
			sums, err := sim.RunAll(cmd.Context(), nodes, pods, policies, seeds, inflate, progress)
			if err != nil {
				return err
			}
			if withFile != "" {
				earlier, err := sim.ReadReportFile(withFile)
				if err != nil {
					return err
				}
				if sums, err = sim.Merge(sums, podsFile, len(nodes), seeds, earlier); err != nil {
					return fmt.Errorf("--with %s: %w", withFile, err)
				}
			}
			if err := sim.WriteTable(cmd.OutOrStdout(), sums, inflate); err != nil {
				return err
			}
			if diagnose {
				for _, s := range sums {
					sim.WriteDiagnosis(cmd.OutOrStdout(), s.Runs)
				}
			}
			rep := sim.NewReport(podsFile, len(nodes), seeds, sums)
			if jsonFile != "" {
				if err := rep.WriteJSONFile(jsonFile); err != nil {
					return err
				}
			}
			if plotFile != "" {
				if err := sim.Plot(plotFile, podsFile, sums); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&nodesFile, "nodes", "", "node list CSV (openb_node_list_gpu_node.csv)")
	f.StringVar(&podsFile, "pods", "", "pod list CSV (openb_pod_list_*.csv)")
	f.StringSliceVar(&policies, "policy", sim.PolicyNames(), "policies to run: "+strings.Join(sim.PolicyNames(), ","))
	f.StringVar(&seedsFlag, "seeds", "42-51", "seeds: N, N-M or a comma list")
	f.Float64Var(&inflate, "inflate", 1.3, "arrived GPU demand to replay, as a multiple of capacity")
	f.StringVar(&jsonFile, "json", "", "write results as JSON to FILE")
	f.StringVar(&plotFile, "plot", "", "draw allocated % vs arrived % to FILE.svg")
	f.StringVar(&withFile, "with", "", "add the policies of an earlier --json report of the same trace and seeds that this run does not run (table, JSON and plot)")
	f.BoolVar(&diagnose, "diagnose", false, "print, per seed, where the free GPU capacity is at 100% arrived and which pods failed before")
	_ = c.MarkFlagRequired("nodes")
	_ = c.MarkFlagRequired("pods")
	return c
}

// parseSeeds reads "42", "42-51" or "1,5,9".
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--seeds %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil {
				return nil, fmt.Errorf("--seeds %q: %w", s, err)
			}
		}
		if b < a || b-a > 10000 {
			return nil, fmt.Errorf("--seeds %q: bad range %d-%d", s, a, b)
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}
