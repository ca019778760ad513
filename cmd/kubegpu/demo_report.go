package main

import (
	"fmt"
	"hash/fnv"
	"html/template"
	"os"
	"slices"
	"strings"
	"time"
)

// Report geometry (SVG user units).
const (
	cellW, cellH = 86, 54
	labelW       = 200
	rowGap       = 10
)

type reportCell struct {
	X, Y, W, H float64
	Fill       string
	Text, Sub  string
	Title      string
}

type reportNode struct {
	Y                float64
	Name, Label, Sub string
}

// reportMap is one picture of the GPU map.
type reportMap struct {
	Title string
	W, H  float64
	Nodes []reportNode
	Cells []reportCell
}

type reportLegend struct {
	Color, Pod, What string
}

type reportChart struct {
	W, H               float64
	Current, Desired   string // polyline points
	Queue              string
	YTicks             []reportTick
	XTicks             []reportTick
	PhaseBands         []reportCell
	MaxReplicas, MaxQ  float64
	Left, Top, PlotH   float64
	PlotW, Bottom, Rgt float64
}

type reportTick struct {
	Pos   float64
	Label string
}

type reportData struct {
	Generated  string
	Duration   string
	OK         bool
	Steps      []stepResult
	Maps       []reportMap
	Legend     []reportLegend
	Placements []*placement
	Gangs      []gangResult
	Scaling    *scalingResult
	Chart      *reportChart
}

// palette is a set of distinguishable fills for pods.
var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#a0cbe8", "#8cd17d", "#b6992d", "#499894", "#f1ce63"}

func podColor(key string) string {
	h := fnv.New32a()
	h.Write([]byte(key))
	return palette[h.Sum32()%uint32(len(palette))]
}

