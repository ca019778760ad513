// Command kubegpu-scheduler is kube-scheduler with kubegpu's framework
// plugins compiled in. It takes every flag kube-scheduler takes; point
// --config at a KubeSchedulerConfiguration whose profile enables them.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/kubegpu/kubegpu/scheduler-plugins/registry"
)

func main() {
	command := app.NewSchedulerCommand(registry.Options()...)
	os.Exit(cli.Run(command))
}
