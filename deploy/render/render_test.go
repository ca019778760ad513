package render

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	root     = "../.."
	chartDir = "../helm/kubegpu"
)

// TestManifestsUpToDate fails while deploy/manifests/ or the chart's
// copy of the dashboards differ from a fresh render.
func TestManifestsUpToDate(t *testing.T) {
	files, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(root, f.Path))
		if err != nil {
			t.Errorf("%s: %v; run `make manifests`", f.Path, err)
			continue
		}
		if !bytes.Equal(got, f.Content) {
			t.Errorf("%s is out of date with deploy/helm/kubegpu and deploy/grafana; run `make manifests`", f.Path)
		}
	}
	// No stale dashboard copies in the chart either.
	copies, _ := filepath.Glob(filepath.Join(chartDir, "dashboards", "*.json"))
	sources, _ := filepath.Glob(filepath.Join(root, "deploy", "grafana", "*.json"))
	if len(copies) != len(sources) {
		t.Errorf("the chart holds %d dashboards, deploy/grafana %d; run `make manifests`", len(copies), len(sources))
	}
}

// objects decodes rendered manifests into typed API objects; kinds the
// client-go scheme does not know (ServiceMonitor) stay as maps.
func objects(t *testing.T, ms []Manifest) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, m := range ms {
		key := m.Kind + "/" + m.Name
		if _, dup := out[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(m.Content), nil, nil)
		if runtime.IsNotRegisteredError(err) {
			var u map[string]any
			if err := yaml.Unmarshal([]byte(m.Content), &u); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			out[key] = u
			continue
		}
		if err != nil {
			t.Fatalf("%s (%s): %v", key, m.Source, err)
		}
		out[key] = obj
	}
	return out
}

func podSpecs(objs map[string]any) map[string]*corev1.PodSpec {
	specs := map[string]*corev1.PodSpec{}
	for key, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			specs[key] = &w.Spec.Template.Spec
		case *appsv1.DaemonSet:
			specs[key] = &w.Spec.Template.Spec
		}
	}
	return specs
}