// writeReport writes the HTML report: steps, the GPU map (nodes x GPUs,
// each GPU coloured by the pod holding it, shares drawn as slices), the
// placements, gangs and the autoscaling timeline.
func (d *demo) writeReport(path string) error {
	data := reportData{
		Generated: time.Now().UTC().Format(time.RFC3339), Duration: time.Since(d.start).Round(100 * time.Millisecond).String(),
		Steps: d.steps, Placements: d.placements, Gangs: d.gangs, Scaling: d.scaling,
	}
	data.OK = len(d.steps) > 0
	for _, s := range d.steps {
		if s.Err != nil {
			data.OK = false
		}
	}
	colors := map[string]string{}
	for i, p := range d.placements {
		key := p.colorKey()
		if _, ok := colors[key]; !ok {
			colors[key] = palette[i%len(palette)]
			if len(colors) > len(palette) {
				colors[key] = podColor(key)
			}
			what := p.Example
			if p.Gang != "" {
				what = "gang " + p.Gang
			}
			data.Legend = append(data.Legend, reportLegend{Color: colors[key], Pod: key, What: what})
		}
	}
	if d.peak != nil {
		data.Maps = append(data.Maps, d.gpuMap(fmt.Sprintf("At the peak of the burst (%d llama replicas)", d.scaling.Peak), d.peak, colors))
	}
	data.Maps = append(data.Maps, d.gpuMap("At the end", d.livePlacements(), colors))
	if s := d.scaling; s != nil && len(s.Points) > 0 {
		data.Chart = chartOf(s)
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := reportTemplate.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	return nil
}

func (p *placement) colorKey() string {
	if p.Gang != "" {
		return p.Gang
	}
	return p.Namespace + "/" + p.Name
}

// gpuMap draws nodes x GPUs for the given live placements.
func (d *demo) gpuMap(title string, live []*placement, colors map[string]string) reportMap {
	m := reportMap{Title: title}
	maxGPUs := 0
	y := 10.0
	for _, n := range d.nodes {
		if n.inv == nil {
			continue
		}
		maxGPUs = max(maxGPUs, len(n.inv.GPUs))
		share := ""
		if n.sharing {
			share = ", sharing"
		}
		m.Nodes = append(m.Nodes, reportNode{Y: y, Name: n.name,
			Label: fmt.Sprintf("%s · %s%s", n.shape, n.block, share)})
		m.Nodes[len(m.Nodes)-1].Sub = strings.TrimPrefix(n.inv.GPUs[0].Product, "NVIDIA ")
		for i, g := range n.inv.GPUs {
			x := float64(labelW + i*cellW)
			holders := holdersIn(live, n.name, i)
			base := reportCell{X: x, Y: y, W: cellW - 4, H: cellH, Fill: "#eeeeee", Text: fmt.Sprintf("GPU %d", i), Sub: "free",
				Title: fmt.Sprintf("%s GPU %d %s %d MiB: free", n.name, i, g.UUID, g.MemoryMiB)}
			if len(holders) == 1 && holders[0].Milli == 0 {
				p := holders[0]
				base.Fill, base.Sub = colors[p.colorKey()], shortPod(p.Name)
				base.Title = fmt.Sprintf("%s GPU %d %s: %s/%s", n.name, i, g.UUID, p.Namespace, p.Name)
				m.Cells = append(m.Cells, base)
				continue
			}
			used := 0
			for _, p := range holders {
				used += p.Milli
			}
			if used > 0 {
				base.Sub = fmt.Sprintf("%d/1000", used)
			}
			m.Cells = append(m.Cells, base)
			// Shares: one slice per pod, as wide as its share.
			off := 0.0
			for _, p := range holders {
				w := float64(cellW-4) * float64(p.Milli) / 1000
				m.Cells = append(m.Cells, reportCell{X: x + off, Y: y + cellH - 16, W: w, H: 16, Fill: colors[p.colorKey()],
					Title: fmt.Sprintf("%s GPU %d: %d/1000 to %s/%s", n.name, i, p.Milli, p.Namespace, p.Name)})
				off += w
			}
		}
		y += cellH + rowGap
	}
	m.W = float64(labelW + maxGPUs*cellW + 10)
	m.H = y + 10
	return m
}

func holdersIn(list []*placement, node string, i int) []*placement {
	var out []*placement
	for _, p := range list {
		if !p.Deleted && p.Node == node && slices.Contains(p.GPUs, i) {
			out = append(out, p)
		}
	}
	return out
}

// shortPod fits a pod name in a GPU box: generated names keep their
// first word and their random suffix (llama…x5k2p).
func shortPod(name string) string {
	if len(name) <= 14 {
		return name
	}
	first, _, _ := strings.Cut(name, "-")
	last := name[strings.LastIndex(name, "-")+1:]
	if len(first)+len(last) > 13 {
		return name[:13] + "…"
	}
	return first + "…" + last
}

// chartOf draws replicas (current and desired) and the waiting queue
// over the KEDA polls.
func chartOf(s *scalingResult) *reportChart {
	c := &reportChart{W: 820, H: 300, Left: 50, Top: 20, Rgt: 60, Bottom: 40}
	c.PlotW, c.PlotH = c.W-c.Left-c.Rgt, c.H-c.Top-c.Bottom
	t0, t1 := s.Points[0].At.Seconds(), s.Points[len(s.Points)-1].At.Seconds()
	if t1 <= t0 {
		t1 = t0 + 1
	}
	c.MaxReplicas = float64(max(s.Max, s.Peak, 1))
	for _, p := range s.Points {
		c.MaxQ = max(c.MaxQ, p.Queue)
	}
	if c.MaxQ == 0 {
		c.MaxQ = 1
	}
	x := func(t float64) float64 { return c.Left + (t-t0)/(t1-t0)*c.PlotW }
	yr := func(v float64) float64 { return c.Top + c.PlotH - v/c.MaxReplicas*c.PlotH }
	yq := func(v float64) float64 { return c.Top + c.PlotH - v/c.MaxQ*c.PlotH }
	var cur, des, q strings.Builder
	for _, p := range s.Points {
		t := p.At.Seconds()
		// Replicas change right after the poll that decided it: a step.
		fmt.Fprintf(&cur, "%.1f,%.1f %.1f,%.1f ", x(t), yr(float64(p.Current)), x(t), yr(float64(p.Desired)))
		fmt.Fprintf(&des, "%.1f,%.1f ", x(t), yr(float64(p.Desired)))
		fmt.Fprintf(&q, "%.1f,%.1f ", x(t), yq(p.Queue))
	}
	c.Current, c.Desired, c.Queue = cur.String(), des.String(), q.String()
	for v := 0; v <= int(c.MaxReplicas); v++ {
		c.YTicks = append(c.YTicks, reportTick{Pos: yr(float64(v)), Label: fmt.Sprint(v)})
	}
	step := max(1, int((t1-t0)/8))
	for t := int(t0); float64(t) <= t1; t += step {
		if float64(t) >= t0 {
			c.XTicks = append(c.XTicks, reportTick{Pos: x(float64(t)), Label: fmt.Sprintf("%ds", t)})
		}
	}
	bands := map[string]string{"steady": "#f4f8fb", "burst": "#fdeeee", "quiet": "#f3faf1"}
	start := 0
	for i := 1; i <= len(s.Points); i++ {
		if i == len(s.Points) || s.Points[i].Phase != s.Points[start].Phase {
			// A phase's band runs to the next phase's first poll.
			a, b := x(s.Points[start].At.Seconds()), x(s.Points[min(i, len(s.Points)-1)].At.Seconds())
			c.PhaseBands = append(c.PhaseBands, reportCell{X: a, Y: c.Top, W: max(b-a, 2), H: c.PlotH, Fill: bands[s.Points[start].Phase], Text: s.Points[start].Phase})
			start = i
		}
	}
	return c
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":   func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"secs": func(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) },
	"add":  func(a, b float64) float64 { return a + b },
	"half": func(a float64) float64 { return a / 2 },
	"join": strings.Join,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kubegpu demo report</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f4f4f4}.ok{color:#2a7d2a}.bad{color:#b22}code{font-size:12px}
svg text{font-family:system-ui,sans-serif}
</style></head><body>
<h1>kubegpu demo</h1>
<p>{{if .OK}}<b class="ok">All steps passed</b>{{else}}<b class="bad">A step failed</b>{{end}} in {{.Duration}} ({{.Generated}}).
Everything ran in one process: embedded etcd and kube-apiserver, kube-scheduler with kubegpu's plugins, one kubegpu device plugin on fake NVML per node registered with the kubelet's device manager, and kubegpu-scaler called through KEDA's external scaler gRPC API.</p>
<h2>Steps</h2>
<table><tr><th>step</th><th>result</th><th>time</th></tr>
{{range .Steps}}<tr><td>{{.Name}}</td><td>{{if .Err}}<span class="bad">{{.Err}}</span>{{else}}<span class="ok">ok</span>{{end}}</td><td>{{ms .Duration}}</td></tr>
{{end}}</table>
<h2>GPU map</h2>
<p>One row per node, one box per GPU, coloured by the pod (or gang) holding it; a shared GPU shows one slice per pod along its bottom, as wide as its share. Hover a box for the GPU's UUID and holder.</p>
{{range .Maps}}<h3>{{.Title}}</h3>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}">
{{range .Nodes}}<text x="4" y="{{add .Y 16}}" font-size="14" font-weight="bold">{{.Name}}</text><text x="4" y="{{add .Y 32}}" font-size="11" fill="#555">{{.Label}}</text><text x="4" y="{{add .Y 46}}" font-size="11" fill="#555">{{.Sub}}</text>
{{end}}{{range .Cells}}<g><title>{{.Title}}</title><rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" rx="4" fill="{{.Fill}}" stroke="#888" stroke-width="0.5"/>{{if .Text}}<text x="{{add .X 5}}" y="{{add .Y 15}}" font-size="11">{{.Text}}</text><text x="{{add .X 5}}" y="{{add .Y 30}}" font-size="10">{{.Sub}}</text>{{end}}</g>
{{end}}</svg>
{{end}}
<table><tr><th></th><th>pod or gang</th><th>example</th></tr>
{{range .Legend}}<tr><td style="background:{{.Color}};width:24px"></td><td>{{.Pod}}</td><td>{{.What}}</td></tr>
{{end}}</table>
<h2>Placements</h2>
<table><tr><th>pod</th><th>example</th><th>node</th><th>GPUs</th><th>container's NVIDIA_VISIBLE_DEVICES (= kubegpu.io/gpu-ids)</th><th>admitted at</th><th>state</th></tr>
{{range .Placements}}<tr><td>{{.Namespace}}/{{.Name}}</td><td>{{.Example}}</td><td>{{.Node}}</td><td>{{.GPUText}}</td><td><code>{{join .Visible ","}}</code></td><td>{{secs .At}}</td><td>{{if .Deleted}}deleted (scaled down){{else}}Running{{end}}</td></tr>
{{end}}</table>
{{if .Gangs}}<h2>Gangs</h2><table><tr><th>gang</th><th>members</th><th>nodes</th><th>domain</th><th>all bound after the last member was created</th></tr>
{{range .Gangs}}<tr><td>{{.Name}}</td><td>{{.Members}}</td><td>{{join .Nodes ", "}}</td><td>{{.Domain}}</td><td>{{ms .BoundAfter}}</td></tr>{{end}}</table>{{end}}
{{with .Scaling}}<h2>Autoscaling llama</h2>
<p>Replicas {{.Initial}} at start, {{.Peak}} at the peak, {{.Final}} at the end (min {{.Min}}, max {{.Max}}); {{len .Points}} KEDA polls, {{.Errors}} scaler errors. Demo-time overrides of the trigger metadata: {{range $k, $v := .Overrides}}<code>{{$k}}={{$v}}</code> {{end}}</p>
{{end}}{{with .Chart}}<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}">
{{range .PhaseBands}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="{{.Fill}}"/><text x="{{add .X 4}}" y="{{add .Y 12}}" font-size="11" fill="#777">{{.Text}}</text>
{{end}}{{range .YTicks}}<text x="{{half $.Chart.Left}}" y="{{add .Pos 4}}" font-size="10">{{.Label}}</text><line x1="{{$.Chart.Left}}" x2="{{add $.Chart.Left $.Chart.PlotW}}" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#e4e4e4"/>
{{end}}{{range .XTicks}}<text x="{{.Pos}}" y="{{add (add $.Chart.Top $.Chart.PlotH) 16}}" font-size="10">{{.Label}}</text>
{{end}}<polyline points="{{.Queue}}" fill="none" stroke="#bbb" stroke-width="1.5" stroke-dasharray="4 3"/>
<polyline points="{{.Desired}}" fill="none" stroke="#f28e2b" stroke-width="1.5"/>
<polyline points="{{.Current}}" fill="none" stroke="#4e79a7" stroke-width="2.5"/>
<text x="{{.Left}}" y="{{add .H -6}}" font-size="11"><tspan fill="#4e79a7">■ replicas</tspan> <tspan fill="#f28e2b">■ desired (HPA on kubegpu-scaler's metric)</tspan> <tspan fill="#999">- - waiting requests (max {{.MaxQ}})</tspan></text>
</svg>{{end}}
{{with .Scaling}}<table><tr><th>time</th><th>phase</th><th>req/s</th><th>waiting</th><th>p95 TTFT</th><th>scaler metric</th><th>active</th><th>replicas</th><th>desired</th></tr>
{{range .Points}}<tr><td>{{secs .At}}</td><td>{{.Phase}}</td><td>{{.Rate}}</td><td>{{.Queue}}</td><td>{{printf "%.2fs" .P95TTFT}}</td><td>{{if .Err}}<span class="bad">{{.Err}}</span>{{else}}{{.Metric}}{{end}}</td><td>{{.Active}}</td><td>{{.Current}}</td><td>{{.Desired}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))
