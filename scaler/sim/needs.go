package sim

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"
)

// WindowNeed is the smallest fixed replica count that serves the requests
// arriving in one window within the goal, each window simulated on its own
// from idle warm replicas.
type WindowNeed struct {
	Start    time.Duration
	Requests int
	Replicas int32
}

// Needs splits the requests into windows and finds each window's need. An
// oracle that knew the future and paid no cold start would run Replicas
// for each window: OracleGPUHours is that cost. It is an estimate of the
// room an autoscaler has, not a bound: each window must reach the goal on
// its own (stricter than the goal over the whole trace) and work carried
// over a window's end is ignored.
func Needs(ctx context.Context, cfg Config, reqs []Request, window time.Duration) ([]WindowNeed, error) {
	if window <= 0 {
		return nil, fmt.Errorf("window %s: want > 0", window)
	}
	var out []WindowNeed
	for start := time.Duration(0); len(reqs) > 0 && start <= reqs[len(reqs)-1].Arrival; start += window {
		lo := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= start })
		hi := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= start+window })
		w := WindowNeed{Start: start, Requests: hi - lo}
		if hi > lo {
			slice := make([]Request, hi-lo)
			for i, r := range reqs[lo:hi] {
				r.Arrival -= start
				slice[i] = r
			}
			n, err := smallestStatic(ctx, cfg, slice, cfg.Min)
			if err != nil {
				return nil, fmt.Errorf("window at %s: %w", start, err)
			}
			w.Replicas = n
		} else {
			w.Replicas = cfg.Min
		}
		out = append(out, w)
	}
	return out, nil
}

// OracleGPUHours is the cost of running each window's need for the window.
func OracleGPUHours(needs []WindowNeed, window time.Duration) float64 {
	var h float64
	for _, n := range needs {
		h += float64(n.Replicas) * window.Hours()
	}
	return h
}

// WriteNeeds prints the windows' needs and the oracle's cost.
func WriteNeeds(w io.Writer, needs []WindowNeed, window time.Duration, peak int32) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "window start (s)\trequests\treplicas needed\t\n")
	for _, n := range needs {
		fmt.Fprintf(tw, "%.0f\t%d\t%d\t\n", n.Start.Seconds(), n.Requests, n.Replicas)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	oracle := OracleGPUHours(needs, window)
	static := float64(peak) * (time.Duration(len(needs)) * window).Hours()
	_, err := fmt.Fprintf(w, "oracle (each %s window at its own need, no cold start): %.3f GPU-h = %.2fx static %d over the same windows (%.3f GPU-h)\n",
		window, oracle, oracle/static, peak, static)
	return err
}
