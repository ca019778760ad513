package source

import (
	"math"
	"strings"
	"testing"

	"github.com/kubegpu/kubegpu/scaler/metadata"
)

func TestParseReplicaRejects(t *testing.T) {
	m := parse(t, "targetLatency", "1s")
	const gauges = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\n# TYPE vllm:time_to_first_token_seconds histogram\n"
	tests := []struct {
		name, body, want string
	}{
		{"not text format", "{}", "parse"},
		// Crashed expfmt's parser (nil dereference); see ParseText.
		{"parser panic", "#TYPE A0 gAuge\n{}", "panicked"},
		{"queue missing", "vllm:num_requests_running 2\n", "vllm:num_requests_waiting not found"},
		{"queue negative", "vllm:num_requests_waiting -1\nvllm:num_requests_running 2\n", "invalid value"},
		{"queue sums to Inf", "vllm:num_requests_waiting{a=\"1\"} 1e308\nvllm:num_requests_waiting{a=\"2\"} 1e308\nvllm:num_requests_running 2\n", "sums to"},
		{"histogram missing", "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\n", "histogram vllm:time_to_first_token_seconds not found"},
		{"histogram counts fall", gauges +
			"vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 5\nvllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 3\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 6\nvllm:time_to_first_token_seconds_count 6\nvllm:time_to_first_token_seconds_sum 1\n",
			"does not follow"},
		{"histogram bounds out of order", gauges +
			"vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 3\nvllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 3\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 6\nvllm:time_to_first_token_seconds_count 6\nvllm:time_to_first_token_seconds_sum 1\n",
			"does not follow"},
		{"histogram negative count", gauges +
			"vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} -3\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 6\nvllm:time_to_first_token_seconds_count 6\nvllm:time_to_first_token_seconds_sum 1\n",
			"negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := ParseReplica([]byte(tt.body), m)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzParseReplica feeds arbitrary bodies to the scrape parser: it must not
// panic, and what it accepts must be usable (finite non-negative gauges, a
// valid cumulative histogram whose percentile is a number).
func FuzzParseReplica(f *testing.F) {
	f.Add(vllmText(3, 5, []int{1, 2, 3, 4}))
	f.Add(tritonText)
	f.Add(tgiText)
	f.Add(sglangText)
	f.Add("vllm:num_requests_waiting 1\nvllm:num_requests_running 2\n# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 1\n")
	metas := []struct{ kv []string }{
		{[]string{"targetLatency", "1s"}},
		{[]string{"preset", "triton", "targetLatency", "1s"}},
		{[]string{"preset", "tgi", "targetLatency", "1s", "latencySignal", "e2e"}},
		{[]string{"preset", "sglang"}},
	}
	var parsed []*metadata.Metadata
	for _, mk := range metas {
		parsed = append(parsed, parse(f, mk.kv...))
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, m := range parsed {
			q, r, lat, err := ParseReplica([]byte(body), m)
			if err != nil {
				continue
			}
			for _, v := range []float64{q, r} {
				if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("accepted gauge value %v", v)
				}
			}
			if m.TargetLatency == 0 {
				continue
			}
			if err := lat.validate(); err != nil {
				t.Fatalf("accepted histogram is invalid: %v", err)
			}
			if len(lat) == 0 || !math.IsInf(lat[len(lat)-1].UpperBound, 1) {
				t.Fatalf("histogram without +Inf bucket: %v", lat)
			}
			if v, ok := lat.Quantile(0.95); ok && math.IsNaN(v) {
				t.Fatalf("percentile NaN from %v", lat)
			}
		}
	})
}

// FuzzDecodeVector feeds arbitrary JSON to the Prometheus response decoder.
func FuzzDecodeVector(f *testing.F) {
	f.Add(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"3"]}]}}`)
	f.Add(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`)
	f.Add(`{"status":"error","errorType":"bad_data","error":"parse error"}`)
	f.Add(`{"status":"success","data":{"resultType":"matrix","result":[]}}`)
	f.Fuzz(func(t *testing.T, body string) {
		out, err := decodeVector([]byte(body))
		if err != nil {
			return
		}
		if out == nil {
			t.Fatal("nil result without error")
		}
	})
}
