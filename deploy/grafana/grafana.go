// Package grafana reads kubegpu's Grafana dashboards (the JSON files in
// this folder) and finds the metric names their PromQL queries read, so a
// test can check each one against what the components really register.
//
// The metric names come from a lexical scan, not a full PromQL parser:
// prometheus/prometheus's promql/parser needs client_golang v1.25 (from
// v0.316), which KEDA v2.21 does not build with. The scan follows PromQL's
// lexical rules closely enough for that job: string literals, label
// matchers ({...}), ranges and subqueries ([...]) and the label lists of
// by/without/on/ignoring/group_left/group_right are skipped; an identifier
// followed by "(" is a function or aggregation; keywords are known; every
// other identifier is a metric name and must be a valid one under
// prometheus/common/model's legacy rules. {__name__="..."} selectors count
// too. Unbalanced brackets and unterminated strings are errors.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
)

// Query is one PromQL expression of a dashboard and where it sits.
type Query struct {
	// Where names the panel and target (or the template variable).
	Where string
	Expr  string
}

// Dashboard is the part of a dashboard's JSON model this package reads.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; rows nest panels.
type Panel struct {
	ID          int      `json:"id"`
	Type        string   `json:"type"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Targets     []Target `json:"targets"`
	Panels      []Panel  `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

// Variable is a template variable; query variables hold PromQL.
type Variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

// Load reads a dashboard file.
func Load(path string) (*Dashboard, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if d.UID == "" || d.Title == "" {
		return nil, fmt.Errorf("%s: a dashboard needs a uid and a title", path)
	}
	return &d, nil
}

// AllPanels returns the dashboard's panels, those inside rows included,
// rows themselves excluded.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\s*\((.*)\)\s*$`)
var queryResultRE = regexp.MustCompile(`^\s*query_result\s*\((.*)\)\s*$`)

// Queries returns every PromQL expression of the dashboard: panel
// targets and the queries of template variables (label_values(SELECTOR,
// LABEL) contributes SELECTOR, query_result(EXPR) EXPR).
func (d *Dashboard) Queries() ([]Query, error) {
	var out []Query
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				return nil, fmt.Errorf("panel %q target %s: empty expression", p.Title, t.RefID)
			}
			out = append(out, Query{Where: fmt.Sprintf("panel %q target %s", p.Title, t.RefID), Expr: t.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := variableQuery(v.Query)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		where := "variable " + v.Name
		if m := labelValuesRE.FindStringSubmatch(q); m != nil {
			// The selector is everything before the last top-level comma;
			// label_values(label) alone reads no metric.
			if i := lastTopLevelComma(m[1]); i >= 0 {
				out = append(out, Query{Where: where, Expr: m[1][:i]})
			}
			continue
		}
		if m := queryResultRE.FindStringSubmatch(q); m != nil {
			out = append(out, Query{Where: where, Expr: m[1]})
			continue
		}
		return nil, fmt.Errorf("variable %s: query %q is neither label_values(...) nor query_result(...)", v.Name, q)
	}
	return out, nil
}

// variableQuery accepts both forms Grafana writes: a string, or an object
// with a "query" string.
func variableQuery(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", fmt.Errorf("query: %w", err)
	}
	return o.Query, nil
}

func lastTopLevelComma(s string) int {
	depth, last := 0, -1
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '{' || c == '[':
			depth++
		case c == ')' || c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			last = i
		}
	}
	return last
}

