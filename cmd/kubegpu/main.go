// Command kubegpu is the kubegpu command line: simulators, the embedded
// demo and inventory tools are its subcommands.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kubegpu",
		Short: "GPU scheduling and inference autoscaling for Kubernetes",
		Long: `kubegpu schedules GPU workloads on Kubernetes and autoscales GPU inference.

Its components run in the cluster (kubegpu-device-plugin, kubegpu-scheduler,
kubegpu-scaler); this command holds the tools around them.`,
		SilenceUsage:  true,
		SilenceErrors: true, // main prints the error once
	}
	root.AddCommand(newInventoryCommand())
	root.AddCommand(newSimCommand())
	root.AddCommand(newDemoCommand())
	return root
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
