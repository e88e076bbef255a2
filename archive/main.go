// Command archive keeps the farm's history: it subscribes to every node's
// readings (live and backlog) and health with a persistent session on any
// MQTT broker and writes each reading once, at its own ts, into SQLite or
// PostgreSQL (archive/README.md). `archive export` writes readings as CSV.
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
	"time"

	"github.com/sensorfarm/sensorfarm/archive/config"
	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/ingest"
	"github.com/sensorfarm/sensorfarm/archive/metrics"
	"github.com/sensorfarm/sensorfarm/archive/retention"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/broker/ops"
)

// version is stamped by the build: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "export" {
		os.Exit(exportMain(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	cfg, err := config.Load(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive: %v\n", err)
		os.Exit(2)
	}
	if cfg.Version {
		fmt.Println(version)
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("archive stopped", "err", err)
		os.Exit(1)
	}
	log.Info("archive stopped")
}

func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log.Info("archive starting", "version", version, "broker", cfg.Broker, "db", store.Redact(cfg.DB), "client_id", cfg.ClientID)
	st, err := openStore(ctx, cfg.DB, log)
	if err != nil {
		return err
	}
	defer st.Close()
	m, reg, err := metrics.New()
	if err != nil {
		return err
	}
	m.DBUp.Set(1)
	p := ingest.New(ingest.Options{
		Store: st, Decoder: decode.Decoder{Prefix: cfg.Prefix, MaxPayload: cfg.MaxPayload}, Metrics: m, Log: log,
		BatchSize: cfg.BatchSize, BatchWait: cfg.BatchWait, BatchIdle: cfg.BatchIdle, MaxPending: cfg.MaxPending,
		CommitTimeout: 30 * time.Second,
	})
	// The handler's wait on a full queue ends with the process.
	sub, err := ingest.Subscribe(ctx, ingest.MQTTOptions{Broker: cfg.Broker, CAFile: cfg.CAFile, Username: cfg.Username,
		Password: cfg.Password, ClientID: cfg.ClientID, Prefix: cfg.Prefix, Metrics: m, Log: log}, p)
	if err != nil {
		return err
	}
	done := make(chan error, 2)
	opsCtx, opsStop := context.WithCancel(context.WithoutCancel(ctx))
	defer opsStop()
	if cfg.OpsListen != "" {
		srv := ops.New(cfg.OpsListen, reg, ops.Check{Name: "mqtt", Func: sub.Ready}, ops.Check{Name: "database", Func: p.DBReady})
		srv.Log = log
		if err := srv.Listen(); err != nil {
			sub.Close()
			return err
		}
		log.Info("ops listening", "addr", srv.Addr())
		go func() { done <- srv.Run(opsCtx) }()
	}
	if cfg.Retention > 0 || cfg.DownsampleAfter > 0 {
		go retention.Run(ctx, st, retention.Policy{Retention: cfg.Retention, DownsampleAfter: cfg.DownsampleAfter, DownsampleTo: cfg.DownsampleTo}, log)
	}
	// Run returns once ctx ended and what was queued is committed and
	// acknowledged; only then does the connection close.
	err = p.Run(ctx)
	sub.Close()
	opsStop()
	if cfg.OpsListen != "" {
		err = errors.Join(err, <-done)
	}
	return err
}

// openStore opens the database, retrying while it is unreachable (a
// PostgreSQL that starts after the archive), until ctx ends.
func openStore(ctx context.Context, dsn string, log *slog.Logger) (*store.Store, error) {
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		st, err := store.Open(ctx, dsn)
		if err == nil {
			log.Info("archive database open", "kind", st.Kind, "db", store.Redact(dsn))
			return st, nil
		}
		if !store.IsPostgres(dsn) {
			return nil, err
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("database unreachable; retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped before the database answered: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
