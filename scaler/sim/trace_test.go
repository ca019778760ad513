package sim

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestReadTrace(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantN   int
		wantErr string
	}{
		{name: "azure rows", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n", wantN: 2},
		{name: "reordered columns, no final newline", in: "GeneratedTokens,TIMESTAMP,ContextTokens\n10,2023-11-16 18:17:03.97,4808", wantN: 1},
		{name: "empty", in: "", wantErr: "t.csv:1:1: empty file"},
		{name: "missing column", in: "TIMESTAMP,ContextTokens\n", wantErr: `t.csv:1:1: missing column "GeneratedTokens"`},
		{name: "bad timestamp", in: "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n", wantErr: `t.csv:2:1: column "TIMESTAMP": bad timestamp`},
		{name: "bad tokens", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12x,1\n", wantErr: `t.csv:2:24: column "ContextTokens": "12x" is not an integer`},
		{name: "negative output", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12,-1\n", wantErr: `t.csv:2:27: column "GeneratedTokens": -1 out of range`},
		{name: "zero prompt", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,0,1\n", wantErr: `column "ContextTokens": 0 out of range`},
		{name: "short row", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,5\n", wantErr: `t.csv:2:1: column "GeneratedTokens": row has 2 fields`},
		{name: "bad quoting", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n\"2023,1,1\n", wantErr: `t.csv:2:11: extraneous or missing " in quoted-field`},
		{name: "header only", in: "TIMESTAMP,ContextTokens,GeneratedTokens\n", wantErr: "no requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ReadTrace("t.csv", strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Requests) != tt.wantN {
				t.Errorf("%d requests, want %d", len(tr.Requests), tt.wantN)
			}
		})
	}
}

func TestReadTraceSortsAndScales(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:10,30,3\n2023-11-16 18:00:00,10,1\n2023-11-16 18:00:04,20,2\n"
	tr, err := ReadTrace("t.csv", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{0, 10, 1}, {4 * time.Second, 20, 2}, {10 * time.Second, 30, 3}}
	for i, r := range tr.Requests {
		if r != want[i] {
			t.Errorf("request %d: %+v, want %+v", i, r, want[i])
		}
	}
	fast := tr.Scaled(4)
	if fast[2].Arrival != 2500*time.Millisecond || fast[2].Prompt != 30 {
		t.Errorf("speed 4: %+v, want arrival 2.5s", fast[2])
	}
}

// FuzzReadTrace: any input gives a trace or an error, never a panic, and
// a trace that loads can be simulated.
func FuzzReadTrace(f *testing.F) {
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n")
	f.Add("GeneratedTokens,TIMESTAMP,ContextTokens\n10,2023-11-16T18:17:03Z,4808")
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n\"2023-11-16 18:17:03\",\"1\",\"0\"\n")
	f.Add("\ufeffTIMESTAMP,ContextTokens,GeneratedTokens,x\n2023-11-16 18:17:03,1,1,y\n2023-11-16 18:17:02,2,2\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ReadTrace("f.csv", strings.NewReader(in))
		if err != nil {
			return
		}
		if len(tr.Requests) == 0 {
			t.Fatal("trace without requests and without error")
		}
		for i, r := range tr.Requests {
			if r.Prompt < 1 || r.Output < 0 || r.Arrival < 0 || (i > 0 && r.Arrival < tr.Requests[i-1].Arrival) {
				t.Fatalf("bad request %d: %+v", i, r)
			}
		}
		if len(tr.Requests) > 50 || tr.Duration() > time.Hour {
			return // keep each fuzz input cheap
		}
		cfg := DefaultConfig()
		cfg.Timeline = 0
		if _, err := Run(context.Background(), cfg, tr.Requests, Setting{Policy: PolicyStatic, Value: 1}); err != nil {
			t.Fatalf("simulate: %v", err)
		}
	})
}
