// Command naivearchive is the peer of the archive's benchmark: the archiver
// one writes first, one INSERT per message in its own transaction
// (autocommit), paho acknowledging each message when the handler returns.
// Same decoder, same schema, same persistent session as bin/archive; only
// the batching and the acknowledgement after commit differ.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/ingest"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/wire"
)

func main() {
	broker := flag.String("broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	db := flag.String("db", "naive.db", "SQLite file or postgres:// URL")
	id := flag.String("client-id", "naive-archive", "client id of the persistent session")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := store.Open(ctx, *db)
	if err != nil {
		log.Error("naive archive", "err", err)
		os.Exit(1)
	}
	defer st.Close()
	dec := decode.Decoder{Prefix: wire.DefaultPrefix, MaxPayload: decode.DefaultMaxPayload}
	cols := []string{"site", "node", "stream", "seq", "ts", "time_source", "backlog", "received_at"}
	values := decode.ValueColumns()
	for _, c := range values {
		cols = append(cols, c.Name)
	}
	ph := make([]string, len(cols))
	for i := range ph {
		ph[i] = "?"
		if store.IsPostgres(*db) {
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
	}
	insert := "INSERT INTO readings (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ") ON CONFLICT DO NOTHING"
	handle := func(_ mqtt.Client, m mqtt.Message) {
		it := dec.Decode(decode.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
		r := it.Reading
		if r == nil {
			return
		}
		args := []any{r.Site, r.Node, r.Stream, int64(r.Seq), st.TS(r.TS), r.TimeSource, r.Backlog, st.TS(time.Now())}
		for _, c := range values {
			args = append(args, r.Values[c.Name])
		}
		if _, err := st.DB().ExecContext(ctx, insert, args...); err != nil {
			log.Error("insert", "err", err)
		}
	}
	filters := map[string]byte{}
	for _, f := range ingest.Filters(wire.DefaultPrefix) {
		filters[f] = wire.QoS
	}
	o := mqtt.NewClientOptions().AddBroker(*broker).SetClientID(*id).SetCleanSession(false).SetAutoReconnect(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			go c.SubscribeMultiple(filters, handle).Wait()
			log.Info("connected to the broker")
		})
	c := mqtt.NewClient(o)
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		log.Error("connect", "err", t.Error())
		os.Exit(1)
	}
	<-ctx.Done()
	c.Disconnect(500)
}
