package gpunode

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// pcieAbbrev is nvidia-smi topo -m's spelling of the PCIe levels.
var pcieAbbrev = map[PCIeLevel]string{
	PCIeSameBoard:    "PIX",
	PCIeSingleSwitch: "PIX",
	PCIeMultiSwitch:  "PXB",
	PCIeHostBridge:   "PHB",
	PCIeSameNUMA:     "NODE",
	PCIeCrossCPU:     "SYS",
}

// LinkLabel is a link as nvidia-smi topo -m prints it: NVS for an
// NVSwitch fabric, NV# for direct NVLinks, else the PCIe level.
func LinkLabel(l Link) string {
	switch {
	case l.NVSwitch:
		return "NVS"
	case l.NVLinks > 0:
		return fmt.Sprintf("NV%d", l.NVLinks)
	}
	if s, ok := pcieAbbrev[l.PCIe]; ok {
		return s
	}
	return "?"
}

// WriteTable prints the node's GPUs and an nvidia-smi topo -m style link
// matrix with its legend.
func WriteTable(w io.Writer, n *Node) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tPRODUCT\tMEMORY\tNUMA\tPCI BUS ID\tHEALTH")
	for _, g := range n.GPUs {
		health := "healthy"
		if !g.Healthy {
			health = "UNHEALTHY"
		}
		numa := "N/A"
		if g.NUMANode >= 0 {
			numa = fmt.Sprint(g.NUMANode)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d MiB\t%s\t%s\t%s\n", g.Index, g.UUID, g.Product, g.MemoryMiB, numa, g.PCIBusID, health)
	}
	fmt.Fprintln(tw)
	header := []string{""}
	for _, g := range n.GPUs {
		header = append(header, fmt.Sprintf("GPU%d", g.Index))
	}
	fmt.Fprintln(tw, strings.Join(append(header, "NUMA Affinity"), "\t"))
	for i, g := range n.GPUs {
		row := []string{fmt.Sprintf("GPU%d", g.Index)}
		for j := range n.GPUs {
			if i == j {
				row = append(row, " X")
			} else {
				row = append(row, LinkLabel(n.Links[i][j]))
			}
		}
		numa := "N/A"
		if g.NUMANode >= 0 {
			numa = fmt.Sprint(g.NUMANode)
		}
		fmt.Fprintln(tw, strings.Join(append(row, numa), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprint(w, `
Legend:
  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
  NVS  = Connection traversing an NVSwitch fabric
`)
	return err
}
