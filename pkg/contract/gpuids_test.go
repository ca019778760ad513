package contract

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseGPUIDs(t *testing.T) {
	tests := []struct {
		in      string
		want    GPUAssignment
		wantErr string
	}{
		{in: "GPU-a", want: GPUAssignment{UUIDs: []string{"GPU-a"}}},
		{in: "GPU-a,GPU-b", want: GPUAssignment{UUIDs: []string{"GPU-a", "GPU-b"}}},
		{in: "GPU-a:250", want: GPUAssignment{UUIDs: []string{"GPU-a"}, Milli: 250}},
		{in: "GPU-a:999", want: GPUAssignment{UUIDs: []string{"GPU-a"}, Milli: 999}},
		{in: "", wantErr: "empty"},
		{in: "GPU-a,,GPU-b", wantErr: "empty GPU ID"},
		{in: "GPU-a,GPU-a", wantErr: "twice"},
		{in: "GPU-a, GPU-b", wantErr: "whitespace"},
		{in: "GPU-a:0", wantErr: "not 1-999"},
		{in: "GPU-a:1000", wantErr: "not 1-999"},
		{in: "GPU-a:abc", wantErr: "not 1-999"},
		{in: "GPU-a,GPU-b:10", wantErr: "exactly one GPU"},
		{in: ":10", wantErr: "exactly one GPU"},
		{in: strings.Repeat("g,", 64) + "g", wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseGPUIDs(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadGPUIDs) {
					t.Fatalf("ParseGPUIDs(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseGPUIDs(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseGPUIDs(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func FuzzParseGPUIDs(f *testing.F) {
	for _, s := range []string{"GPU-a", "GPU-a,GPU-b", "GPU-a:250", ":", ",", "a:b:c"} {
		f.Add(s)
	}
	f.Add("GPU-a:+5")
	f.Add("GPU-a:0999")
	f.Add(strings.Repeat("g,", 63) + "g")
	// Whatever is accepted must be safe to book: 1-64 distinct, non-empty
	// UUIDs without separators or whitespace, a share in 1-999 of exactly
	// one GPU, and it must read back the same after String().
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseGPUIDs(s)
		if err != nil {
			if !errors.Is(err, ErrBadGPUIDs) {
				t.Fatalf("error %v does not wrap ErrBadGPUIDs", err)
			}
			return
		}
		if len(a.UUIDs) < 1 || len(a.UUIDs) > maxAssignedGPUs {
			t.Fatalf("accepted %d GPUs from %q", len(a.UUIDs), s)
		}
		if a.Milli != 0 && (a.Milli < 1 || a.Milli > 999 || len(a.UUIDs) != 1) {
			t.Fatalf("accepted share %d of %d GPUs from %q", a.Milli, len(a.UUIDs), s)
		}
		seen := map[string]bool{}
		for _, u := range a.UUIDs {
			if u == "" || seen[u] || strings.ContainsAny(u, ",: \t\r\n") {
				t.Fatalf("accepted GPU ID %q from %q", u, s)
			}
			seen[u] = true
		}
		again, err := ParseGPUIDs(a.String())
		if err != nil || !reflect.DeepEqual(a, again) {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, a, a.String(), again, err)
		}
	})
}
