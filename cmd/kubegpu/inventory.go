package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/pkg/nvml"
)

func newInventoryCommand() *cobra.Command {
	var spec string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Print this node's GPUs and their link matrix (as the device plugin sees them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			backend, err := nvml.Open(spec)
			if err != nil {
				return err
			}
			defer func() { _ = backend.Shutdown() }()
			node, err := backend.Discover(context.Background())
			if err != nil {
				return err
			}
			if asJSON {
				s, err := gpunode.Encode(node)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), s)
				return err
			}
			return gpunode.WriteTable(cmd.OutOrStdout(), node)
		},
	}
	cmd.Flags().StringVar(&spec, "nvml", "real", "NVML backend: real, or fake:NAME")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the kubegpu.io/gpu-topology annotation document")
	return cmd
}
