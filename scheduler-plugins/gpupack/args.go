package gpupack

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	"github.com/kubegpu/kubegpu/pkg/contract"
)

// Interconnect policies for pods that ask for more than one GPU.
const (
	// InterconnectPreferred scores better-connected sets higher but
	// accepts any set.
	InterconnectPreferred = "Preferred"
	// InterconnectNVLink only accepts sets whose every pair talks over
	// NVLink or NVSwitch; nodes without such a set are filtered out.
	InterconnectNVLink = "NVLink"
)

// Args are the GPUPack plugin arguments, set through the
// KubeSchedulerConfiguration pluginConfig:
//
//	pluginConfig:
//	- name: GPUPack
//	  args:
//	    packingWeight: 6
//	    topologyWeight: 3
//	    memoryFitWeight: 1
type Args struct {
	// ResourceName is the whole-GPU extended resource.
	ResourceName string `json:"resourceName,omitempty"`
	// SharedResourceName is the GPU-share resource (thousandths of one GPU).
	SharedResourceName string `json:"sharedResourceName,omitempty"`
	// MultiGPUInterconnect is Preferred (default) or NVLink.
	MultiGPUInterconnect string `json:"multiGPUInterconnect,omitempty"`
	// The score is the weighted mean of three parts, each 0-100:
	// packing (how little the placement fragments the node's free GPUs
	// for the requests the cluster sees), topology (interconnect of the
	// chosen set) and memory fit (GPU memory close to the pod's minimum).
	PackingWeight   *int64 `json:"packingWeight,omitempty"`
	TopologyWeight  *int64 `json:"topologyWeight,omitempty"`
	MemoryFitWeight *int64 `json:"memoryFitWeight,omitempty"`
}

// Default weights: packing dominates because stranded GPU capacity is the
// main cost; topology matters for multi-GPU pods only and memory fit only
// for pods that state a minimum.
const (
	DefaultPackingWeight   = 6
	DefaultTopologyWeight  = 3
	DefaultMemoryFitWeight = 1
	maxWeight              = 100
)

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
	if a.SharedResourceName == "" {
		a.SharedResourceName = contract.ResourceGPUMilli
	}
	if a.MultiGPUInterconnect == "" {
		a.MultiGPUInterconnect = InterconnectPreferred
	}
	for _, w := range []struct {
		p   **int64
		def int64
	}{{&a.PackingWeight, DefaultPackingWeight}, {&a.TopologyWeight, DefaultTopologyWeight}, {&a.MemoryFitWeight, DefaultMemoryFitWeight}} {
		if *w.p == nil {
			v := w.def
			*w.p = &v
		}
	}
}

// Validate reports every invalid field.
func (a *Args) Validate() error {
	var errs []error
	if a.ResourceName == a.SharedResourceName {
		errs = append(errs, fmt.Errorf("resourceName and sharedResourceName must differ, both are %q", a.ResourceName))
	}
	switch a.MultiGPUInterconnect {
	case InterconnectPreferred, InterconnectNVLink:
	default:
		errs = append(errs, fmt.Errorf("multiGPUInterconnect %q: want %s or %s", a.MultiGPUInterconnect, InterconnectPreferred, InterconnectNVLink))
	}
	sum := int64(0)
	for name, w := range map[string]*int64{"packingWeight": a.PackingWeight, "topologyWeight": a.TopologyWeight, "memoryFitWeight": a.MemoryFitWeight} {
		if w == nil {
			continue
		}
		if *w < 0 || *w > maxWeight {
			errs = append(errs, fmt.Errorf("%s %d: want 0-%d", name, *w, maxWeight))
		}
		sum += *w
	}
	if sum == 0 {
		errs = append(errs, errors.New("at least one of packingWeight, topologyWeight, memoryFitWeight must be positive"))
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
