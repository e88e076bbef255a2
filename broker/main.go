// Command broker is the sensorfarm MQTT broker: mochi-mqtt with our
// capabilities, authentication and a persistent store.
//
// Settings come from flags, SENSORFARM_* environment variables or a YAML file
// (broker -h lists them). It stops gracefully on SIGINT or SIGTERM and exits
// 0; it exits 2 on a bad setting and 1 on any other error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sensorfarm/sensorfarm/broker/config"
	"github.com/sensorfarm/sensorfarm/broker/server"
)

// version is stamped at build time: -ldflags "-X main.version=v0.3.0".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		config.Usage(stdout)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "broker: %v\nRun 'broker -h' for the list of settings.\n", err)
		return 2
	case cfg.Version:
		fmt.Fprintln(stdout, version)
		return 0
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // after the first signal, a second one kills at once

	log.Info("starting", "version", version, "listen", cfg.Listen, "data", cfg.DataDir)
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}
