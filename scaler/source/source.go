// Package source fetches the demand of one inference Deployment: queue
// depth, running requests and a latency percentile. Every source returns an
// error, never a zero snapshot, when it cannot see the servers: a zero would
// tell KEDA "no demand" and scale a busy model away.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Snapshot is what a source saw at one moment.
type Snapshot struct {
	At time.Time
	// QueueTotal is requests waiting, summed over replicas.
	QueueTotal float64
	// RunningTotal is requests being processed, summed over replicas.
	RunningTotal float64
	// Replicas holds the per-replica counts that were summed.
	Replicas []Replica
	// ReadyReplicas is how many replicas reported metrics.
	ReadyReplicas int
	// Latency is the configured percentile over Latency.Window; zero value
	// when no latency target is configured.
	Latency Latency
}

// Replica is one serving replica's counts.
type Replica struct {
	Name    string
	Queue   float64
	Running float64
}

// Latency is a percentile computed from histogram bucket increases over a
// window (never since process start, never from averages).
type Latency struct {
	// Valid is false when no request completed in the window, so there is
	// no distribution to take a percentile of.
	Valid  bool
	Value  time.Duration
	Window time.Duration
	// Observations is how many requests the window held (pods source only).
	Observations float64
	// WithinTarget is how many of them were at or below the latency
	// target (pods source only).
	WithinTarget float64
}

// Source produces snapshots. Implementations are safe for use by one
// goroutine at a time (the server's poll loop).
type Source interface {
	Fetch(ctx context.Context) (Snapshot, error)
}

// Defaults shared by the HTTP-based sources.
const (
	DefaultTimeout      = 3 * time.Second
	DefaultMaxBodyBytes = 8 << 20
	DefaultWindow       = time.Minute
)

// ErrBodyTooLarge is returned when a response exceeds the size limit.
var ErrBodyTooLarge = errors.New("response body exceeds size limit")

// get performs an HTTP GET with its own timeout and a body limit, and
// returns the body; anything but 200 is an error.
func get(ctx context.Context, client *http.Client, url string, timeout time.Duration, limit int64, accept string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", url, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: %w (%d bytes)", url, ErrBodyTooLarge, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %.200s", url, resp.StatusCode, body)
	}
	return body, nil
}
