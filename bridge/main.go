// Command bridge runs on each Raspberry Pi Zero: it reads the node's sensors
// and publishes their readings to the sensorfarm broker over MQTT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	"github.com/sensorfarm/sensorfarm/bridge/agent"
	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
)

// version is stamped by the build: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	cfg, err := config.Load(os.Args[1:], os.Getenv, os.Hostname)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(2)
	}
	if cfg.Version {
		fmt.Println(version)
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("site", cfg.Node.Site, "node", cfg.Node.Node)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("bridge starting", "version", version, "broker", cfg.Broker, "interval", cfg.Interval, "sim", cfg.Sim)
	open, err := busOpener(cfg)
	if err != nil {
		log.Error("bridge cannot start", "err", err)
		os.Exit(1)
	}
	err = agent.Run(ctx, agent.Options{Config: cfg, Version: version, OpenBus: open, Log: log})
	if err != nil {
		log.Error("bridge stopped", "err", err)
		os.Exit(1)
	}
	log.Info("bridge stopped")
}

func busOpener(cfg config.Config) (func() (i2c.BusCloser, error), error) {
	if !cfg.Sim {
		return func() (i2c.BusCloser, error) {
			if _, err := host.Init(); err != nil {
				return nil, fmt.Errorf("periph host init: %w", err)
			}
			return i2creg.Open(cfg.I2CBus)
		}, nil
	}
	var capture []byte
	if cfg.GPSReplay != "" {
		b, err := os.ReadFile(cfg.GPSReplay)
		if err != nil {
			return nil, fmt.Errorf("--gps-replay: %w", err)
		}
		capture = b
	}
	open, err := sim.BoardOpener(sim.BoardOpts{Node: cfg.Node.Node, GPS: cfg.GPS, Capture: capture, ReplaySpeed: cfg.GPSReplaySpeed, BusHz: cfg.SimI2CHz})
	if err != nil {
		return nil, fmt.Errorf("--gps-replay %s: %w", cfg.GPSReplay, err)
	}
	return open, nil
}
