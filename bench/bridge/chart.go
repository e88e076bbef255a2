package main

import (
	"fmt"
	"image/color"

	"github.com/sensorfarm/sensorfarm/bench/chart"
)

// panel is one small bar chart: ours against its peer on one figure.
type panel struct {
	title string
	bars  []bar
	unit  string
}

type bar struct {
	label string
	value float64
	ours  bool
}

var (
	oursColor = color.RGBA{0x2b, 0x6c, 0xb0, 0xff}
	peerColor = color.RGBA{0xb0, 0xb0, 0xb0, 0xff}
	inkColor  = color.RGBA{0x20, 0x20, 0x20, 0xff}
)

func (r report) panels() []panel {
	med := func(v variant, f func(sample) float64) float64 { return median(r.cost.per(v, f)) }
	spoolMed := func(runs spoolRunList, name, unit string) float64 { return median(runs.values(name, unit)) }
	return []panel{
		{"CPU per reading, native", []bar{{"bridge", med(variant{"bridge", "native"}, cpuMS), true}, {"naive", med(variant{"naive", "native"}, cpuMS), false}}, "ms"},
		{"CPU per reading, ARM1176 (qemu)", []bar{{"bridge", med(variant{"bridge", "arm1176"}, cpuMS), true}, {"naive", med(variant{"naive", "arm1176"}, cpuMS), false}}, "ms"},
		{"steady RSS, native", []bar{{"bridge", med(variant{"bridge", "native"}, rssMB), true}, {"naive", med(variant{"naive", "native"}, rssMB), false}}, "MB"},
		{"bytes written per reading", []bar{{"spool", spoolMed(r.spool.native, "Outage/"+ourSpool, "B/reading"), true}, {"FileStore", spoolMed(r.spool.native, "Outage/"+fileStore, "B/reading"), false}}, "B"},
		{"replay, native", []bar{{"spool", spoolMed(r.spool.native, "Replay/"+ourSpool, "readings/s") / 1e3, true}, {"FileStore", spoolMed(r.spool.native, "Replay/"+fileStore, "readings/s") / 1e3, false}}, "k/s"},
		{"replay, ARM1176 (qemu)", []bar{{"spool", spoolMed(r.spool.arm1176, "Replay/"+ourSpool, "readings/s") / 1e3, true}, {"FileStore", spoolMed(r.spool.arm1176, "Replay/"+fileStore, "readings/s") / 1e3, false}}, "k/s"},
	}
}

// chart draws the panels in a grid, each bar labelled with its value, and
// encodes it as PNG. A bar whose figure was not measured (a -quick run) is
// drawn empty with "n/a".
func (r report) chart() ([]byte, error) {
	const (
		cols, panelW, panelH = 3, 300, 125
		margin, barH, gap    = 14, 26, 12
	)
	ps := r.panels()
	rows := (len(ps) + cols - 1) / cols
	c := chart.New(cols*panelW, rows*panelH+30)
	text := func(x, y int, s string) { c.Text(x, y, s, inkColor) }
	text(margin, 20, "sensorfarm bridge and spool (blue: ours; grey: the peer in the same run; medians)")
	for i, p := range ps {
		x0, y0 := (i%cols)*panelW+margin, (i/cols)*panelH+30+margin
		text(x0, y0+10, p.title+" ("+p.unit+")")
		maxV := 0.0
		for _, b := range p.bars {
			maxV = max(maxV, b.value)
		}
		labelW, valueW := 70, 70
		room := panelW - 2*margin - labelW - valueW
		for j, b := range p.bars {
			y := y0 + 24 + j*(barH+gap)
			text(x0, y+barH/2+4, b.label)
			w := 0
			if maxV > 0 {
				w = max(1, int(float64(room)*b.value/maxV))
			}
			paint := peerColor
			if b.ours {
				paint = oursColor
			}
			c.Fill(x0+labelW, y, x0+labelW+w, y+barH, paint)
			text(x0+labelW+w+6, y+barH/2+4, fmtValue(b.value))
		}
	}
	return c.PNG()
}

func fmtValue(v float64) string {
	switch {
	case v == 0:
		return "n/a" // not measured (a -quick run); the font is ASCII only
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