func TestRender(t *testing.T) {
	dashboards, err := filepath.Glob(filepath.Join(root, "deploy", "grafana", "*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	tests := []struct {
		name    string
		values  map[string]any
		wantErr string
		check   func(t *testing.T, objs map[string]any)
	}{{
		name: "defaults",
		check: func(t *testing.T, objs map[string]any) {
			for _, key := range []string{
				"DaemonSet/kubegpu-device-plugin", "Deployment/kubegpu-scheduler", "Deployment/kubegpu-scaler",
				"Service/kubegpu-scaler", "ConfigMap/kubegpu-scheduler-config", "ConfigMap/kubegpu-dashboards",
				"ClusterRoleBinding/kubegpu-scheduler-kube-scheduler", "ClusterRoleBinding/kubegpu-scheduler-volume-scheduler",
				"RoleBinding/kubegpu-scheduler-auth-reader", "Role/kubegpu-scheduler-leader-election",
				"PodDisruptionBudget/kubegpu-scheduler",
			} {
				if objs[key] == nil {
					t.Errorf("missing %s", key)
				}
			}
			if objs["Namespace/kubegpu-system"] != nil {
				t.Error("the chart creates its namespace by default; helm --create-namespace does that")
			}
			for key := range objs {
				if strings.HasPrefix(key, "ServiceMonitor/") {
					t.Errorf("%s rendered with serviceMonitors off", key)
				}
			}
			ds := objs["DaemonSet/kubegpu-device-plugin"].(*appsv1.DaemonSet)
			c := ds.Spec.Template.Spec.Containers[0]
			if env := c.Env[0]; env.Name != "NODE_NAME" || env.ValueFrom == nil || env.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("device plugin env[0] = %+v, want NODE_NAME from spec.nodeName", env)
			}
			if p := c.SecurityContext.Privileged; p == nil || *p {
				t.Error("device plugin is privileged by default")
			}
			hostPaths := map[string]bool{}
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.HostPath != nil {
					hostPaths[v.HostPath.Path] = true
				}
			}
			for _, p := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources"} {
				if !hostPaths[p] {
					t.Errorf("device plugin lacks hostPath %s", p)
				}
			}
			if len(ds.Spec.Template.Spec.Tolerations) == 0 || ds.Spec.Template.Spec.Affinity == nil {
				t.Error("device plugin has no GPU node affinity or tolerations")
			}
			cm := objs["ConfigMap/kubegpu-dashboards"].(*corev1.ConfigMap)
			if cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("dashboards ConfigMap labels %v, want grafana_dashboard=1", cm.Labels)
			}
			for _, d := range dashboards {
				want, err := os.ReadFile(d)
				if err != nil {
					t.Fatal(err)
				}
				got, ok := cm.Data[filepath.Base(d)]
				if !ok {
					t.Errorf("dashboards ConfigMap lacks %s", filepath.Base(d))
					continue
				}
				if !json.Valid([]byte(got)) || strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
					t.Errorf("dashboards ConfigMap %s differs from deploy/grafana", filepath.Base(d))
				}
			}
			args := objs["Deployment/kubegpu-scaler"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
			if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--tls") }) {
				t.Errorf("scaler TLS flags without tls.enabled: %v", args)
			}
		},
	}, {
		name:   "plain manifests: namespace created",
		values: map[string]any{"namespace": map[string]any{"create": true}},
		check: func(t *testing.T, objs map[string]any) {
			ns, ok := objs["Namespace/kubegpu-system"].(*corev1.Namespace)
			if !ok {
				t.Fatal("no Namespace")
			}
			if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
				t.Errorf("namespace labels %v: the device plugin's hostPath volumes need enforce=privileged", ns.Labels)
			}
		},
	}, {
		name:   "scaler mTLS",
		values: map[string]any{"scaler": map[string]any{"tls": map[string]any{"enabled": true, "secretName": "scaler-tls", "clientCA": true}}},
		check: func(t *testing.T, objs map[string]any) {
			spec := objs["Deployment/kubegpu-scaler"].(*appsv1.Deployment).Spec.Template.Spec
			args := spec.Containers[0].Args
			for _, want := range []string{"--tls-cert=/etc/kubegpu-scaler/tls/tls.crt", "--tls-key=/etc/kubegpu-scaler/tls/tls.key", "--tls-client-ca=/etc/kubegpu-scaler/tls/ca.crt"} {
				if !slices.Contains(args, want) {
					t.Errorf("scaler args %v lack %s", args, want)
				}
			}
			if len(spec.Volumes) != 1 || spec.Volumes[0].Secret == nil || spec.Volumes[0].Secret.SecretName != "scaler-tls" {
				t.Errorf("scaler volumes %+v, want the Secret scaler-tls", spec.Volumes)
			}
			if spec.SecurityContext.FSGroup == nil {
				t.Error("no fsGroup: the non-root scaler cannot read the 0440 Secret files")
			}
		},
	}, {
		name:    "scaler TLS without a Secret",
		values:  map[string]any{"scaler": map[string]any{"tls": map[string]any{"enabled": true}}},
		wantErr: "scaler.tls.secretName",
	}, {
		name:    "misspelt value (values.schema.json)",
		values:  map[string]any{"devicePlugn": map[string]any{"enabled": false}},
		wantErr: "devicePlugn",
	}, {
		name:    "value of the wrong type",
		values:  map[string]any{"scheduler": map[string]any{"replicas": "two"}},
		wantErr: "replicas",
	}, {
		name:    "not a duration",
		values:  map[string]any{"scaler": map[string]any{"pollInterval": "5 seconds"}},
		wantErr: "pollInterval",
	}, {
		name:   "one scheduler replica: no PodDisruptionBudget",
		values: map[string]any{"scheduler": map[string]any{"replicas": 1}},
		check: func(t *testing.T, objs map[string]any) {
			if objs["PodDisruptionBudget/kubegpu-scheduler"] != nil {
				t.Error("a PodDisruptionBudget with minAvailable 1 would block every drain of the only replica")
			}
		},
	}, {
		name:   "scaler without the pods source",
		values: map[string]any{"scaler": map[string]any{"podsSource": false}},
		check: func(t *testing.T, objs map[string]any) {
			if objs["ClusterRole/kubegpu-scaler"] != nil {
				t.Error("scaler ClusterRole rendered without the pods source")
			}
			spec := objs["Deployment/kubegpu-scaler"].(*appsv1.Deployment).Spec.Template.Spec
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("scaler mounts a token it has no rights for")
			}
		},
	}, {
		name:   "ServiceMonitors",
		values: map[string]any{"serviceMonitors": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}},
		check: func(t *testing.T, objs map[string]any) {
			for _, c := range []string{"device-plugin", "scheduler", "scaler"} {
				sm, ok := objs["ServiceMonitor/kubegpu-"+c].(map[string]any)
				if !ok {
					t.Errorf("no ServiceMonitor for %s", c)
					continue
				}
				if l := sm["metadata"].(map[string]any)["labels"].(map[string]any); l["release"] != "prom" {
					t.Errorf("ServiceMonitor %s labels %v lack release=prom", c, l)
				}
			}
		},
	}, {
		name:   "privileged device plugin, GPUPack args, no dashboards",
		values: map[string]any{"devicePlugin": map[string]any{"privileged": true}, "scheduler": map[string]any{"gpuPackArgs": map[string]any{"multiGPUInterconnect": "NVLink"}}, "dashboards": map[string]any{"enabled": false}},
		check: func(t *testing.T, objs map[string]any) {
			c := objs["DaemonSet/kubegpu-device-plugin"].(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0]
			if p := c.SecurityContext.Privileged; p == nil || !*p {
				t.Error("devicePlugin.privileged=true did not make the container privileged")
			}
			cfg := objs["ConfigMap/kubegpu-scheduler-config"].(*corev1.ConfigMap).Data["kubegpu-scheduler-config.yaml"]
			if !strings.Contains(cfg, "- args:\n      multiGPUInterconnect: NVLink\n    name: GPUPack") {
				t.Errorf("scheduler config lacks the GPUPack args:\n%s", cfg)
			}
			if objs["ConfigMap/kubegpu-dashboards"] != nil {
				t.Error("dashboards ConfigMap rendered with dashboards.enabled=false")
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := Render(Options{ChartDir: chartDir, Values: tc.values})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			objs := objects(t, ms)
			checkHardening(t, objs)
			tc.check(t, objs)
		})
	}
}

