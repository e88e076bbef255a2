// Command demo runs the farm on this machine without hardware: the broker in
// demo mode on loopback and three bridges reading simulated sensors. It prints
// how to watch with mosquitto_sub, follows the readings itself, and on Ctrl-C
// (or after --duration) stops every process it started, by PID.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/internal/child"
	"github.com/sensorfarm/sensorfarm/wire"
)

type options struct {
	bin      string
	dir      string
	site     string
	nodes    int
	interval time.Duration
	duration time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding the broker and bridge binaries")
	flag.StringVar(&o.dir, "dir", ".cache/demo", "directory for the broker's data, the bridges' spools and all logs")
	flag.StringVar(&o.site, "site", "demo", "site name of the simulated bridges")
	flag.IntVar(&o.nodes, "nodes", 3, "number of simulated bridges")
	flag.DurationVar(&o.interval, "interval", 2*time.Second, "time between readings")
	flag.DurationVar(&o.duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	flag.Parse()

	// SIGPIPE too: when whoever reads the demo's output goes away (`| head`),
	// the demo must still stop what it started instead of dying at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if err := os.MkdirAll(o.dir, 0o750); err != nil {
		return err
	}
	addr, err := pickAddr("127.0.0.1:1883")
	if err != nil {
		return err
	}
	opsAddr, err := pickAddr("127.0.0.1:9883")
	if err != nil {
		return err
	}
	var procs []*proc
	var watcher mqtt.Client
	defer func() {
		// Bridges first, so each says offline while the broker is still up
		// and the watcher still shows it.
		for i := len(procs) - 1; i >= 0; i-- {
			if i == 0 && watcher != nil {
				time.Sleep(300 * time.Millisecond)
				watcher.Disconnect(250)
			}
			procs[i].stop()
		}
		printHistory(o)
	}()

	broker, err := start(o, "broker", "--listen", addr, "--demo", "--data", filepath.Join(o.dir, "broker"), "--ops-listen", opsAddr)
	if err != nil {
		return err
	}
	procs = append(procs, broker)
	if err := waitListening(ctx, addr, 10*time.Second); err != nil {
		return fmt.Errorf("broker did not start (see %s): %w", broker.log, err)
	}

	host, port, _ := net.SplitHostPort(addr)
	fmt.Printf("broker listening on %s (demo mode: anonymous, loopback only)\n", addr)
	fmt.Printf("watch it from another terminal with:\n\n    mosquitto_sub -h %s -p %s -t '%s' -v\n\n", host, port, wire.AllReadings(wire.DefaultPrefix))
	fmt.Printf("the broker's metrics: http://%s/metrics (health: /healthz, /readyz)\n", opsAddr)
	fmt.Printf("logs are in %s; press Ctrl-C to stop everything\n\n", o.dir)

	arch, err := startArchive(o, addr)
	if err != nil {
		return err
	}
	procs = append(procs, arch)

	if watcher, err = follow(addr); err != nil {
		return err
	}

	for i := 1; i <= o.nodes; i++ {
		node := fmt.Sprintf("pizero-%02d", i)
		b, err := start(o, "bridge-"+node, "--sim", "--broker", "tcp://"+addr, "--site", o.site, "--node", node,
			"--interval", o.interval.String(), "--spool", filepath.Join(o.dir, node))
		if err != nil {
			return err
		}
		procs = append(procs, b)
	}
	select {
	case <-ctx.Done():
	case p := <-exited(procs):
		return fmt.Errorf("%s exited early (see %s)", p.name, p.log)
	}
	fmt.Println("\nstopping: every bridge, then the broker")
	return nil
}

