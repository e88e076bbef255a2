// Command baremochi is the benchmarks' bare mochi-mqtt: the library version our
// broker is built on, with its default capabilities, mochi's AllowHook and no
// store, hooks or limits of ours. What our broker costs beyond it is the
// price of users, ACL, persistence and gap detection.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address of the MQTT listener; port 0 picks a free one")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, log); err != nil {
		log.Error("baremochi stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string, log *slog.Logger) error {
	s := mqtt.New(&mqtt.Options{Logger: log})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return fmt.Errorf("allow hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "tcp", Address: listen})
	if err := s.AddListener(tcp); err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	if err := s.Serve(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// The runner reads the address from this line, as it does from our
	// broker's.
	fmt.Fprintf(os.Stderr, "msg=listening addr=%s\n", tcp.Address())
	<-ctx.Done()
	return s.Close()
}
