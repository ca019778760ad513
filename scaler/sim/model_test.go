package sim

import (
	"context"
	"testing"
	"time"
)

// testModel has round numbers so expected times are easy to state.
func testModel() Model {
	return Model{
		StepBase: 10 * time.Millisecond, PerSeq: time.Millisecond, PerPrefillToken: 100 * time.Microsecond,
		KVTokens: 1000, MaxSeqs: 8, MaxBatchedTokens: 2000, ColdStart: 30 * time.Second,
	}
}

func TestReplicaModel(t *testing.T) {
	m := testModel()
	tests := []struct {
		name     string
		reqs     []Request
		wantTTFT []time.Duration
		wantE2E  []time.Duration
	}{
		{
			name: "one request: TTFT is the prefill formula, then one step per token",
			reqs: []Request{{Prompt: 500, Output: 3}},
			// prefill 10ms + 500*0.1ms = 60ms; two decode steps of 10+1 ms.
			wantTTFT: []time.Duration{60 * time.Millisecond},
			wantE2E:  []time.Duration{82 * time.Millisecond},
		},
		{
			name:     "one output token ends at the prefill",
			reqs:     []Request{{Prompt: 100, Output: 1}},
			wantTTFT: []time.Duration{20 * time.Millisecond},
			wantE2E:  []time.Duration{20 * time.Millisecond},
		},
		{
			name: "the engine starts a step on the first arrival; a request arriving with it waits for the next step",
			reqs: []Request{{Prompt: 100, Output: 1}, {Prompt: 300, Output: 1}},
			// A: 10+10ms. B: 10+30ms after that.
			wantTTFT: []time.Duration{20 * time.Millisecond, 60 * time.Millisecond},
			wantE2E:  []time.Duration{20 * time.Millisecond, 60 * time.Millisecond},
		},
		{
			name: "prompts waiting together share one prefill step",
			reqs: []Request{{Prompt: 100, Output: 1}, {Arrival: time.Millisecond, Prompt: 100, Output: 1}, {Arrival: 2 * time.Millisecond, Prompt: 300, Output: 1}},
			// A: 0-20ms. B and C prefill together: 10 + 400*0.1 = 50ms.
			wantTTFT: []time.Duration{20 * time.Millisecond, 69 * time.Millisecond, 68 * time.Millisecond},
			wantE2E:  []time.Duration{20 * time.Millisecond, 69 * time.Millisecond, 68 * time.Millisecond},
		},
		{
			name: "a request arriving mid-step waits for the step, then decodes beside the first",
			reqs: []Request{{Prompt: 100, Output: 3}, {Arrival: 5 * time.Millisecond, Prompt: 100, Output: 1}},
			// Step 1 (0-20ms) prefills A. Step 2: A decodes (10+1ms)
			// while B prefills (100 tokens, 10ms): 21ms, ends at 41ms.
			// Step 3: A decodes alone, 11ms, ends at 52ms.
			wantTTFT: []time.Duration{20 * time.Millisecond, 36 * time.Millisecond},
			wantE2E:  []time.Duration{52 * time.Millisecond, 36 * time.Millisecond},
		},
		{
			name: "KV budget full: the second request queues until the first frees its cache",
			// A holds 700+5 tokens of 1000; B needs 400+1.
			reqs: []Request{{Prompt: 700, Output: 5}, {Prompt: 400, Output: 1}},
			// A: prefill 80ms, 4 decodes of 11ms -> 124ms. B starts then:
			// 10+40ms -> TTFT 174ms.
			wantTTFT: []time.Duration{80 * time.Millisecond, 174 * time.Millisecond},
			wantE2E:  []time.Duration{124 * time.Millisecond, 174 * time.Millisecond},
		},
		{
			name: "max batched tokens splits prefills over steps",
			reqs: []Request{{Prompt: 150, Output: 1}, {Prompt: 1900, Output: 1}},
			// 150+1900 > 2000: A alone (25ms), then B (200ms).
			wantTTFT: []time.Duration{25 * time.Millisecond, 225 * time.Millisecond},
			wantE2E:  []time.Duration{25 * time.Millisecond, 225 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := m
			if tt.name == "max batched tokens splits prefills over steps" {
				m.KVTokens = 5000
			}
			s := newTestEngine(m, tt.reqs)
			s.addReplica(true)
			s.runToEnd(t)
			for i := range tt.reqs {
				if got := s.st[i].ttft; got != tt.wantTTFT[i] {
					t.Errorf("request %d: TTFT %s, want %s", i, got, tt.wantTTFT[i])
				}
				if got := s.st[i].e2e; got != tt.wantE2E[i] {
					t.Errorf("request %d: e2e %s, want %s", i, got, tt.wantE2E[i])
				}
			}
		})
	}
}

func TestPrefillTimeMatchesDefaults(t *testing.T) {
	m := DefaultModel()
	// 1585 prompt tokens in one prefill step: 12.9ms + 1585*79us.
	if got, want := m.PrefillTime(1585), 12900*time.Microsecond+1585*79*time.Microsecond; got != want {
		t.Errorf("PrefillTime(1585) = %s, want %s", got, want)
	}
	if got := m.StepTime(1, 0); got != 13310*time.Microsecond {
		t.Errorf("one decoding request: step %s, want 13.31ms (75 tokens/s)", got)
	}
}

func TestTooLargeRequestFails(t *testing.T) {
	m := testModel()
	s := newTestEngine(m, []Request{{Prompt: 2000, Output: 1}, {Arrival: time.Millisecond, Prompt: 10, Output: 1}})
	s.addReplica(true)
	s.runToEnd(t)
	if !s.st[0].failed {
		t.Error("a request larger than the KV cache was served")
	}
	if s.st[1].failed || s.st[1].ttft != 11*time.Millisecond {
		t.Errorf("the next request: %+v, want served in 11ms", s.st[1])
	}
}

func TestColdStart(t *testing.T) {
	m := testModel()
	s := newTestEngine(m, []Request{{Arrival: time.Second, Prompt: 100, Output: 1}})
	r := s.addReplica(false) // starting, ready at 30s
	s.runToEnd(t)
	if r.readyAt != 30*time.Second {
		t.Errorf("ready at %s, want 30s", r.readyAt)
	}
	// Queued at the gateway until the replica is ready, then prefilled.
	if got, want := s.st[0].ttft, 29*time.Second+20*time.Millisecond; got != want {
		t.Errorf("TTFT %s, want %s (cold start respected)", got, want)
	}
}

func newTestEngine(m Model, reqs []Request) *engine {
	return &engine{cfg: DefaultConfig(), m: m, reqs: reqs, st: make([]reqState, len(reqs)), byIP: map[string]*replica{},
		rng: newRand(1)}
}

// runToEnd drives arrivals, readiness and steps without a control loop.
func (s *engine) runToEnd(t *testing.T) {
	t.Helper()
	if err := s.loop(context.Background(), nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}
