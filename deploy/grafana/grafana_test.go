package grafana

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr    string
		want    []string
		wantErr string
	}{
		{expr: `up`, want: []string{"up"}},
		{expr: `sum by (node, gpu) (rate(kubegpu_gpu_xid_errors_total{node=~"$node"}[$__rate_interval]))`, want: []string{"kubegpu_gpu_xid_errors_total"}},
		{expr: `histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{namespace="a", pod=~"b-.*"}[5m])))`, want: []string{"vllm:time_to_first_token_seconds_bucket"}},
		// Label names in by/on/group_left lists and matchers are not metrics.
		{expr: `sum by (node) (a{resource="nvidia_com_gpu", node!=""} * on (namespace, pod) group_left () max by (namespace, pod) (b{phase=~"Pending|Running"}))`, want: []string{"a", "b"}},
		{expr: `x * on(a) group_left(b) y`, want: []string{"x", "y"}},
		{expr: `sum(x) without (instance)`, want: []string{"x"}},
		{expr: `a and on (node) (b > 0) or vector(0) unless c`, want: []string{"a", "b", "c"}},
		{expr: `count(a == bool 1) offset 1h30m`, want: []string{"a"}},
		{expr: `rate(a[5m:1m] @ end())`, want: []string{"a"}},
		{expr: `1e-3 * x + 0x1F - .5 + Inf + NaN`, want: []string{"x"}},
		{expr: `{__name__="kube_pod_info", namespace="x"}`, want: []string{"kube_pod_info"}},
		{expr: `{__name__=~"kube_.*"}`, want: []string{}},
		{expr: `label_replace(x, "dst", "$1", "src", "(.*)")`, want: []string{"x"}},
		{expr: `topk(5, x) # a comment with words`, want: []string{"x"}},
		{expr: `vector($slo)`, want: []string{}},
		{expr: `histogram_quantile(${quantile}, sum by (le) (rate(h_bucket[${__interval}])))`, want: []string{"h_bucket"}},
		{expr: `time() - kubegpu_scaler_snapshot_timestamp_seconds{scaledobject="keda-hpa-$scaledobject"}`, want: []string{"kubegpu_scaler_snapshot_timestamp_seconds"}},
		{expr: `sum(x{a="}{)("})`, want: []string{"x"}},
		{expr: `sum(x`, wantErr: "unbalanced"},
		{expr: `sum(x))`, wantErr: "unbalanced"},
		{expr: `x{a="b}`, wantErr: "unterminated"},
		{expr: `x{a}`, wantErr: "bad label matcher"},
		{expr: `rate(x[5m)`, wantErr: "unterminated ["},
		{expr: `$metric{a="b"}`, wantErr: "template variable names the metric"},
		{expr: `x ; y`, wantErr: "unexpected"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			got, err := MetricNames(tc.expr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSelectors(t *testing.T) {
	got, err := Selectors(`sum by (le) (rate(h_bucket{job=~"$job", profile="x"}[5m])) / on (node) group_left () count by (node) (g{node!=""}) + up + {__name__="m", a="b"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Selector{{"h_bucket", []string{"job", "profile"}}, {"g", []string{"node"}}, {"up", nil}, {"m", []string{"a"}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := Selectors(`m{__name__="n"}`); err == nil {
		t.Error("a selector naming its metric twice passed")
	}
}

// TestDashboards: every dashboard in this folder loads, every panel is
// described and queries something, and every query scans.
func TestDashboards(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	uids := map[string]string{}
	for _, f := range files {
		d, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %s", f, other, d.UID)
		}
		uids[d.UID] = f
		for _, p := range d.AllPanels() {
			if p.Title == "" || p.Description == "" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %d %q needs a title, a description and a query", f, p.ID, p.Title)
			}
		}
		qs, err := d.Queries()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, q := range qs {
			names, err := MetricNames(q.Expr)
			if err != nil {
				t.Errorf("%s %s: %v", f, q.Where, err)
			}
			if len(names) == 0 && !strings.HasPrefix(q.Expr, "vector(") {
				t.Errorf("%s %s: %q reads no metric", f, q.Where, q.Expr)
			}
		}
	}
}

func TestQueriesOfVariables(t *testing.T) {
	d := &Dashboard{}
	d.Templating.List = []Variable{
		{Name: "a", Type: "query", Query: []byte(`"label_values(kubegpu_gpu_healthy{x=\"a,b\"}, node)"`)},
		{Name: "b", Type: "query", Query: []byte(`{"query": "label_values(node)"}`)},
		{Name: "c", Type: "query", Query: []byte(`{"query": "query_result(topk(3, y))"}`)},
		{Name: "d", Type: "custom", Query: []byte(`"1,2"`)},
	}
	qs, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, q := range qs {
		exprs = append(exprs, q.Expr)
	}
	if want := []string{`kubegpu_gpu_healthy{x="a,b"}`, `topk(3, y)`}; !slices.Equal(exprs, want) {
		t.Errorf("got %q, want %q", exprs, want)
	}
	d.Templating.List = []Variable{{Name: "e", Type: "query", Query: []byte(`"metrics(kube_.*)"`)}}
	if _, err := d.Queries(); err == nil {
		t.Error("an unknown variable query passed")
	}
}

// TestDocsDescribePanels: docs/dashboards.md names every dashboard and
// every panel, so the page cannot fall behind the JSON.
func TestDocsDescribePanels(t *testing.T) {
	doc, err := os.ReadFile("../../docs/dashboards.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.json")
	for _, f := range files {
		d, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), "## "+d.Title) {
			t.Errorf("docs/dashboards.md has no section %q", d.Title)
		}
		for _, p := range d.AllPanels() {
			if !strings.Contains(string(doc), "| "+p.Title+" (") {
				t.Errorf("docs/dashboards.md does not describe panel %q of %s", p.Title, f)
			}
		}
	}
}
