package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// loadManifests reads every object of a multi-document YAML file.
func loadManifests(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("example: %w", err)
	}
	defer f.Close()
	dec := yamlutil.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("example %s: %w", path, err)
		}
		if b := bytes.TrimSpace(raw.Raw); len(b) == 0 || string(b) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw.Raw); err != nil {
			return nil, fmt.Errorf("example %s: %w", path, err)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("example %s: no objects", path)
	}
	return out, nil
}

// typed converts an object read from YAML into its Go type; unknown
// fields are an error, as the apiserver's strict field validation would
// make them.
func typed[T any](u *unstructured.Unstructured) (*T, error) {
	var obj T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &obj, true); err != nil {
		return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return &obj, nil
}

// exampleObjects loads one example file and returns its objects of kind,
// by name.
func (d *demo) exampleObjects(file string) (map[string][]*unstructured.Unstructured, error) {
	objs, err := loadManifests(filepath.Join(d.opts.Examples, file))
	if err != nil {
		return nil, err
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetNamespace() == "" {
			o.SetNamespace(metav1.NamespaceDefault)
		}
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
	}
	return byKind, nil
}

func (d *demo) createService(ctx context.Context, u *unstructured.Unstructured) error {
	svc, err := typed[v1.Service](u)
	if err != nil {
		return err
	}
	if _, err := d.client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

// gangResult is how a gang was placed.
type gangResult struct {
	Name    string
	Members int
	Nodes   []string
	Domain  string
	// BoundAfter is from the last member's creation to all bound.
	BoundAfter time.Duration
}

// applyGang applies examples/gang-training: the headless Service and the
// Indexed Job. No kube-controller-manager runs, so the demo creates the
// Job's pods the way the Job controller does (names, labels, completion
// index annotation, hostname, controller reference); the gang plugin
// finds the Job through that reference and reads its parallelism.
func (d *demo) applyGang(ctx context.Context) error {
	objs, err := d.exampleObjects("gang-training/job.yaml")
	if err != nil {
		return err
	}
	for _, s := range objs["Service"] {
		if err := d.createService(ctx, s); err != nil {
			return err
		}
	}
	if len(objs["Job"]) != 1 {
		return fmt.Errorf("gang-training/job.yaml: want one Job, found %d", len(objs["Job"]))
	}
	job, err := typed[batchv1.Job](objs["Job"][0])
	if err != nil {
		return err
	}
	job, err = d.client.BatchV1().Jobs(job.Namespace).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	parallelism := int(ptr.Deref(job.Spec.Parallelism, 1))
	var pods []*v1.Pod
	for i := range parallelism {
		pod := jobPod(job, i)
		created, err := d.client.CoreV1().Pods(job.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create job pod %d: %w", i, err)
		}
		pods = append(pods, created)
	}
	lastCreated := time.Now()
	bound, err := d.waitBound(ctx, pods, 60*time.Second)
	if err != nil {
		return fmt.Errorf("gang not placed: %w", err)
	}
	g := gangResult{Name: "job/" + job.Name, Members: len(bound), BoundAfter: time.Since(lastCreated)}
	blocks := map[string]bool{}
	for _, p := range bound {
		if !slices.Contains(g.Nodes, p.Spec.NodeName) {
			g.Nodes = append(g.Nodes, p.Spec.NodeName)
		}
		if n := d.byName[p.Spec.NodeName]; n != nil {
			blocks[n.block] = true
		}
	}
	if len(blocks) == 1 {
		for b := range blocks {
			g.Domain = labelBlock + "=" + b
		}
	}
	d.logf("gang %s: %d members bound %s after the last was created, on %s (%s)", g.Name, g.Members,
		g.BoundAfter.Round(time.Millisecond), strings.Join(g.Nodes, ", "), orText(g.Domain, "several blocks"))
	for _, p := range bound {
		pl, err := d.admit(ctx, p, "gang-training", "")
		if err != nil {
			return err
		}
		d.logPlacement(pl)
	}
	if len(g.Nodes) != parallelism {
		return fmt.Errorf("gang members share nodes: %v (each needs a whole 8-GPU node)", g.Nodes)
	}
	if g.Domain == "" {
		return fmt.Errorf("gang spread over blocks %v; one block holds all 32 GPUs", blocks)
	}
	d.gangs = append(d.gangs, g)
	return nil
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// jobPod is the pod the Job controller creates for completion index i of
// an Indexed Job.
func jobPod(job *batchv1.Job, i int) *v1.Pod {
	tmpl := job.Spec.Template.DeepCopy()
	idx := fmt.Sprint(i)
	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	labels[batchv1.JobNameLabel] = job.Name
	labels[batchv1.JobCompletionIndexAnnotation] = idx
	annotations := map[string]string{}
	for k, v := range tmpl.Annotations {
		annotations[k] = v
	}
	annotations[batchv1.JobCompletionIndexAnnotation] = idx
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%s-%d-%s", job.Name, i, utilrand.String(5)),
			Namespace:   job.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: tmpl.Spec,
	}
	// An Indexed Job's pods are <job>-<index>.<subdomain>.
	pod.Spec.Hostname = fmt.Sprintf("%s-%d", job.Name, i)
	return pod
}

// applyPods applies the single-pod examples, then admits them and checks
// what each asked for.
func (d *demo) applyPods(ctx context.Context) error {
	checks := []struct {
		example string
		check   func(*placement) error
	}{
		{"whole-gpus", func(p *placement) error { return wantCount(p, 4) }},
		{"gpu-memory", func(p *placement) error {
			if err := wantCount(p, 1); err != nil {
				return err
			}
			g := d.byName[p.Node].inv.GPUs[p.GPUs[0]]
			if q := resource.MustParse("40Gi"); g.MemoryMiB*1024*1024 < q.Value() {
				return fmt.Errorf("GPU %d on %s has %d MiB, asked for at least 40Gi", p.GPUs[0], p.Node, g.MemoryMiB)
			}
			return nil
		}},
		{"gpu-model", func(p *placement) error {
			if err := wantCount(p, 1); err != nil {
				return err
			}
			if g := d.byName[p.Node].inv.GPUs[p.GPUs[0]]; !strings.Contains(g.Product, "H100") {
				return fmt.Errorf("placed on a %s, asked for an H100", g.Product)
			}
			return nil
		}},
		{"gpu-share", func(p *placement) error {
			if p.Milli != 250 || len(p.GPUs) != 1 {
				return fmt.Errorf("got %s, asked for 250/1000 of one GPU", p.GPUText())
			}
			if !d.byName[p.Node].sharing {
				return fmt.Errorf("share placed on %s, which does not share GPUs", p.Node)
			}
			return nil
		}},
	}
	var pods []*v1.Pod
	example := map[string]string{}
	for _, c := range checks {
		objs, err := d.exampleObjects(c.example + "/pod.yaml")
		if err != nil {
			return err
		}
		if len(objs["Pod"]) != 1 {
			return fmt.Errorf("%s/pod.yaml: want one Pod, found %d", c.example, len(objs["Pod"]))
		}
		pod, err := typed[v1.Pod](objs["Pod"][0])
		if err != nil {
			return err
		}
		created, err := d.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s: %w", pod.Name, err)
		}
		pods = append(pods, created)
		example[created.Name] = c.example
	}
	bound, err := d.waitBound(ctx, pods, 30*time.Second)
	if err != nil {
		return err
	}
	for _, pod := range bound {
		p, err := d.admit(ctx, pod, example[pod.Name], "")
		if err != nil {
			return err
		}
		d.logPlacement(p)
		for _, c := range checks {
			if c.example == p.Example {
				if err := c.check(p); err != nil {
					return fmt.Errorf("%s: %w", p.Example, err)
				}
			}
		}
	}
	return nil
}

func wantCount(p *placement, n int) error {
	if p.Milli != 0 || len(p.GPUs) != n {
		return fmt.Errorf("got %s, asked for %d whole GPUs", p.GPUText(), n)
	}
	return nil
}

// logPlacement prints where a pod went, the GPUs' model and links, and
// that the container sees exactly those GPUs.
func (d *demo) logPlacement(p *placement) {
	n := d.byName[p.Node]
	g := n.inv.GPUs[p.GPUs[0]]
	detail := fmt.Sprintf("%s %dGiB", g.Product, g.MemoryMiB/1024)
	if len(p.GPUs) > 1 {
		if q, err := n.inv.Quality(p.GPUs); err == nil {
			detail += ", " + q.String()
		}
	}
	d.logf("%-28s -> %-7s %-16s (%s); container sees %d GPU(s) = %s ✓",
		p.Namespace+"/"+p.Name, p.Node, p.GPUText(), detail, len(p.Visible), contract.AnnotationGPUIDs)
}
