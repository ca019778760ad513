package gang

import (
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// Default node label keys of the network topology, largest domain first.
const (
	LabelZone  = "topology.kubernetes.io/zone"
	LabelBlock = "kubegpu.io/block"
	LabelRack  = "kubegpu.io/rack"
)

// DefaultTimeout is how long members wait for each other when the gang
// does not set kubegpu.io/gang-timeout.
const DefaultTimeout = 300 * time.Second

// MaxTimeout is the framework's cap on a Permit wait: a longer wait would
// be cut silently, so it is refused instead.
const MaxTimeout = 15 * time.Minute

// Args are the Gang plugin arguments, set through the
// KubeSchedulerConfiguration pluginConfig:
//
//	pluginConfig:
//	- name: Gang
//	  args:
//	    topologyKeys: [topology.kubernetes.io/zone, kubegpu.io/block, kubegpu.io/rack]
//	    defaultTimeout: 5m
type Args struct {
	// ResourceName is the GPU extended resource whose free capacity
	// PreFilter and the domain choice count.
	ResourceName string `json:"resourceName,omitempty"`
	// TopologyKeys are node label keys of the network topology, from the
	// largest domain to the smallest. Unset means the defaults; an empty
	// list turns topology placement off.
	TopologyKeys []string `json:"topologyKeys,omitempty"`
	// DefaultTimeout applies to gangs without kubegpu.io/gang-timeout.
	DefaultTimeout *metav1.Duration `json:"defaultTimeout,omitempty"`
}

// DefaultArgs returns the arguments used when pluginConfig gives none.
func DefaultArgs() Args {
	a := Args{}
	a.setDefaults()
	return a
}

func (a *Args) setDefaults() {
	if a.ResourceName == "" {
		a.ResourceName = contract.ResourceGPU
	}
	if a.TopologyKeys == nil {
		a.TopologyKeys = []string{LabelZone, LabelBlock, LabelRack}
	}
	if a.DefaultTimeout == nil {
		a.DefaultTimeout = &metav1.Duration{Duration: DefaultTimeout}
	}
}

// Validate reports every invalid field.
func (a *Args) Validate() error {
	var errs []error
	if msgs := validation.IsQualifiedName(a.ResourceName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("resourceName %q: %v", a.ResourceName, msgs))
	}
	seen := map[string]bool{}
	for i, k := range a.TopologyKeys {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("topologyKeys[%d] %q is not a label key: %v", i, k, msgs))
		}
		if seen[k] {
			errs = append(errs, fmt.Errorf("topologyKeys[%d] %q is listed twice", i, k))
		}
		seen[k] = true
	}
	if a.DefaultTimeout != nil {
		if d := a.DefaultTimeout.Duration; d <= 0 || d > MaxTimeout {
			errs = append(errs, fmt.Errorf("defaultTimeout %s: want more than 0 and at most %s", d, MaxTimeout))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// decodeArgs reads pluginConfig args (nil when none), applies defaults
// and validates.
func decodeArgs(obj runtime.Object) (Args, error) {
	var a Args
	if obj != nil {
		if err := frameworkruntime.DecodeInto(obj, &a); err != nil {
			return Args{}, fmt.Errorf("%s args: %w", Name, err)
		}
	}
	a.setDefaults()
	if err := a.Validate(); err != nil {
		return Args{}, fmt.Errorf("%s args: %w", Name, err)
	}
	return a, nil
}