// pickAddr returns want if it is free, else another free loopback port.
func pickAddr(want string) (string, error) {
	l, err := net.Listen("tcp", want)
	if err != nil {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		fmt.Printf("%s is taken; using %s instead\n", want, l.Addr())
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func waitListening(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// follow subscribes to the whole farm and prints one line per message.
func follow(addr string) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("demo-watcher-" + strconv.Itoa(os.Getpid())).
		SetAutoReconnect(true).SetOrderMatters(true)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("watcher cannot connect: %v", tok.Error())
	}
	tok := c.Subscribe(wire.AllReadings(wire.DefaultPrefix), wire.QoS, func(_ mqtt.Client, m mqtt.Message) {
		fmt.Println(describe(m.Topic(), m.Payload(), m.Retained()))
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("watcher cannot subscribe: %v", tok.Error())
	}
	return c, nil
}

// describe renders a message for a person: readings as values with units.
func describe(topic string, payload []byte, retained bool) string {
	parts := strings.Split(topic, "/")
	where := topic
	if len(parts) >= 3 {
		where = parts[1] + "/" + parts[2]
	}
	mark := ""
	if retained {
		mark = " (retained)"
	}
	if len(parts) > 1 && parts[1] == "$broker" {
		var g struct {
			Missing    uint64 `json:"missing"`
			Duplicates uint64 `json:"duplicates"`
			Received   uint64 `json:"received"`
		}
		if err := json.Unmarshal(payload, &g); err != nil {
			return fmt.Sprintf("%s broker %s: unreadable payload: %v", time.Now().Format("15:04:05"), topic, err)
		}
		return fmt.Sprintf("%s broker gap detector %s: %d received, %d missing, %d duplicates%s",
			time.Now().Format("15:04:05"), strings.Join(parts[2:], "/"), g.Received, g.Missing, g.Duplicates, mark)
	}
	switch last := parts[len(parts)-1]; last {
	case wire.StreamEnv:
		var r wire.Env
		if err := json.Unmarshal(payload, &r); err != nil {
			return fmt.Sprintf("%-16s env: unreadable payload: %v", where, err)
		}
		return fmt.Sprintf("%s %-16s env #%-5d %s  %s  %s%s", r.TS.Local().Format("15:04:05"), where, r.Seq,
			value(r.TemperatureC, "%6.2f °C"), value(r.HumidityPct, "%5.1f %%"), value(r.PressureHPa, "%7.2f hPa"), mark)
	case wire.StreamGPS:
		var r wire.GPS
		if err := json.Unmarshal(payload, &r); err != nil {
			return fmt.Sprintf("%-16s gps: unreadable payload: %v", where, err)
		}
		return fmt.Sprintf("%s %-16s gps #%-5d %.6f, %.6f  %s  %dD fix, %d sats, ±%s%s", r.TS.Local().Format("15:04:05"), where, r.Seq,
			r.Latitude, r.Longitude, value(r.AltitudeM, "%.1f m"), r.Fix, r.Sats, value(r.GPSAccuracy, "%.1f m"), mark)
	case "health":
		var h wire.Health
		if err := json.Unmarshal(payload, &h); err != nil {
			return fmt.Sprintf("%-16s health: unreadable payload: %v", where, err)
		}
		return fmt.Sprintf("%s %-16s health: up %ds, spool %d, dropped %d, gps fix %d, sensor errors %v, clock %s%s",
			h.TS.Local().Format("15:04:05"), where, h.UptimeS, h.SpoolDepth, h.Dropped, h.GPSFix, h.SensorErrors, h.TimeSource, mark)
	case "status":
		return fmt.Sprintf("%s %-16s is %s%s", time.Now().Format("15:04:05"), where, payload, mark)
	default:
		return fmt.Sprintf("%s %-16s %s %s%s", time.Now().Format("15:04:05"), where, strings.Join(parts[3:], "/"), payload, mark)
	}
}

func value(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// proc is a child process the demo started and must stop.
type proc struct {
	*child.Process
	name string
	log  string
}

func start(o options, name string, args ...string) (*proc, error) {
	binName := name
	if strings.HasPrefix(name, "bridge-") {
		binName = "bridge"
	}
	logPath := filepath.Join(o.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(o.bin, binName), args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: Ctrl-C reaches only the demo, which then stops
	// the children in order instead of all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c, err := child.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &proc{Process: c, name: name, log: logPath}, nil
}

// stop ends the process by its PID: SIGTERM, then SIGKILL if it lingers.
func (p *proc) stop() {
	if !p.Running() {
		return
	}
	p.Stop(5 * time.Second)
	fmt.Printf("stopped %s (pid %d)\n", p.name, p.PID())
}

func exited(procs []*proc) <-chan *proc {
	ch := make(chan *proc, len(procs))
	for _, p := range procs {
		go func() {
			<-p.Done()
			ch <- p
		}()
	}
	return ch
}
