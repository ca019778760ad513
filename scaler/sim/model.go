package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"time"
)

// Model describes one inference server replica (one model on one GPU) with
// continuous batching, the way vLLM schedules: every engine step runs one
// forward pass over the running requests (one decode token each) plus the
// prompts admitted in that step (their whole prefill), and produces the
// first token of each admitted prompt. The defaults are a 7-8B model on one
// 80 GB A100/H100-class GPU; docs/autoscale-simulator.md gives the sources.
type Model struct {
	// StepBase is the fixed cost of one engine step (weights read once
	// per forward pass).
	StepBase time.Duration
	// PerSeq is the extra step time per running (decoding) request.
	PerSeq time.Duration
	// PerPrefillToken is the extra step time per prompt token prefilled in
	// the step.
	PerPrefillToken time.Duration
	// KVTokens is the KV-cache budget in tokens. A request holds
	// prompt+output tokens from admission to completion; a request that
	// does not fit waits in the queue.
	KVTokens int
	// MaxSeqs bounds the running batch (vLLM --max-num-seqs).
	MaxSeqs int
	// MaxBatchedTokens bounds the prompt tokens admitted per step (vLLM
	// --max-num-batched-tokens); a longer prompt is admitted alone.
	MaxBatchedTokens int
	// ColdStart is how long a new replica takes from creation to serving
	// (pod start, weight loading, engine warm-up).
	ColdStart time.Duration
}

// DefaultModel is a 7-8B model on one 80 GB A100/H100-class GPU served by
// vLLM with its default settings. Figures and sources:
// docs/autoscale-simulator.md#model-parameters.
func DefaultModel() Model {
	return Model{
		StepBase:         12900 * time.Microsecond,
		PerSeq:           410 * time.Microsecond,
		PerPrefillToken:  79 * time.Microsecond,
		KVTokens:         7191 * 16,
		MaxSeqs:          256,
		MaxBatchedTokens: 8192,
		ColdStart:        90 * time.Second,
	}
}

// Validate rejects parameters that cannot describe a server.
func (m Model) Validate() error {
	var errs []error
	if m.StepBase <= 0 {
		errs = append(errs, fmt.Errorf("step base %s: want > 0", m.StepBase))
	}
	if m.PerSeq < 0 || m.PerPrefillToken < 0 {
		errs = append(errs, errors.New("per-sequence and per-prefill-token times must be >= 0"))
	}
	if m.KVTokens < 1 || m.MaxSeqs < 1 || m.MaxBatchedTokens < 1 {
		errs = append(errs, errors.New("KV tokens, max seqs and max batched tokens must be >= 1"))
	}
	if m.ColdStart < 0 {
		errs = append(errs, fmt.Errorf("cold start %s: want >= 0", m.ColdStart))
	}
	return errors.Join(errs...)
}

// PrefillTime is the step time of a prefill of n prompt tokens with no
// other request running: the TTFT of a request that finds the replica idle.
func (m Model) PrefillTime(n int) time.Duration {
	return m.StepBase + time.Duration(n)*m.PerPrefillToken
}

// StepTime is the time of one engine step with decoding running requests
// and prefill prompt tokens admitted.
func (m Model) StepTime(decoding, prefill int) time.Duration {
	return m.StepBase + time.Duration(decoding)*m.PerSeq + time.Duration(prefill)*m.PerPrefillToken
}

// tokens a request holds in the KV cache.
func kvNeed(r *Request) int { return r.Prompt + max(r.Output, 1) }

// replicaState is where a replica is in its life.
type replicaState int

const (
	starting replicaState = iota // created, loading the model
	ready                        // serving
	draining                     // removed: finishes its work, takes nothing new
	gone                         // terminated
)

// reqState is the per-request outcome.
type reqState struct {
	admitted time.Duration // when its prefill step started
	ttft     time.Duration
	e2e      time.Duration
	done     bool
	failed   bool // could never fit the KV cache
}

