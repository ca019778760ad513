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
	"math"
	"net/http"
	"sync"
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
	// Recent is the replica's part of Latency.Recent.
	Recent float64
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
	// Recent is how many observations the replicas' histograms gained
	// since their previous scrape, RecentOver the time since it (pods
	// source only; 0 when no replica had a previous scrape). For TTFT
	// these are the requests admitted, a measure of the arrival rate.
	Recent     float64
	RecentOver time.Duration
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

// bodies recycles response buffers: a scrape is parsed right after it is
// read and the parsers copy what they keep, so a buffer can serve the next
// scrape, and hundreds of pollers do not allocate a body each per poll.
// Pooled buffers hold up to pooledBodyCap+1 bytes.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

const pooledBodyCap = 256 << 10

// bigBodies holds the buffers for answers over pooledBodyCap: at most
// maxBigReads of them are read at once, process-wide, each into a buffer
// kept for the next. Such answers are rare from a healthy server and
// endless from a broken one; read into fresh buffers by every poller,
// tens of broken servers made the garbage collector take 18% of the CPU
// and stall healthy GetMetrics calls. Now they cost at most
// maxBigReads x (limit+1) bytes, allocated once, and a poller waits its
// turn (within its timeout) instead.
var bigBodies = func() chan []byte {
	c := make(chan []byte, maxBigReads)
	for range maxBigReads {
		c <- nil
	}
	return c
}()

const maxBigReads = 2

// readLimited appends r's bytes to buf until EOF or until it holds more
// than limit bytes. Growth doubles but never past limit+1, so an endless
// body costs at most limit+1 bytes of buffer (bytes.Buffer would double
// to twice the limit, and zeroing that showed in the fault load's CPU
// profile).
func readLimited(r io.Reader, buf []byte, limit int64) ([]byte, error) {
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), 32<<10), int(limit)+1))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// get performs an HTTP GET with its own timeout and a body limit, and
// hands the body to parse; anything but 200 is an error. The body is only
// valid during parse.
func get(ctx context.Context, client *http.Client, url string, timeout time.Duration, limit int64, accept string, parse func([]byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", url, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	// A declared length over the limit is refused before reading a byte:
	// a misbehaving server costs no memory or CPU. Bodies without a length
	// (chunked) are read up to the limit and cut there.
	if resp.ContentLength > limit {
		return fmt.Errorf("GET %s: %w (%d bytes, Content-Length %d)", url, ErrBodyTooLarge, limit, resp.ContentLength)
	}
	bp := bodies.Get().(*[]byte)
	body, err := readLimited(resp.Body, (*bp)[:0], min(limit, pooledBodyCap))
	*bp = body
	defer bodies.Put(bp)
	if err == nil && limit > pooledBodyCap && int64(len(body)) > pooledBodyCap {
		// Over the pooled size and not yet over the limit: go on in a
		// big buffer, one of maxBigReads.
		var big []byte
		select {
		case big = <-bigBodies:
		case <-ctx.Done():
			return fmt.Errorf("read %s: waiting to read a body over %d bytes: %w", url, pooledBodyCap, ctx.Err())
		}
		body, err = readLimited(resp.Body, append(big[:0], body...), limit)
		defer func() { bigBodies <- body[:0] }()
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("GET %s: %w (%d bytes)", url, ErrBodyTooLarge, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %.200s", url, resp.StatusCode, body)
	}
	return parse(body)
}

// latencyDuration turns a percentile in the histogram's unit into a
// duration. A negative or infinite percentile comes only from a broken
// histogram and is an error; one beyond what a Duration holds (~292
// years) saturates, since float-to-int conversion would wrap it negative
// and read a huge latency as none.
func latencyDuration(v, unitSeconds float64) (time.Duration, error) {
	s := v * unitSeconds
	if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
		return 0, fmt.Errorf("latency percentile %v is not a duration", v)
	}
	if ns := s * float64(time.Second); ns < float64(math.MaxInt64) {
		return time.Duration(ns), nil
	}
	return time.Duration(math.MaxInt64), nil
}

// checkValue rejects what no gauge of waiting or running requests can
// hold: a missing data point must never read as zero or negative demand.
func checkValue(what string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("invalid %s value %v", what, v)
	}
	return nil
}