// Grafana's built-in interval variables stand for a duration; any other
// variable stands for a number (a percentile, an SLO) or sits inside a
// label matcher's string, where its value does not matter here.
var (
	intervalVarRE = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?`)
	anyVarRE      = regexp.MustCompile(`\$\{[A-Za-z0-9_]+(:[A-Za-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_]+\]\]`)
	// A variable right before a label matcher names the metric itself,
	// which cannot be checked.
	varAsMetricRE = regexp.MustCompile(`(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\[\[[A-Za-z0-9_]+\]\])\s*\{`)
)

var (
	// Keywords that take a parenthesized label list.
	labelListKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	// Binary operator keywords, modifiers and aggregation operators
	// (which PromQL lexes as keywords: "sum by (x) (...)" has no "("
	// right after sum).
	keywords = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
		"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)

// Selector is one vector selector of an expression: the metric and the
// label names its matchers use (foo{a="x", b=~"y"} gives foo, [a b]).
type Selector struct {
	Metric string
	Labels []string
}

// MetricNames returns the metric names expr reads, sorted and unique.
func MetricNames(expr string) ([]string, error) {
	sels, err := Selectors(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []string{}
	for _, sel := range sels {
		if !seen[sel.Metric] {
			seen[sel.Metric] = true
			out = append(out, sel.Metric)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Selectors returns the vector selectors of expr in order of appearance.
// A selector of the form {__name__="foo", ...} counts as metric foo;
// one whose metric name is not fixed ({__name__=~"..."}) is left out.
func Selectors(expr string) ([]Selector, error) {
	if m := varAsMetricRE.FindString(expr); m != "" {
		return nil, fmt.Errorf("a template variable names the metric (%q); dashboards must name metrics literally", m)
	}
	s := intervalVarRE.ReplaceAllString(expr, "5m")
	s = anyVarRE.ReplaceAllString(s, "1")

	var sels []Selector
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			// A selector without a metric name in front.
			end, name, labels, err := matchers(s, i)
			if err != nil {
				return nil, err
			}
			if name != "" {
				sels = append(sels, Selector{Metric: name, Labels: labels})
			}
			i = end
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unterminated [ at %d in %q", i, expr)
			}
			i += end + 1
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d in %q", i, expr)
			}
			i++
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			i = skipNumber(s, i)
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			ident := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n') {
				k++
			}
			next := byte(0)
			if k < len(s) {
				next = s[k]
			}
			lower := strings.ToLower(ident)
			switch {
			case slices.Contains(labelListKeywords, lower):
				if next == '(' {
					end := strings.IndexByte(s[k:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unterminated label list after %s in %q", ident, expr)
					}
					j = k + end + 1
				}
			case slices.Contains(keywords, lower):
			case next == '(':
				// A function or an aggregation; its "(" is counted above.
			default:
				if !model.IsValidLegacyMetricName(ident) {
					return nil, fmt.Errorf("%q is not a valid metric name in %q", ident, expr)
				}
				sel := Selector{Metric: ident}
				if next == '{' {
					end, name, labels, err := matchers(s, k)
					if err != nil {
						return nil, err
					}
					if name != "" {
						return nil, fmt.Errorf("%s{__name__=...} names the metric twice in %q", ident, expr)
					}
					sel.Labels = labels
					j = end
				}
				sels = append(sels, sel)
			}
			i = j
		case strings.IndexByte("+-*/%^=!<>,@", c) >= 0:
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d in %q", c, i, expr)
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return sels, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// skipString returns the index after the string literal opening at i.
func skipString(s string, i int) (int, error) {
	quote := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && quote != '`':
			j++
		case s[j] == quote:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d in %q", i, s)
}

// skipNumber skips a number or duration: 0.95, 1e-3, 0x1f, 5m, 1h30m.
func skipNumber(s string, i int) int {
	j := i
	for j < len(s) {
		c := s[j]
		if isIdentChar(c) || c == '.' {
			j++
			continue
		}
		if (c == '+' || c == '-') && j > i && (s[j-1] == 'e' || s[j-1] == 'E') && !strings.HasPrefix(s[i:], "0x") {
			j++
			continue
		}
		break
	}
	return j
}

// matchers skips the label matchers opening at i and returns the metric
// name an equality matcher on __name__ gives, if any, and the other
// matchers' label names.
func matchers(s string, i int) (end int, name string, labels []string, err error) {
	j := i + 1
	for {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == ',') {
			j++
		}
		if j >= len(s) {
			return 0, "", nil, fmt.Errorf("unterminated { at %d in %q", i, s)
		}
		if s[j] == '}' {
			return j + 1, name, labels, nil
		}
		// label name (or a quoted UTF-8 one)
		start := j
		var label string
		if s[j] == '"' {
			k, err := skipString(s, j)
			if err != nil {
				return 0, "", nil, err
			}
			label, j = s[start+1:k-1], k
		} else {
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			label = s[start:j]
		}
		for j < len(s) && s[j] == ' ' {
			j++
		}
		opStart := j
		for j < len(s) && strings.IndexByte("=!~", s[j]) >= 0 {
			j++
		}
		op := s[opStart:j]
		if label == "" || (op != "=" && op != "!=" && op != "=~" && op != "!~") {
			if op == "" && label != "" {
				// {"metric_name"}: a bare quoted name selects the metric.
				if s[start] == '"' {
					name = label
					continue
				}
			}
			return 0, "", nil, fmt.Errorf("bad label matcher at %d in %q", start, s)
		}
		for j < len(s) && s[j] == ' ' {
			j++
		}
		if j >= len(s) || (s[j] != '"' && s[j] != '\'' && s[j] != '`') {
			return 0, "", nil, fmt.Errorf("label matcher %s%s without a string value in %q", label, op, s)
		}
		k, err := skipString(s, j)
		if err != nil {
			return 0, "", nil, err
		}
		switch {
		case label == model.MetricNameLabel && op == "=":
			name = s[j+1 : k-1]
		case label != model.MetricNameLabel:
			labels = append(labels, label)
		}
		j = k
	}
}
