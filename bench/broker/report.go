package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/bench/chart"
	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/stats"
)

// Machine describes where the figures were taken.
type Machine struct {
	CPU        string
	Cores      int
	Kernel     string
	Go         string
	Mosquitto  string
	Pinned     bool
	BrokerCPU  int
	LoadCPU    int
	Plan       string
	StartedAt  time.Time
	TookFor    time.Duration
	OpenFilesN uint64
}

// report is everything the run measured.
type report struct {
	machine Machine
	plan    Plan
	res     *Results
	farm    *FarmResult
	farmErr error // the farm lost readings: the run fails
	qemu    *QemuResult
}

func (rp *report) markdown() []byte {
	var b bytes.Buffer
	m := rp.machine
	fmt.Fprintf(&b, "# Broker benchmarks (%s)\n\n", m.Plan)
	pinning := "Nothing pinned: the brokers and the load tool share both cores."
	if m.Pinned {
		pinning = fmt.Sprintf("Each broker pinned to core %d, the load tool to core %d (`taskset`).", m.BrokerCPU, m.LoadCPU)
	}
	fmt.Fprintf(&b, "Written by `bench/broker` on %s in %s. Machine: %s, %d cores, Linux %s, %s, %s. %s Open files: %d.\n\n",
		m.StartedAt.UTC().Format(time.RFC3339), m.TookFor.Round(time.Second), m.CPU, m.Cores, m.Kernel, m.Go, m.Mosquitto,
		pinning, m.OpenFilesN)
	fmt.Fprintf(&b, "Peers, each started fresh for every run: **ours** (`bin/broker --users --data`: bcrypt users at cost %d, the ACL, the pebble "+
		"store with fsync before every acknowledgement that needs it, the gap detector, metrics), **mosquitto** with the same users and ACL "+
		"(`broker user export --format mosquitto`, PBKDF2 at %d iterations) and persistence on, saved every second, and **mochi** "+
		"(bare mochi-mqtt, the version in go.mod, AllowHook, no store, its default capabilities: what our hooks cost). %d runs; each cell is "+
		"the median [min–max]; a ratio is ours/peer computed run by run, median [min–max]; where ours and a peer's ranges overlap, "+
		"the two are a tie.\n\n", fleet.Cost, mosquittoIterations, rp.plan.Runs)
	b.WriteString("| benchmark | figure | ours | mochi | mosquitto | ours/mosquitto | ours/mochi | targets |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, bench := range rp.res.benches {
		for _, mt := range rp.res.metrics[bench] {
			vals := rp.res.values[bench][mt]
			cell := func(k Kind) string { s, ok := stats.Of(vals[k]); return fmtSpread(s, ok) }
			rm, okm := rp.res.ratio(bench, mt, Mosquitto)
			rc, okc := rp.res.ratio(bench, mt, Mochi)
			fmt.Fprintf(&b, "| %s | %s (%s) | %s | %s | %s | %s | %s | %s |\n", bench, mt.name, mt.unit,
				cell(Ours), cell(Mochi), cell(Mosquitto), fmtRatio(rm, okm), fmtRatio(rc, okc), rp.verdict(bench, mt))
		}
	}
	fmt.Fprintf(&b, "\nThroughput is closed loop (each publisher keeps a window of unacknowledged QoS 1 messages: 1 for fan-in, "+
		"%d for fan-out) and counts deliveries per second at the subscribers. Latencies are open loop at a fixed rate, "+
		"%.0f msgs/s in all for fan-in (%.0f per publisher) and %.0f deliveries/s for fan-out (the publisher's rate divided by "+
		"the subscribers), from each message's intended send time to its arrival, so a stall counts in every message it delays. "+
		"No message was lost in any run (a loss fails the run).\n\n",
		rp.plan.FanOutWindow, rp.plan.FanInRate*float64(rp.plan.FanInPublishers), rp.plan.FanInRate, rp.plan.FanOutOpenLoad)
	if pl := rp.plan; pl.BusySubscribers > 0 {
		than := "fewer than mochi's default queue of 8,192 slots a client, so this run does not show what a full turn of it costs"
		if pl.BusyMessages > mochiQueueSlots {
			than = "more than mochi's default queue of 8,192 slots a client (64 KiB, mapped by the kernel only as the queue goes round it; ours has 1,024)"
		}
		fmt.Fprintf(&b, "Benchmark 3 counts connections that never carried a message. In 3b, %d clean subscribers to one topic are each sent %d QoS 0 "+
			"messages (%.0f a second), %s: the RSS the broker grew by from before the subscribers connected to after the last delivery, "+
			"per subscriber, with what the traffic left behind for the next garbage collection.\n\n",
			pl.BusySubscribers, pl.BusyMessages, pl.BusyRate, than)
	}
	if f := rp.farm; f != nil {
		a := f.Audit
		fmt.Fprintf(&b, "## 4. Farm: %d simulated bridges at 1 Hz for %s, against ours\n\n", f.Bridges, f.For.Round(time.Second))
		b.WriteString("Each bridge is the real bridge code (`bridge/agent.Run`, its spool, publisher, status and will) over a simulated board, " +
			"with its own connection, user and spool; one env reading a second (GPS off). The archiver is a reader with a persistent session, " +
			"so each reading costs the broker three synced store writes: the retained live value, the archiver's in-flight copy and its removal on PUBACK. " +
			fmt.Sprintf("Steady figures leave out the first %s, while every bridge connects at once (benchmark 3's business).\n\n", f.Warmup))
		if rp.farmErr != nil {
			fmt.Fprintf(&b, "**The farm failed:** %v.\n\n", rp.farmErr)
		}
		b.WriteString("| figure | value |\n|---|---:|\n")
		fmt.Fprintf(&b, "| readings taken / archived | %d / %d |\n", a.Expected, a.Received)
		fmt.Fprintf(&b, "| lost (by seq) / duplicates / left in spools / dropped | %d / %d / %d / %d |\n", a.Lost, a.Duplicates, a.Undelivered, a.Dropped)
		fmt.Fprintf(&b, "| steady: readings/s archived | %.0f |\n", float64(f.SteadyReadings)/f.SteadyFor.Seconds())
		fmt.Fprintf(&b, "| steady: broker CPU (utime+stime) | %s in %s = %.1f %% of one core |\n", f.SteadyCPU.Round(time.Millisecond),
			f.SteadyFor.Round(time.Second), 100*f.SteadyCPU.Seconds()/f.SteadyFor.Seconds())
		fmt.Fprintf(&b, "| steady: broker CPU per reading | %.0f µs |\n", float64(f.CPUPerReading().Nanoseconds())/1e3)
		fmt.Fprintf(&b, "| broker RSS at the end / peak | %.1f MiB / %.1f MiB |\n", float64(f.RSSKiB)/1024, float64(f.PeakRSSKiB)/1024)
		fmt.Fprintf(&b, "| steady: end-to-end latency (reading ts → archiver) p50 / p99 / max | %.1f / %.1f / %.1f ms |\n",
			ms(a.Steady.Quantile(0.5)), ms(a.Steady.Quantile(0.99)), ms(a.Steady.Max()))
		fmt.Fprintf(&b, "| whole run, start included: end-to-end p50 / p99 / max | %.1f / %.1f / %.1f ms |\n\n",
			ms(a.Latency.Quantile(0.5)), ms(a.Latency.Quantile(0.99)), ms(a.Latency.Max()))
		b.WriteString("(`ts` has millisecond resolution, so latencies are exact to about 1 ms.)\n\n")
	}
	if q := rp.qemu; q != nil {
		fmt.Fprintf(&b, "## How far one broker goes\n\nOur broker's CPU per message on closed-loop fan-in (%d messages): native %s, "+
			"arm64 build under `qemu-aarch64-static -cpu cortex-a72` %s: a factor of **%.1f**. qemu translates the broker's own code "+
			"but its system calls run natively in the host's kernel, so this factor understates a real Cortex-A72; the usual estimate "+
			"of a Pi 4's A72 at 1.5 GHz against an x86-64 server core is 3-5×.\n\n",
			q.Messages, q.Native, q.Emulated, q.Factor())
		if f := rp.farm; f != nil && f.SteadyReadings > 0 {
			for _, e := range capacities(f.CPUPerReading(), q.Factor()) {
				fmt.Fprintf(&b, "- %s\n", e)
			}
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

// capacities turn the farm's CPU per reading into bridges at one reading a
// second that one core of a Pi 4 carries (a quarter of the Pi: room is left
// for pebble's compactions, bursts and everything else), for qemu's factor
// and for a 5x slower core, the pessimistic end of the usual estimate.
func capacities(perReading time.Duration, qemuFactor float64) []string {
	var out []string
	for _, f := range []struct {
		what   string
		factor float64
	}{{fmt.Sprintf("qemu's factor, %.1f× (optimistic)", qemuFactor), qemuFactor}, {"a 5× slower core (pessimistic)", 5}} {
		cost := perReading.Seconds() * f.factor
		n := 1 / cost
		out = append(out, fmt.Sprintf("with %s: %.0f µs of CPU per reading, so one of a Pi 4's four cores carries about **%.0f bridges at 1 Hz** (about %.0f at the bridge's default of one env reading every 10 s)",
			f.what, cost*1e6, math.Floor(n/50)*50, math.Floor(n*10/500)*500))
	}
	return out
}

func (rp *report) verdict(bench string, m metric) string {
	var parts []string
	for _, peer := range []Kind{Mosquitto, Mochi} {
		limit, ok := target(bench, m, peer)
		if !ok {
			continue
		}
		s, have := rp.res.ratio(bench, m, peer)
		if !have {
			continue
		}
		op := "≥"
		if !m.higherBetter {
			op = "≤"
		}
		word := "met"
		if !met(m, s, limit) {
			word = "**not met**"
		}
		vals := rp.res.values[bench][m]
		if a, ok := stats.Of(vals[Ours]); ok {
			if b, ok := stats.Of(vals[peer]); ok && a.Overlaps(b) {
				word = "tie (the ranges overlap)"
			}
		}
		parts = append(parts, fmt.Sprintf("vs %s %s %.2f: %s", peer, op, limit, word))
	}
	if m == metricKiBConn {
		s, ok := stats.Of(rp.res.values[bench][m][Ours])
		if ok {
			word := "met"
			if s.Median > KiBPerConnTarget {
				word = "**not met**"
			}
			parts = append(parts, fmt.Sprintf("ours ≤ %.0f KiB: %s", KiBPerConnTarget, word))
		}
	}
	return strings.Join(parts, "; ")
}

// chart draws the ratios ours/peer as horizontal bars around 1.0: one row
// per benchmark figure, one bar against mosquitto and one against mochi.
func (rp *report) chart(path string) error {
	type row struct {
		label string
		vs    [2]float64
		ok    [2]bool
		lower bool
	}
	var rows []row
	for _, bench := range rp.res.benches {
		for _, m := range rp.res.metrics[bench] {
			if m == metricP50 {
				continue
			}
			r := row{label: fmt.Sprintf("%s: %s", bench, m.name), lower: !m.higherBetter}
			for i, peer := range []Kind{Mosquitto, Mochi} {
				s, ok := rp.res.ratio(bench, m, peer)
				r.vs[i], r.ok[i] = s.Median, ok
			}
			rows = append(rows, r)
		}
	}
	const (
		labelW = 330
		barW   = 420
		rowH   = 34
		top    = 50
		left   = 10
	)
	maxRatio := 2.0
	for _, r := range rows {
		for i := range r.vs {
			if r.ok[i] {
				maxRatio = math.Max(maxRatio, math.Min(r.vs[i]*1.1, 8))
			}
		}
	}
	c := chart.New(left+labelW+barW+80, top+rowH*len(rows)+40)
	text, fill := c.Text, c.Fill
	black := color.Black
	grey := color.RGBA{200, 200, 200, 255}
	colors := [2]color.RGBA{{214, 96, 77, 255}, {67, 147, 195, 255}}
	text(left, 18, "sensorfarm broker / peer (median of "+fmt.Sprint(rp.plan.Runs)+" runs); 1.0 = same as the peer", black)
	fill(left, 28, left+12, 38, colors[0])
	text(left+16, 38, "ours / mosquitto", black)
	fill(left+160, 28, left+172, 38, colors[1])
	text(left+176, 38, "ours / bare mochi", black)
	text(left+330, 38, "(throughput: higher is better; latency, memory: lower)", black)
	x0 := left + labelW
	scale := float64(barW) / maxRatio
	for i := 0.0; i <= maxRatio; i += 0.5 {
		x := x0 + int(i*scale)
		c := grey
		if i == 1 {
			c = color.RGBA{0, 0, 0, 255}
		}
		fill(x, top-4, x+1, top+rowH*len(rows), c)
		if math.Mod(i, 1) == 0 {
			text(x-6, top+rowH*len(rows)+14, fmt.Sprintf("%.0f", i), black)
		}
	}
	for j, r := range rows {
		y := top + j*rowH
		label := strings.ReplaceAll(r.label, "→", "->") // counted as the font draws it
		if len(label) > labelW/chart.CharW-1 {
			label = label[:labelW/chart.CharW-2] + "..."
		}
		text(left, y+20, label, black)
		for i := range r.vs {
			if !r.ok[i] {
				continue
			}
			bw := int(math.Min(r.vs[i], maxRatio) * scale)
			yy := y + 4 + i*13
			fill(x0, yy, x0+bw, yy+11, colors[i])
			text(x0+bw+4, yy+10, fmt.Sprintf("%.2f", r.vs[i]), black)
		}
	}
	b, err := c.PNG()
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

func goVersion() string { return runtime.Version() }
