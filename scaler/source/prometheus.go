package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

// PrometheusConfig configures a Prometheus source.
type PrometheusConfig struct {
	Meta *metadata.Metadata
	// Namespace is the `namespace` label every selector is restricted to:
	// Meta.Namespace when set, else the ScaledObject's namespace.
	Namespace    string
	Client       *http.Client
	Timeout      time.Duration
	MaxBodyBytes int64
	// Window is the rate() range for latency percentiles (default 1m).
	Window time.Duration
	Now    func() time.Time
}

// Prometheus reads demand through the Prometheus HTTP API (instant queries).
type Prometheus struct {
	cfg PrometheusConfig
	q   Queries
}

// Queries are the PromQL expressions a Prometheus source runs.
type Queries struct {
	Queue   string
	Running string
	Latency string
}

// BuildQueries renders the PromQL for a metadata and namespace. Metric
// names are validated by the metadata parser and the namespace is quoted,
// so user input cannot change the query's shape.
func BuildQueries(m *metadata.Metadata, namespace string, window time.Duration) Queries {
	sel := "{namespace=" + strconv.Quote(namespace) + "}"
	var q Queries
	// By pod so one query yields the total, the per-replica split and the
	// number of replicas reporting.
	q.Queue = fmt.Sprintf("sum by (pod) (%s%s)", m.Preset.Queue, sel)
	if m.Preset.Running != "" {
		q.Running = fmt.Sprintf("sum by (pod) (%s%s)", m.Preset.Running, sel)
	}
	if m.TargetLatency > 0 {
		q.Latency = fmt.Sprintf("histogram_quantile(%s, sum by (le) (rate(%s_bucket%s[%s])))",
			strconv.FormatFloat(m.LatencyPercentile, 'g', -1, 64), m.LatencyHistogram.Name, sel, promDuration(window))
	}
	return q
}

func promDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// NewPrometheus returns a Prometheus source.
func NewPrometheus(cfg PrometheusConfig) (*Prometheus, error) {
	if cfg.Meta == nil || cfg.Meta.Source != metadata.SourcePrometheus {
		return nil, errors.New("prometheus source: metadata is not source=prometheus")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("prometheus source: no namespace")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Window < time.Second {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Prometheus{cfg: cfg, q: BuildQueries(cfg.Meta, cfg.Namespace, cfg.Window)}, nil
}

// Fetch runs the queries. An empty result for the queue or latency series
// is an error: Prometheus returns nothing both when there is no server and
// when the metric name is wrong, and neither means zero demand.
func (p *Prometheus) Fetch(ctx context.Context) (Snapshot, error) {
	snap := Snapshot{At: p.cfg.Now()}
	queue, err := p.query(ctx, p.q.Queue)
	if err != nil {
		return Snapshot{}, err
	}
	if len(queue) == 0 {
		return Snapshot{}, fmt.Errorf("prometheus: no series for %s", p.q.Queue)
	}
	byPod := map[string]int{}
	for _, s := range queue {
		if err := checkValue("queue", s.value); err != nil {
			return Snapshot{}, fmt.Errorf("prometheus: %w for pod %q", err, s.pod)
		}
		byPod[s.pod] = len(snap.Replicas)
		snap.Replicas = append(snap.Replicas, Replica{Name: s.pod, Queue: s.value})
		snap.QueueTotal += s.value
	}
	if math.IsInf(snap.QueueTotal, 0) {
		return Snapshot{}, fmt.Errorf("prometheus: queue sums to %v", snap.QueueTotal)
	}
	snap.ReadyReplicas = len(queue)
	if p.q.Running != "" {
		running, err := p.query(ctx, p.q.Running)
		if err != nil {
			return Snapshot{}, err
		}
		for _, s := range running {
			// A NaN or negative count would make a busy model look idle
			// (IsActive false) and let KEDA scale it to zero.
			if err := checkValue("running", s.value); err != nil {
				return Snapshot{}, fmt.Errorf("prometheus: %w for pod %q", err, s.pod)
			}
			snap.RunningTotal += s.value
			if i, ok := byPod[s.pod]; ok {
				snap.Replicas[i].Running = s.value
			}
		}
		if math.IsInf(snap.RunningTotal, 0) {
			return Snapshot{}, fmt.Errorf("prometheus: running requests sum to %v", snap.RunningTotal)
		}
	}
	if p.q.Latency != "" {
		lat, err := p.query(ctx, p.q.Latency)
		if err != nil {
			return Snapshot{}, err
		}
		if len(lat) == 0 {
			return Snapshot{}, fmt.Errorf("prometheus: no series for %s", p.q.Latency)
		}
		snap.Latency.Window = p.cfg.Window
		// NaN means no request finished in the window: no percentile.
		// histogram_quantile gives +Inf only for a quantile above 1, which
		// is never asked, so an infinite or negative answer is garbage.
		if v := lat[0].value; !math.IsNaN(v) {
			d, err := latencyDuration(v, p.cfg.Meta.LatencyHistogram.UnitSeconds)
			if err != nil {
				return Snapshot{}, fmt.Errorf("prometheus: %s: %w", p.q.Latency, err)
			}
			snap.Latency.Valid = true
			snap.Latency.Value = d
		}
	}
	return snap, nil
}

type series struct {
	pod   string
	value float64
}

type promResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []json.RawMessage `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func (p *Prometheus) query(ctx context.Context, q string) ([]series, error) {
	u := p.cfg.Meta.ServerAddress + "/api/v1/query?" + url.Values{"query": {q}}.Encode()
	var out []series
	err := get(ctx, p.cfg.Client, u, p.cfg.Timeout, p.cfg.MaxBodyBytes, "application/json", func(body []byte) (err error) {
		out, err = decodeVector(body)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("prometheus query %q: %w", q, err)
	}
	return out, nil
}

// decodeVector reads an instant-query response whose result must be a
// vector of samples.
func decodeVector(body []byte) ([]series, error) {
	var r promResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("status %q: %s: %s", r.Status, r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %q, want vector", r.Data.ResultType)
	}
	out := make([]series, 0, len(r.Data.Result))
	for _, res := range r.Data.Result {
		if len(res.Value) != 2 {
			return nil, errors.New("malformed sample")
		}
		var s string
		if err := json.Unmarshal(res.Value[1], &s); err != nil {
			return nil, fmt.Errorf("sample value: %w", err)
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("sample value %q: %w", s, err)
		}
		out = append(out, series{pod: res.Metric["pod"], value: v})
	}
	return out, nil
}