// checkHardening holds for every rendering: least-privilege RBAC and
// locked-down containers.
func checkHardening(t *testing.T, objs map[string]any) {
	t.Helper()
	for key, o := range objs {
		var rules []rbacv1.PolicyRule
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			rules = r.Rules
		case *rbacv1.Role:
			rules = r.Rules
		}
		for _, rule := range rules {
			for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames} {
				if slices.Contains(list, "*") {
					t.Errorf("%s: wildcard in rule %+v", key, rule)
				}
			}
		}
	}
	for key, spec := range podSpecs(objs) {
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s/%s: no securityContext", key, c.Name)
				continue
			}
			if sc.Privileged != nil && *sc.Privileged {
				continue // asked for with devicePlugin.privileged
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: root filesystem writable", key, c.Name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s/%s: privilege escalation allowed", key, c.Name)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: capabilities %+v, want all dropped", key, c.Name, sc.Capabilities)
			}
			// Only the device plugin runs as root (host sockets).
			if !strings.HasPrefix(key, "DaemonSet/") && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
				t.Errorf("%s/%s: may run as root", key, c.Name)
			}
		}
	}
}

// TestRenderReleaseName: names follow the release, the scheduler's
// Lease RBAC follows the configured Lease name, and a bad value type is
// an error, not a silently wrong manifest.
func TestRenderReleaseName(t *testing.T) {
	ms, err := Render(Options{ChartDir: chartDir, ReleaseName: "gpu", Namespace: "infra",
		Values: map[string]any{"scheduler": map[string]any{"leaderElection": map[string]any{"resourceName": "my-lease"}}}})
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, ms)
	if objs["Deployment/gpu-kubegpu-scaler"] == nil || objs["DaemonSet/gpu-kubegpu-device-plugin"] == nil {
		t.Errorf("objects %v, want names prefixed gpu-kubegpu-", keys(objs))
	}
	role := objs["Role/gpu-kubegpu-scheduler-leader-election"].(*rbacv1.Role)
	if role.Namespace != "infra" || !slices.Contains(role.Rules[0].ResourceNames, "my-lease") {
		t.Errorf("leader election Role %+v, want namespace infra and the Lease my-lease", role)
	}
	cfg := objs["ConfigMap/gpu-kubegpu-scheduler-config"].(*corev1.ConfigMap).Data["kubegpu-scheduler-config.yaml"]
	if !strings.Contains(cfg, "resourceNamespace: infra") || !strings.Contains(cfg, "resourceName: my-lease") {
		t.Errorf("scheduler config leader election does not follow the release:\n%s", cfg)
	}

	if _, err := Render(Options{ChartDir: chartDir, Values: map[string]any{"scheduler": "yes"}}); err == nil {
		t.Error("scheduler: \"yes\" rendered without error")
	}
	if _, err := Render(Options{ChartDir: "testdata/no-such-chart"}); err == nil {
		t.Error("a missing chart rendered without error")
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
