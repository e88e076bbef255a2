package sim

import (
	"hash/fnv"
	"math"
	"time"
)

// weather is a node's modelled climate: a sum of smooth sine waves, so it is
// continuous at every scale and a pure function of time. Every amplitude,
// period and phase comes from a hash of the node name: nodes differ, and a
// node's weather is the same in every run.
//
// Bounds, by construction (each term's largest amplitude added up):
// temperature 12.5..27.5 °C, humidity 28.5..76.5 %, pressure 994.4..1025.6 hPa.
type weather struct {
	tMean  float64 // °C
	tDaily wave    // daily cycle, warmest in the afternoon
	tDrift [3]wave // weather fronts over days to weeks

	hMean  float64 // %RH
	hPerC  float64 // relative humidity falls as the air warms
	hDrift [2]wave

	pMean  float64 // hPa
	pWaves [3]wave // highs and lows passing over
	pTide  wave    // the atmospheric tide: two small peaks a day
}

// wave is amp·cos(2π·t/period + phase).
type wave struct {
	amp    float64
	period time.Duration
	phase  float64
}

func (w wave) at(s float64) float64 {
	return w.amp * math.Cos(2*math.Pi*s/w.period.Seconds()+w.phase)
}

const day = 24 * time.Hour

// epochUnix (2020-01-01 UTC) keeps the seconds small so that float64 keeps
// sub-microsecond precision in the phase.
const epochUnix = 1577836800

func newWeather(node string) weather {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	r := splitmix(h.Sum64())
	phase := func() float64 { return r.between(0, 2*math.Pi) }
	// jitter stretches a period by up to ±10 % so that nodes drift apart.
	jitter := func(d time.Duration) time.Duration { return time.Duration(float64(d) * r.between(0.9, 1.1)) }

	// spec is a wave's largest amplitude and its nominal period.
	type spec struct {
		amp    float64
		period time.Duration
	}
	waves := func(dst []wave, specs []spec, minScale float64) {
		for i, sp := range specs {
			dst[i] = wave{amp: sp.amp * r.between(minScale, 1), period: jitter(sp.period), phase: phase()}
		}
	}

	var w weather
	w.tMean = r.between(18.5, 21.5)
	// Warmest at 13:00..17:00 UTC, as if the nodes were at different
	// longitudes.
	peak := r.between(13, 17) / 24 * 2 * math.Pi
	w.tDaily = wave{amp: r.between(2.5, 3.5), period: day, phase: -peak}
	waves(w.tDrift[:], []spec{{1.2, 89 * time.Hour}, {0.8, 199 * time.Hour}, {0.5, 458 * time.Hour}}, 0.8)

	w.hMean = r.between(50, 55)
	w.hPerC = r.between(2, 2.5)
	waves(w.hDrift[:], []spec{{4, 70 * time.Hour}, {2.5, 146 * time.Hour}}, 0.8)

	w.pMean = r.between(1008, 1012)
	waves(w.pWaves[:], []spec{{6, 55 * time.Hour}, {4, 118 * time.Hour}, {3, 271 * time.Hour}}, 0.7)
	w.pTide = wave{amp: 0.6, period: day / 2, phase: phase()}
	return w
}

// at returns temperature °C, relative humidity % and pressure hPa at t.
func (w *weather) at(t time.Time) (tempC, humPct, pressHPa float64) {
	s := float64(t.Unix()-epochUnix) + float64(t.Nanosecond())/1e9
	tempC = w.tMean + w.tDaily.at(s)
	for _, d := range w.tDrift {
		tempC += d.at(s)
	}
	humPct = w.hMean - w.hPerC*(tempC-w.tMean)
	for _, d := range w.hDrift {
		humPct += d.at(s)
	}
	pressHPa = w.pMean + w.pTide.at(s)
	for _, d := range w.pWaves {
		pressHPa += d.at(s)
	}
	return tempC, humPct, pressHPa
}

// splitmix is the SplitMix64 generator: tiny, and its sequence is fixed by
// its definition, so a node's weather cannot change with a Go release.
type splitmix uint64

func (r *splitmix) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// between returns a uniform value in [lo, hi).
func (r *splitmix) between(lo, hi float64) float64 {
	return lo + (hi-lo)*float64(r.next()>>11)/(1<<53)
}
