package gang

import (
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

func TestDecodeArgs(t *testing.T) {
	tests := []struct {
		name    string
		raw     string // "" means no pluginConfig
		want    Args
		wantErr []string
	}{
		{name: "defaults", want: Args{
			ResourceName:   contract.ResourceGPU,
			TopologyKeys:   []string{LabelZone, LabelBlock, LabelRack},
			DefaultTimeout: &metav1.Duration{Duration: 300 * time.Second},
		}},
		{name: "custom", raw: `{"topologyKeys":["example.com/pod","example.com/rack"],"defaultTimeout":"30s"}`, want: Args{
			ResourceName:   contract.ResourceGPU,
			TopologyKeys:   []string{"example.com/pod", "example.com/rack"},
			DefaultTimeout: &metav1.Duration{Duration: 30 * time.Second},
		}},
		{name: "topology off", raw: `{"topologyKeys":[]}`, want: Args{
			ResourceName:   contract.ResourceGPU,
			TopologyKeys:   []string{},
			DefaultTimeout: &metav1.Duration{Duration: 300 * time.Second},
		}},
		{name: "bad key and duplicate", raw: `{"topologyKeys":["a/b/c","kubegpu.io/rack","kubegpu.io/rack"]}`,
			wantErr: []string{`topologyKeys[0] "a/b/c" is not a label key`, `topologyKeys[2] "kubegpu.io/rack" is listed twice`}},
		{name: "timeout too long", raw: `{"defaultTimeout":"1h"}`, wantErr: []string{"defaultTimeout 1h0m0s"}},
		{name: "timeout zero", raw: `{"defaultTimeout":"0s"}`, wantErr: []string{"defaultTimeout 0s"}},
		{name: "not json", raw: `{`, wantErr: []string{"Gang args"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var obj runtime.Object
			if tt.raw != "" {
				obj = &runtime.Unknown{Raw: []byte(tt.raw), ContentType: runtime.ContentTypeJSON}
			}
			got, err := decodeArgs(obj)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("decodeArgs = %+v, want error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ResourceName != tt.want.ResourceName || strings.Join(got.TopologyKeys, ",") != strings.Join(tt.want.TopologyKeys, ",") ||
				got.DefaultTimeout.Duration != tt.want.DefaultTimeout.Duration || (got.TopologyKeys == nil) != (tt.want.TopologyKeys == nil) {
				t.Errorf("decodeArgs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "ml"}, Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](4)}}
	serial := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "serial", Namespace: "ml"}}
	jobs := func(ns, name string) (*batchv1.Job, error) {
		for _, j := range []*batchv1.Job{job, serial} {
			if j.Namespace == ns && j.Name == name {
				return j, nil
			}
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "batch", Resource: "jobs"}, name)
	}
	owned := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: kind, Name: name, UID: "u", Controller: ptr.To(true)}}
	}
	tests := []struct {
		name     string
		labels   map[string]string
		annots   map[string]string
		owners   []metav1.OwnerReference
		group    bool
		want     identity
		wantOK   bool
		wantErr  string
		notFound bool
	}{
		{name: "plain pod"},
		{name: "label gang", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "3"},
			wantOK: true, want: identity{key: gangKey{"ml", "g"}, size: 3, timeout: 300 * time.Second}},
		{name: "label gang with timeout", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "2", contract.AnnotationGangTimeout: "10s"},
			wantOK: true, want: identity{key: gangKey{"ml", "g"}, size: 2, timeout: 10 * time.Second}},
		{name: "missing size", labels: map[string]string{contract.LabelGang: "g"}, wantOK: true, wantErr: contract.AnnotationGangSize},
		{name: "size not a number", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "four"}, wantOK: true, wantErr: contract.AnnotationGangSize + `="four"`},
		{name: "size zero", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "0"}, wantOK: true, wantErr: contract.AnnotationGangSize},
		{name: "timeout without unit", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "2", contract.AnnotationGangTimeout: "300"}, wantOK: true, wantErr: contract.AnnotationGangTimeout + `="300"`},
		{name: "timeout too long", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "2", contract.AnnotationGangTimeout: "1h"}, wantOK: true, wantErr: contract.AnnotationGangTimeout},
		{name: "negative timeout", labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "2", contract.AnnotationGangTimeout: "-5s"}, wantOK: true, wantErr: contract.AnnotationGangTimeout},
		{name: "upstream pod group wins", group: true, labels: map[string]string{contract.LabelGang: "g"}, annots: map[string]string{contract.AnnotationGangSize: "2"}},
		{name: "job gang", annots: map[string]string{contract.LabelGang: "true"}, owners: owned("Job", "train"),
			wantOK: true, want: identity{key: gangKey{"ml", "job/train"}, job: "train", size: 4, timeout: 300 * time.Second}},
		{name: "job without parallelism", annots: map[string]string{contract.LabelGang: "true"}, owners: owned("Job", "serial"),
			wantOK: true, want: identity{key: gangKey{"ml", "job/serial"}, job: "serial", size: 1, timeout: 300 * time.Second}},
		{name: "job not in lister", annots: map[string]string{contract.LabelGang: "true"}, owners: owned("Job", "gone"), wantOK: true, wantErr: "gang Job ml/gone", notFound: true},
		{name: "opt-in without job", annots: map[string]string{contract.LabelGang: "true"}, owners: owned("ReplicaSet", "rs"), wantErr: "no controlling batch/v1 Job"},
		{name: "opt-in value not true", annots: map[string]string{contract.LabelGang: "yes"}, owners: owned("Job", "train")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ml", Labels: tt.labels, Annotations: tt.annots, OwnerReferences: tt.owners}}
			if tt.group {
				pod.Spec.SchedulingGroup = &v1.PodSchedulingGroup{}
			}
			got, ok, err := parseIdentity(pod, DefaultTimeout, jobs)
			if ok != tt.wantOK {
				t.Errorf("ok = %v, want %v", ok, tt.wantOK)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				if tt.notFound != apierrors.IsNotFound(errors.Unwrap(err)) {
					t.Errorf("IsNotFound(%v) = %v, want %v", err, !tt.notFound, tt.notFound)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("identity = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// racks builds a two-zone, four-rack cluster: zone z1 holds racks r1
// (slots 2+2) and r2 (slots 1), zone z2 holds r3 (slots 3+3) and r4
// (slots 4). Node n-nolabel has no topology labels.
func racks() []nodeCap {
	node := func(name, zone, rack string, slots int) nodeCap {
		return nodeCap{name: name, slots: slots, labels: map[string]string{LabelZone: zone, LabelRack: rack}}
	}
	return []nodeCap{
		node("a1", "z1", "r1", 2), node("a2", "z1", "r1", 2),
		node("b1", "z1", "r2", 1),
		node("c1", "z2", "r3", 3), node("c2", "z2", "r3", 3),
		node("d1", "z2", "r4", 4),
		{name: "n-nolabel", slots: 8, labels: map[string]string{}},
	}
}

func TestChooseDomain(t *testing.T) {
	keys := []string{LabelZone, LabelBlock, LabelRack}
	tests := []struct {
		name   string
		need   int
		placed []map[string]string
		want   string
	}{
		{name: "tightest rack that fits", need: 4, want: LabelRack + "=r1"},
		{name: "a rack beats a zone", need: 6, want: LabelRack + "=r3"},
		{name: "exact fit", need: 1, want: LabelRack + "=r2"},
		{name: "only a zone fits", need: 7, want: LabelZone + "=z2"},
		{name: "nothing fits", need: 14, want: "cluster"},
		{name: "placed member pins the rack", need: 1, placed: []map[string]string{{LabelZone: "z2", LabelRack: "r4"}}, want: LabelRack + "=r4"},
		{name: "placed members in two racks pin the zone", need: 2,
			placed: []map[string]string{{LabelZone: "z2", LabelRack: "r4"}, {LabelZone: "z2", LabelRack: "r3"}}, want: LabelZone + "=z2"},
		{name: "placed member outside every domain", need: 1, placed: []map[string]string{{}}, want: "cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chooseDomain(keys, racks(), tt.need, tt.placed).String(); got != tt.want {
				t.Errorf("chooseDomain(need %d) = %s, want %s", tt.need, got, tt.want)
			}
		})
	}
	if got := chooseDomain(nil, racks(), 1, nil); got != nil {
		t.Errorf("without topology keys chooseDomain = %s, want cluster", got)
	}
}

func TestAffinityScore(t *testing.T) {
	keys := []string{LabelZone, LabelBlock, LabelRack}
	placed := map[string]map[string]string{"c1": {LabelZone: "z2", LabelRack: "r3"}}
	tests := []struct {
		node   string
		labels map[string]string
		want   int64
	}{
		{"c1", map[string]string{LabelZone: "z2", LabelRack: "r3"}, 100},
		{"c2", map[string]string{LabelZone: "z2", LabelRack: "r3"}, 75},
		{"d1", map[string]string{LabelZone: "z2", LabelRack: "r4"}, 25},
		{"a1", map[string]string{LabelZone: "z1", LabelRack: "r1"}, 0},
		{"n-nolabel", map[string]string{}, 0},
	}
	for _, tt := range tests {
		if got := affinityScore(keys, tt.labels, tt.node, placed); got != tt.want {
			t.Errorf("affinityScore(%s) = %d, want %d", tt.node, got, tt.want)
		}
	}
}

func TestSameGangHint(t *testing.T) {
	member := func(uid, gang string) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, UID: k8stypes.UID("uid-" + uid), Namespace: "ml",
			Labels: map[string]string{contract.LabelGang: gang}, Annotations: map[string]string{contract.AnnotationGangSize: "2"}}}
	}
	tests := []struct {
		name  string
		added *v1.Pod
		want  string
	}{
		{"sibling", member("b", "g"), "Queue"},
		{"other gang", member("c", "h"), "QueueSkip"},
		{"plain pod", &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ml"}}, "QueueSkip"},
	}
	for _, tt := range tests {
		got, err := sameGang(klog.Background(), member("a", "g"), nil, tt.added)
		if err != nil || got.String() != tt.want {
			t.Errorf("%s: sameGang = %v, %v; want %s", tt.name, got, err, tt.want)
		}
		// A deleted pod of the own gang is its release, not new room.
		want := map[string]string{"Queue": "QueueSkip", "QueueSkip": "Queue"}[tt.want]
		if tt.added.Labels[contract.LabelGang] == "" {
			want = "Queue"
		}
		got, err = otherGangDeleted(klog.Background(), member("a", "g"), tt.added, nil)
		if err != nil || got.String() != want {
			t.Errorf("%s: otherGangDeleted = %v, %v; want %s", tt.name, got, err, want)
		}
	}
}
