package sim

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// palette gives each policy a stable colour.
var palette = []color.RGBA{
	{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, {R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff}, {R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// Plot draws allocated % vs arrived % for every policy into an SVG (or
// any format gonum/plot knows from the extension).
func Plot(path, trace string, sums []Summary) error {
	p := plot.New()
	p.Title.Text = "GPU allocation vs arrived demand: " + filepath.Base(trace)
	p.X.Label.Text = "arrived GPU demand (% of capacity)"
	p.Y.Label.Text = "allocated GPUs (% of capacity)"
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	for k, s := range sums {
		pts := make(plotter.XYs, len(s.Curve))
		for x, v := range s.Curve {
			pts[x].X, pts[x].Y = float64(x), v
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.Policy, err)
		}
		l.Color = palette[k%len(palette)]
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%.2f%% at 100%%)", s.Policy, s.AllocAt100), l)
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}
