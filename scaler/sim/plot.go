package sim

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	colRate    = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	colReplica = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colLatency = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colSLO     = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
)

// Plot draws one panel per policy: arrival rate (req/s), replicas, and
// the p95 of the SLO signal (seconds, capped at 4x the SLO) against the
// SLO, over time. SVG when path ends in .svg, else PNG.
func Plot(path string, rep *Report) error {
	n := len(rep.Policies)
	if n == 0 {
		return fmt.Errorf("plot: no policies")
	}
	const w, hPer = 9 * vg.Inch, 2.6 * vg.Inch
	var c draw.Canvas
	var save func() error
	if filepath.Ext(path) == ".svg" {
		s := vgsvg.New(w, hPer*vg.Length(n))
		c = draw.New(s)
		save = func() error { return saveTo(path, s) }
	} else {
		img := vgimg.New(w, hPer*vg.Length(n))
		c = draw.New(img)
		save = func() error { return saveTo(path, vgimg.PngCanvas{Canvas: img}) }
	}
	slo := rep.Config.SLO.Seconds()
	plots := make([][]*plot.Plot, n)
	for i, pr := range rep.Policies {
		r := pr.Chosen
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s: %.2f%% in SLO, %.2f GPU-h (%s, speed %gx)", r.Setting, 100*r.Attainment, r.GPUHours, filepath.Base(rep.Trace), rep.Speed)
		p.X.Label.Text = "time (s)"
		p.Y.Label.Text = "replicas, req/s, latency (s)"
		p.Add(plotter.NewGrid())
		rate, reps, lat, sl := make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline))
		for k, pt := range r.Timeline {
			x := pt.At.Seconds()
			rate[k] = plotter.XY{X: x, Y: pt.Rate}
			reps[k] = plotter.XY{X: x, Y: float64(pt.Replicas)}
			lat[k] = plotter.XY{X: x, Y: min(pt.Latency, 4*slo)}
			sl[k] = plotter.XY{X: x, Y: slo}
		}
		for _, s := range []struct {
			xy    plotter.XYs
			col   color.RGBA
			label string
			dash  bool
		}{
			{rate, colRate, fmt.Sprintf("arrivals (req/s, %s buckets)", rep.Config.Timeline), false},
			{reps, colReplica, "replicas", false},
			{lat, colLatency, fmt.Sprintf("%s p95 (s, capped at 4x SLO)", rep.Config.Signal), false},
			{sl, colSLO, "SLO (s)", true},
		} {
			l, err := plotter.NewLine(s.xy)
			if err != nil {
				return fmt.Errorf("plot %s: %w", pr.Policy, err)
			}
			l.Color = s.col
			l.Width = vg.Points(1)
			if s.dash {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(s.label, l)
		}
		p.Legend.Top, p.Legend.Left = true, true
		plots[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: n, Cols: 1, PadY: vg.Points(6), PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align(plots, tiles, c)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	return save()
}
