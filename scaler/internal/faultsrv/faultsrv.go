// Package faultsrv serves metric endpoints that misbehave on demand, for
// the scaler's fault tests: pods' /metrics and the Prometheus query API
// that crash, flap, hang, answer garbage or answer without end.
package faultsrv

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Fault is what an endpoint does to each request.
type Fault int32

const (
	// Healthy answers with the good body.
	Healthy Fault = iota
	// Crash drops the connection without an answer, like a server
	// process that died mid-request.
	Crash
	// Flap alternates Healthy and Crash every FlapPeriod.
	Flap
	// Slow answers after SlowDelay, far past any source timeout.
	Slow
	// Garbage answers 200 with bytes in no metrics format (a proxy's
	// HTML error page, cut-off JSON).
	Garbage
	// Huge streams well-formed lines without end and without a
	// Content-Length.
	Huge
	// HugeDeclared declares a 1 GiB body and sends nothing.
	HugeDeclared
	// Unavailable answers 503, like a proxy in front of a dead server.
	Unavailable
)

// Faults lists every fault but Healthy.
var Faults = []Fault{Crash, Flap, Slow, Garbage, Huge, HugeDeclared, Unavailable}

var names = [...]string{"healthy", "crash", "flap", "slow", "garbage", "huge", "huge-declared", "unavailable"}

func (f Fault) String() string {
	if int(f) < len(names) {
		return names[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Parse reads a fault's name.
func Parse(s string) (Fault, bool) {
	for i, n := range names {
		if n == s {
			return Fault(i), true
		}
	}
	return 0, false
}

// Handler serves Good or the fault set with Set.
type Handler struct {
	// Good writes the healthy answer.
	Good http.HandlerFunc
	// Line is one well-formed line (or JSON sample) that Huge repeats.
	Line string
	// FlapPeriod is how long each Flap phase lasts (default 120ms).
	FlapPeriod time.Duration
	// SlowDelay is how long Slow waits (default 1m).
	SlowDelay time.Duration

	mode  atomic.Int32
	start time.Time
	block atomic.Pointer[[]byte]
}

// Set changes the fault for the next requests.
func (h *Handler) Set(f Fault) { h.mode.Store(int32(f)) }

// Fault returns the current fault.
func (h *Handler) Fault() Fault { return Fault(h.mode.Load()) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.Serve(h.Fault(), w, r)
}

// Serve answers r as fault f would.
func (h *Handler) Serve(f Fault, w http.ResponseWriter, r *http.Request) {
	if f == Flap {
		period := h.FlapPeriod
		if period <= 0 {
			period = 120 * time.Millisecond
		}
		f = Healthy
		if (time.Since(h.start)/period)%2 == 1 {
			f = Crash
		}
	}
	switch f {
	case Healthy:
		h.Good(w, r)
	case Crash:
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	case Slow:
		delay := h.SlowDelay
		if delay <= 0 {
			delay = time.Minute
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
		case <-t.C:
			h.Good(w, r)
		}
	case Garbage:
		fmt.Fprint(w, "<html><body>502 Bad Gateway</body></html>\n{\"status\":\"succ")
	case Huge:
		// 64 KiB writes: the cost of the test is the scaler's reading,
		// not this server's writing.
		b := h.block.Load()
		if b == nil {
			blk := []byte(strings.Repeat(h.Line, 64<<10/max(1, len(h.Line))+1))
			h.block.Store(&blk)
			b = &blk
		}
		for r.Context().Err() == nil {
			if _, err := w.Write(*b); err != nil {
				return
			}
		}
	case HugeDeclared:
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case Unavailable:
		http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
	}
}

// New returns a Handler whose Flap phases start now.
func New(good http.HandlerFunc, line string) *Handler {
	return &Handler{Good: good, Line: line, start: time.Now()}
}

// ByPath returns a handler that takes the fault from the first path
// segment and strips it: /slow/metrics is /metrics served slowly, and
// /crash/api/v1/query is a crashing Prometheus. Unknown names are 404.
func ByPath(h *Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		f, ok := Parse(name)
		if !ok {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + rest
		h.Serve(f, w, r2)
	})
}
