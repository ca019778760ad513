// Package sim is the autoscaling simulator: it replays an LLM request trace
// (the Azure LLM inference trace format) against simulated inference
// servers with continuous batching, and scales them with the control loop
// production runs: kubegpu's own scaler policy (scaler/policy, fed through
// scaler/source from the servers' vLLM-format /metrics), or KEDA's
// Prometheus scaler and the HPA as documented upstream. It reports SLO
// attainment, latency percentiles and GPU-hours per policy. See
// docs/autoscale-simulator.md.
package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Request is one row of the trace.
type Request struct {
	// Arrival is the time since the trace's first request.
	Arrival time.Duration
	// Prompt is the number of prompt (context) tokens.
	Prompt int
	// Output is the number of generated tokens.
	Output int
}

// Trace is a loaded request trace, sorted by arrival.
type Trace struct {
	Name     string
	Requests []Request
}

// Duration is the arrival time of the last request.
func (t *Trace) Duration() time.Duration {
	if len(t.Requests) == 0 {
		return 0
	}
	return t.Requests[len(t.Requests)-1].Arrival
}

// Trace columns (AzurePublicDataset, AzureLLMInferenceTrace_*.csv).
const (
	colTimestamp = "TIMESTAMP"
	colContext   = "ContextTokens"
	colGenerated = "GeneratedTokens"
)

// MaxTokens bounds a request's prompt or output tokens; larger values are
// taken as a corrupt row rather than simulated.
const MaxTokens = 1 << 20

// timestampLayouts are the forms seen in the Azure traces (seven
// fractional digits) plus RFC 3339; Go accepts any number of fractional
// digits for .999999999.
var timestampLayouts = []string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano}

// LoadTrace reads a trace file.
func LoadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	return ReadTrace(path, f)
}

// ReadTrace parses the Azure LLM trace format: a header naming TIMESTAMP,
// ContextTokens and GeneratedTokens (in any order, extra columns ignored),
// then one request per row. Errors name the file, line and column. Rows
// out of time order are sorted (stably), so a merged trace still loads.
func ReadTrace(name string, r io.Reader) (*Trace, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:1:1: empty file, want a header %s,%s,%s", name, colTimestamp, colContext, colGenerated)
		}
		return nil, csvError(name, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))] = i
	}
	for _, c := range []string{colTimestamp, colContext, colGenerated} {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("%s:1:1: missing column %q (header %q)", name, c, strings.Join(header, ","))
		}
	}
	type row struct {
		at     time.Time
		prompt int
		output int
	}
	var rows []row
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(name, err)
		}
		field := func(c string) (string, int, int, error) {
			i := col[c]
			line, _ := cr.FieldPos(0)
			if i >= len(rec) {
				return "", line, 1, fmt.Errorf("%s:%d:1: column %q: row has %d fields, want at least %d", name, line, c, len(rec), i+1)
			}
			l, cc := cr.FieldPos(i)
			return strings.TrimSpace(rec[i]), l, cc, nil
		}
		ts, line, cc, err := field(colTimestamp)
		if err != nil {
			return nil, err
		}
		var at time.Time
		var perr error
		for _, layout := range timestampLayouts {
			if at, perr = time.Parse(layout, ts); perr == nil {
				break
			}
		}
		if perr != nil {
			return nil, fmt.Errorf("%s:%d:%d: column %q: bad timestamp %q, want like 2023-11-16 18:17:03.9799600", name, line, cc, colTimestamp, ts)
		}
		var r row
		r.at = at
		for _, c := range []struct {
			name string
			dst  *int
			min  int
		}{{colContext, &r.prompt, 1}, {colGenerated, &r.output, 0}} {
			s, line, cc, err := field(c.name)
			if err != nil {
				return nil, err
			}
			v, err := strconv.Atoi(s)
			if err != nil {
				return nil, fmt.Errorf("%s:%d:%d: column %q: %q is not an integer", name, line, cc, c.name, s)
			}
			if v < c.min || v > MaxTokens {
				return nil, fmt.Errorf("%s:%d:%d: column %q: %d out of range %d-%d", name, line, cc, c.name, v, c.min, MaxTokens)
			}
			*c.dst = v
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no requests after the header", name)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].at.Before(rows[j].at) })
	t0 := rows[0].at
	if span := rows[len(rows)-1].at.Sub(t0); span < 0 || span >= 365*24*time.Hour {
		return nil, fmt.Errorf("%s: requests span %s, want under a year", name, span)
	}
	tr := &Trace{Name: name, Requests: make([]Request, len(rows))}
	for i, r := range rows {
		tr.Requests[i] = Request{Arrival: r.at.Sub(t0), Prompt: r.prompt, Output: r.output}
	}
	return tr, nil
}

// Scaled returns the trace replayed speed times faster: arrival times are
// divided by speed, token counts kept, so the same requests arrive at
// speed times the rate (the load of a larger service).
func (t *Trace) Scaled(speed float64) []Request {
	out := make([]Request, len(t.Requests))
	for i, r := range t.Requests {
		r.Arrival = time.Duration(float64(r.Arrival) / speed)
		out[i] = r
	}
	return out
}

// csvError puts the file, line and column of a CSV syntax error first,
// like the other errors.
func csvError(name string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s:%d:%d: %w", name, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("%s: %w", name, err)
}
