package render

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// binaryFlags reads the flags a main package defines from its source:
// calls like fs.String("name", ...), flag.Duration("name", ...) or
// fs.BoolVar(&x, "name", ...). Reading the source keeps this test free of
// a 20 s link per binary; klog's flags (InitFlags) are added as "v".
func binaryFlags(t *testing.T, mainFile string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), mainFile, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); ok && x.Name == "klog" && sel.Sel.Name == "InitFlags" {
			flags["v"] = "Int"
			return true
		}
		kind, isVar := strings.CutSuffix(sel.Sel.Name, "Var")
		switch kind {
		case "String", "Bool", "Duration", "Int", "Int64", "Uint", "Uint64", "Float64":
		default:
			return true
		}
		i := 0
		if isVar {
			i = 1
		}
		if len(call.Args) <= i {
			return true
		}
		lit, ok := call.Args[i].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		name, err := strconv.Unquote(lit.Value)
		if err != nil {
			return true
		}
		flags[name] = kind
		return true
	})
	if len(flags) < 3 {
		t.Fatalf("%s: found only flags %v; has the flag code moved?", mainFile, flags)
	}
	return flags
}

// checkArgs parses container args against the flags: each --name=value
// names a flag and its value parses as the flag's type, as the flag
// package would. A bad arg makes the binary exit at start.
func checkArgs(flags map[string]string, args []string) error {
	for _, a := range args {
		rest, ok := strings.CutPrefix(a, "--")
		if !ok {
			return fmt.Errorf("%q: want --name=value", a)
		}
		name, value, hasValue := strings.Cut(rest, "=")
		kind, ok := flags[name]
		if !ok {
			return fmt.Errorf("%q: the binary has no flag %s", a, name)
		}
		if !hasValue && kind != "Bool" {
			return fmt.Errorf("%q: flag %s needs a value", a, name)
		}
		var err error
		switch kind {
		case "Bool":
			if hasValue {
				_, err = strconv.ParseBool(value)
			}
		case "Duration":
			_, err = time.ParseDuration(value)
		case "Int", "Int64":
			_, err = strconv.ParseInt(value, 0, 64)
		case "Uint", "Uint64":
			_, err = strconv.ParseUint(value, 0, 64)
		case "Float64":
			_, err = strconv.ParseFloat(value, 64)
		}
		if err != nil {
			return fmt.Errorf("%q: bad %s value: %w", a, kind, err)
		}
	}
	return nil
}

// TestChartFlags: the args the chart gives the device plugin and the
// scaler are flags their mains define, with values of the right type,
// under the chart's main options. (The scheduler takes kube-scheduler's
// flags: test/e2e checks those with kube-scheduler's own flag set.)
func TestChartFlags(t *testing.T) {
	dp := binaryFlags(t, "../../cmd/kubegpu-device-plugin/main.go")
	sc := binaryFlags(t, "../../cmd/kubegpu-scaler/main.go")
	if err := checkArgs(dp, []string{"--no-such-flag=1"}); err == nil {
		t.Fatal("an unknown flag passed the check")
	}
	if err := checkArgs(dp, []string{"--health-recovery-interval=30"}); err == nil {
		t.Fatal("a duration without a unit passed the check")
	}
	for _, values := range []map[string]any{
		nil,
		{"devicePlugin": map[string]any{"gpuSharing": true, "cdi": true, "nvml": "fake:dgx-h100", "extraArgs": []any{"--health-recovery=false"}}},
		{"scaler": map[string]any{"tls": map[string]any{"enabled": true, "secretName": "s", "clientCA": true}, "pollInterval": "2s"}},
	} {
		ms, err := Render(Options{ChartDir: chartDir, Values: values})
		if err != nil {
			t.Fatal(err)
		}
		objs := objects(t, ms)
		dpArgs := objs["DaemonSet/kubegpu-device-plugin"].(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0].Args
		if err := checkArgs(dp, dpArgs); err != nil {
			t.Errorf("device plugin (values %v): %v", values, err)
		}
		scArgs := objs["Deployment/kubegpu-scaler"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
		if err := checkArgs(sc, scArgs); err != nil {
			t.Errorf("scaler (values %v): %v", values, err)
		}
	}
}