// replica is one simulated server.
type replica struct {
	id      int
	name    string
	state   replicaState
	created time.Duration
	readyAt time.Duration
	ended   time.Duration

	waiting []int // request indices, FIFO
	head    int
	running int
	kvUsed  int
	// finishing holds running requests by the step number that completes
	// them, so a step costs O(log n), not O(batch).
	finishing finishHeap
	step      int64
	busy      bool
	stepStart time.Duration
	stepEnd   time.Duration
	prefilled []int // requests admitted in the current step
	decoding  int   // requests decoding in the current step

	busyTotal time.Duration // completed steps' time, for GPU utilisation

	// Cumulative histograms as vLLM exports them.
	ttftHist, e2eHist, queueHist hist
}

func (r *replica) queueLen() int { return len(r.waiting) - r.head }

// busyUntil is the busy time up to now, counting the running step's part.
func (r *replica) busyUntil(now time.Duration) time.Duration {
	b := r.busyTotal
	if r.busy && now > r.stepStart {
		b += min(now, r.stepEnd) - r.stepStart
	}
	return b
}

// startStep admits waiting requests and starts a step if there is work.
// It reports whether a step started; the caller schedules its end.
func (r *replica) startStep(m *Model, reqs []Request, st []reqState, now time.Duration, done *int) bool {
	if r.busy || r.state == starting || r.state == gone {
		return false
	}
	r.prefilled = r.prefilled[:0]
	r.decoding = r.running
	tokens := 0
	for r.head < len(r.waiting) && r.running < m.MaxSeqs {
		i := r.waiting[r.head]
		q := &reqs[i]
		need := kvNeed(q)
		if need > m.KVTokens {
			// It can never be served (vLLM rejects a prompt longer than
			// the cache); it counts as a miss.
			st[i].failed, st[i].done = true, true
			*done++
			r.head++
			continue
		}
		if r.kvUsed+need > m.KVTokens {
			break
		}
		if tokens > 0 && tokens+q.Prompt > m.MaxBatchedTokens {
			break
		}
		r.head++
		r.kvUsed += need
		r.running++
		tokens += q.Prompt
		st[i].admitted = now
		r.prefilled = append(r.prefilled, i)
		// The prefill step yields token 1; each later step one more.
		heap.Push(&r.finishing, finish{step: r.step + int64(max(q.Output, 1)) - 1, req: i})
		r.queueHist.observe((now - q.Arrival).Seconds())
	}
	if r.head > 1024 && r.head*2 > len(r.waiting) {
		r.waiting = append(r.waiting[:0], r.waiting[r.head:]...)
		r.head = 0
	}
	if r.running == 0 {
		return false
	}
	r.busy = true
	r.stepStart = now
	r.stepEnd = now + m.StepTime(r.decoding, tokens)
	return true
}

// endStep completes the running step at r.stepEnd: first tokens of the
// prompts it prefilled, and the requests whose last token it produced.
func (r *replica) endStep(m *Model, reqs []Request, st []reqState, done *int) {
	now := r.stepEnd
	r.busy = false
	r.busyTotal += now - r.stepStart
	for _, i := range r.prefilled {
		st[i].ttft = now - reqs[i].Arrival
		r.ttftHist.observe(st[i].ttft.Seconds())
	}
	for len(r.finishing) > 0 && r.finishing[0].step <= r.step {
		f := heap.Pop(&r.finishing).(finish)
		q := &reqs[f.req]
		st[f.req].e2e = now - q.Arrival
		st[f.req].done = true
		*done++
		r.e2eHist.observe(st[f.req].e2e.Seconds())
		r.kvUsed -= kvNeed(q)
		r.running--
	}
	r.step++
}

type finish struct {
	step int64
	req  int
}

type finishHeap []finish

func (h finishHeap) Len() int { return len(h) }
func (h finishHeap) Less(i, j int) bool {
	if h[i].step != h[j].step {
		return h[i].step < h[j].step
	}
	return h[i].req < h[j].req
}
func (h finishHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *finishHeap) Push(x any)   { *h = append(*h, x.(finish)) }
func (h *finishHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// hist is a cumulative Prometheus histogram.
type hist struct {
	bounds []float64
	counts []uint64 // per bucket (not cumulative); last is +Inf
	sum    float64
	n      uint64
}

func newHist(bounds []float64) hist {
	return hist{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *hist) observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
	h.n++
}

// Bucket bounds vLLM uses (vllm/v1/metrics/loggers.py).
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	e2eBuckets  = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)
