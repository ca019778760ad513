// Package registry lists kubegpu's out-of-tree scheduler plugins, so the
// kubegpu-scheduler binary, the demo and the integration tests all build
// the same scheduler.
package registry

import (
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
)

// Plugins returns kubegpu's out-of-tree plugins by name.
func Plugins() frameworkruntime.Registry {
	return frameworkruntime.Registry{}
}

// Options turns Plugins into kube-scheduler app options.
func Options() []app.Option {
	var opts []app.Option
	for name, factory := range Plugins() {
		opts = append(opts, app.WithPlugin(name, factory))
	}
	return opts
}
