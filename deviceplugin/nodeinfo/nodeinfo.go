// Package nodeinfo publishes the node's GPU inventory on its Node object:
// GPU Feature Discovery compatible labels and the kubegpu.io/gpu-topology
// annotation the scheduler reads.
package nodeinfo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/klog/v2"

	"github.com/kubegpu/kubegpu/deviceplugin/inventory"
	"github.com/kubegpu/kubegpu/pkg/contract"
	"github.com/kubegpu/kubegpu/pkg/gpunode"
)

// LabelValue makes s a valid label value: characters outside
// [A-Za-z0-9._-] become '-', at most 63 characters, alphanumeric ends
// ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3", as GFD writes it).
func LabelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-_.")
}

// Patch is the JSON merge patch that sets the inventory labels and the
// topology annotation and touches no other key. GFD labels describe the
// first GPU, as GFD does on nodes with one model. With sharing the node is
// labelled kubegpu.io/gpu-sharing=true; without, the label is removed (a
// merge patch null), so a node never claims sharing it lost.
func Patch(node *gpunode.Node, sharing bool) ([]byte, error) {
	topo, err := gpunode.Encode(node)
	if err != nil {
		return nil, fmt.Errorf("encode topology: %w", err)
	}
	labels := map[string]any{contract.LabelGPUCount: strconv.Itoa(len(node.GPUs)), contract.LabelGPUSharing: nil}
	if len(node.GPUs) > 0 {
		labels[contract.LabelGPUProduct] = LabelValue(node.GPUs[0].Product)
		labels[contract.LabelGPUMemory] = strconv.FormatInt(node.GPUs[0].MemoryMiB, 10)
	}
	if sharing {
		labels[contract.LabelGPUSharing] = "true"
	}
	patch := map[string]any{"metadata": map[string]any{
		"labels":      labels,
		"annotations": map[string]string{contract.AnnotationTopology: topo},
	}}
	return json.Marshal(patch)
}

// Publish patches node name with inv's current GPUs.
func Publish(ctx context.Context, client corev1client.CoreV1Interface, name string, node *gpunode.Node, sharing bool) error {
	patch, err := Patch(node, sharing)
	if err != nil {
		return err
	}
	if _, err := client.Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubegpu-device-plugin"}); err != nil {
		return fmt.Errorf("patch node %s: %w", name, err)
	}
	return nil
}

// Run publishes at start and after every health change until ctx ends,
// retrying failures with backoff (up to 30s).
func Run(ctx context.Context, client corev1client.CoreV1Interface, name string, inv *inventory.Inventory, sharing bool) {
	logger := klog.FromContext(ctx).WithName("nodeinfo")
	backoff := 200 * time.Millisecond
	for {
		node, changed := inv.Snapshot()
		err := Publish(ctx, client, name, node, sharing)
		if err == nil {
			backoff = 200 * time.Millisecond
			logger.V(1).Info("Published GPU inventory", "node", name, "gpus", len(node.GPUs))
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		logger.Error(err, "Cannot publish GPU inventory; retrying", "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
