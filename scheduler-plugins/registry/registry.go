// Package registry lists kubegpu's out-of-tree scheduler plugins, so the
// kubegpu-scheduler binary, the demo and the integration tests all build
// the same scheduler.
package registry

import (
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupreempt"
)

// Plugins returns kubegpu's out-of-tree plugins by name.
func Plugins() frameworkruntime.Registry {
	return frameworkruntime.Registry{
		gpupack.Name:    gpupack.New,
		gang.Name:       gang.New,
		gpupreempt.Name: gpupreempt.New,
	}
}

// Options turns Plugins into kube-scheduler app options.
func Options() []app.Option {
	var opts []app.Option
	for name, factory := range Plugins() {
		opts = append(opts, app.WithPlugin(name, factory))
	}
	return opts
}

// Profile is the KubeSchedulerConfiguration profile kubegpu ships
// (deploy/ holds the same): the default plugins plus GPUPack at every
// extension point it implements, first at filter (the cheapest and most
// selective filter on a packed GPU cluster) and first at bind so the GPU
// choice is written with the binding. NodeResourcesFit ignores the GPU-share
// resource, which GPUPack accounts per GPU, and packs GPUs
// (MostAllocated) instead of spreading them. Gang runs at every point it
// implements too. GPUPreempt replaces DefaultPreemption: the same
// preemption machinery with GPU-set- and gang-aware victims. Gang's
// PostFilter is listed first so that it runs before GPUPreempt, which can
// end the PostFilter chain.
const Profile = `- schedulerName: kubegpu-scheduler
  plugins:
    multiPoint:
      enabled:
      - name: GPUPack
        weight: 10
      - name: Gang
        weight: 5
      - name: GPUPreempt
      disabled:
      - name: DefaultPreemption
    # GPUPack filters first: on a packed cluster many nodes have no
    # free GPU set, and GPUPack rejects them from its memo before
    # NodeResourcesFit and the rest run (docs/scheduler.md).
    filter:
      enabled:
      - name: GPUPack
    postFilter:
      enabled:
      - name: Gang
      - name: GPUPreempt
    # GPUPack binds first: it writes kubegpu.io/gpu-ids in the Binding
    # itself (one API write per pod); pods without GPUs fall through to
    # DefaultBinder.
    bind:
      enabled:
      - name: GPUPack
  pluginConfig:
  - name: NodeResourcesFit
    args:
      ignoredResources:
      - kubegpu.io/gpu-milli
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: nvidia.com/gpu
          weight: 3
        - name: cpu
          weight: 1
        - name: memory
          weight: 1
`
