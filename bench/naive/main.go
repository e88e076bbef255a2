// Command naive is the peer of benchmark 5: a sensor bridge written the way
// most tutorials write one, to weigh what the real bridge's design costs or
// saves. It reads the same simulated board as `bridge --sim` (bridge/sim: the
// register-level BME280 and the PA1010D serving NMEA over I2C) and publishes
// to the same topics, so a subscriber counts both bridges' readings alike.
//
// The tutorial choices, each one on purpose:
//   - the GPS is read one byte per I2C transaction (as Adafruit's
//     GPS_GtopI2C does), and left at its power-on output (GGA, GSA, GSV, RMC,
//     VTG) because nothing sends it PMTK314;
//   - every sentence is parsed with go-nmea, and a reading is published for
//     every valid RMC, with the last GGA's altitude, satellites and HDOP;
//   - the BME280 through periph's bmxx80 with its DefaultOpts (4x
//     oversampling), Sense once per interval;
//   - payloads are map[string]any through encoding/json;
//   - paho's FileStore keeps QoS 1 messages in flight (one file per message),
//     with a persistent session;
//   - each publish waits for its PUBACK (token.Wait()) before the next.
//
// It is not part of the farm: it has no spool, no seq, no health and no
// reconnect logic of its own, which is what a tutorial leaves out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/adrianmo/go-nmea"
	paho "github.com/eclipse/paho.mqtt.golang"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/wire"
)

type options struct {
	broker, site, node, store string
	interval                  time.Duration
	replaySpeed               float64
}

func main() {
	var o options
	fs := flag.NewFlagSet("naive", flag.ExitOnError)
	fs.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker `URL`")
	fs.StringVar(&o.site, "site", "bench", "site name")
	fs.StringVar(&o.node, "node", "naive", "node name")
	fs.StringVar(&o.store, "store", "", "`directory` of paho's FileStore (required)")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between BME280 readings")
	fs.Float64Var(&o.replaySpeed, "gps-replay-speed", 1, "the simulated GPS runs that many times faster")
	_ = fs.Parse(os.Args[1:])
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", o.node)
	if o.store == "" {
		log.Error("--store is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("naive bridge stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: o.site, Node: o.node}
	if err := node.Validate(); err != nil {
		return err
	}
	open, err := sim.BoardOpener(sim.BoardOpts{Node: o.node, GPS: true, ReplaySpeed: o.replaySpeed, BusHz: sim.StandardHz})
	if err != nil {
		return err
	}
	bus, err := open()
	if err != nil {
		return fmt.Errorf("open the simulated I2C bus: %w", err)
	}
	defer bus.Close()
	bme, err := bmxx80.NewI2C(bus, sim.BME280Addr, &bmxx80.DefaultOpts)
	if err != nil {
		return fmt.Errorf("bme280: %w", err)
	}

	opts := paho.NewClientOptions().AddBroker(o.broker).SetClientID("naive:" + o.site + ":" + o.node).
		SetCleanSession(false).SetStore(paho.NewFileStore(o.store))
	client := paho.NewClient(opts)
	if t := client.Connect(); t.Wait() && t.Error() != nil {
		return fmt.Errorf("connect to %s: %w", o.broker, t.Error())
	}
	defer client.Disconnect(250)
	log.Info("naive bridge running", "broker", o.broker)

	publish := func(topic string, m map[string]any) error {
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode %s: %w", topic, err)
		}
		t := client.Publish(topic, wire.QoS, true, b)
		t.Wait()
		return t.Error()
	}

	gpsDone := make(chan error, 1)
	go func() {
		gpsDone <- readGPS(ctx, bus, func(m map[string]any) error { return publish(node.Live(wire.StreamGPS), m) })
	}()

	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-gpsDone
		case err := <-gpsDone:
			return err
		case <-tick.C:
		}
		var e physic.Env
		if err := bme.Sense(&e); err != nil {
			log.Warn("bme280", "err", err)
			continue
		}
		err := publish(node.Live(wire.StreamEnv), map[string]any{
			"site": o.site, "node": o.node, "ts": time.Now().UTC().Format(time.RFC3339Nano),
			"temperature_c": e.Temperature.Celsius(),
			"humidity_pct":  float64(e.Humidity) / float64(physic.PercentRH),
			"pressure_hpa":  float64(e.Pressure) / float64(100*physic.Pascal),
		})
		if err != nil {
			log.Warn("publish env", "err", err)
		}
	}
}

// gpsIdle is how long the GPS loop sleeps when the receiver has nothing,
// the same idle poll as the real bridge's, so the comparison is of the reads
// and not of the polling rate.
const gpsIdle = 100 * time.Millisecond

// readGPS reads the receiver a byte at a time, assembles lines, and publishes
// a reading for each valid RMC.
func readGPS(ctx context.Context, bus i2c.Bus, publish func(map[string]any) error) error {
	var (
		line []byte
		one  [1]byte
		gga  nmea.GGA
	)
	for ctx.Err() == nil {
		if err := bus.Tx(pa1010d.Addr, nil, one[:]); err != nil {
			return fmt.Errorf("pa1010d: %w", err)
		}
		c := one[0]
		if c == '\n' && (len(line) == 0 || line[len(line)-1] != '\r') {
			// The PA1010D pads with '\n' when it has nothing to send.
			select {
			case <-ctx.Done():
			case <-time.After(gpsIdle):
			}
			continue
		}
		if c != '\n' {
			line = append(line, c)
			continue
		}
		s, err := nmea.Parse(string(line[:len(line)-1]))
		line = line[:0]
		if err != nil {
			continue
		}
		switch m := s.(type) {
		case nmea.GGA:
			gga = m
		case nmea.RMC:
			if m.Validity != nmea.ValidRMC {
				continue
			}
			err := publish(map[string]any{
				"ts": time.Now().UTC().Format(time.RFC3339Nano), "latitude": m.Latitude, "longitude": m.Longitude,
				"speed_kmh": m.Speed * 1.852, "course_deg": m.Course, "altitude_m": gga.Altitude,
				"sats": gga.NumSatellites, "hdop": gga.HDOP,
			})
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("publish gps: %w", err)
			}
		}
	}
	return nil
}
