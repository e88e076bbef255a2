// Command broker is the sensorfarm MQTT broker: mochi-mqtt with our
// capabilities, authentication and a persistent store.
//
// Settings come from flags, SENSORFARM_* environment variables or a YAML file
// (broker -h lists them). It stops gracefully on SIGINT or SIGTERM and exits
// 0; it exits 2 on a bad setting and 1 on any other error. SIGHUP rereads the
// users file without dropping connections.
//
// `broker user add|del|list` manages the users file (broker user -h).
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
	"github.com/sensorfarm/sensorfarm/broker/usercmd"
)

// version is stamped at build time: -ldflags "-X main.version=v0.3.0".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "user" {
		os.Exit(usercmd.Run(os.Args[2:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// SIGHUP would end the process by default: take it over before anything
	// else, so that a reload sent while the broker starts is not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

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

	log.Info("starting", "version", version, "listen", cfg.Listen, "tls_listen", cfg.TLSListen, "data", cfg.DataDir)
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: rereading the users file")
				_ = srv.Reload() // it logs the outcome
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}
