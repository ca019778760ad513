package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimAutoscaleCommand(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.csv")
	var b strings.Builder
	b.WriteString("TIMESTAMP,ContextTokens,GeneratedTokens\n")
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&b, "2023-11-16 18:%02d:%02d.%d,%d,%d\n", i/120, (i/2)%60, 5*(i%2), 500+i%300, 10+i%20)
	}
	if err := os.WriteFile(trace, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,x,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{args: []string{"--trace", trace, "--policy", "static,hpa-util", "--json", filepath.Join(dir, "o.json")}, wantOut: "hpa-util"},
		{args: []string{"--trace", trace, "--policy", "static", "--bound", "30s", "--json", filepath.Join(dir, "b.json")}, wantOut: "clairvoyant bound (30s windows"},
		{args: []string{"--trace", trace, "--slo-signal", "p99"}, wantErr: `slo signal "p99"`},
		{args: []string{"--trace", trace, "--policy", "nope"}, wantErr: `unknown policy "nope"`},
		{args: []string{"--trace", trace, "--speed", "0"}, wantErr: "speed 0"},
		{args: []string{"--trace", trace, "--kubegpu-trigger", "targetQueueDepth=x", "--policy", "kubegpu"}, wantErr: "targetQueueDepth"},
		{args: []string{"--trace", bad}, wantErr: `bad.csv:2:21: column "ContextTokens"`},
		{args: []string{"--trace", filepath.Join(dir, "missing.csv")}, wantErr: "open trace"},
	}
	for _, tt := range tests {
		cmd := newRootCommand()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"sim", "autoscale"}, tt.args...))
		err := cmd.Execute()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: error %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v (stderr %s)", tt.args, err, errOut.String())
			continue
		}
		if !strings.Contains(out.String(), tt.wantOut) || !strings.Contains(errOut.String(), "done") {
			t.Errorf("%v: stdout %q stderr %q", tt.args, out.String(), errOut.String())
		}
	}
	// --bound with --json writes the bound.
	js, err := os.ReadFile(filepath.Join(dir, "b.json"))
	if err != nil || !strings.Contains(string(js), `"clairvoyant_bound"`) || !strings.Contains(string(js), `"replicas_per_window"`) {
		t.Errorf("bound JSON: %v\n%s", err, js)
	}
}
