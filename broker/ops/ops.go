// Package ops serves the broker's operational HTTP endpoints on an address of
// their own, apart from MQTT:
//
//   - GET /healthz: 200 "ok" while the process serves HTTP (liveness: a
//     failure means restart it);
//   - GET /readyz: 200 when every readiness check passes, 503 naming the ones
//     that fail, and 503 once the server is stopping (readiness: a failure
//     means send no clients here now);
//   - GET /metrics: the Prometheus registry, through promhttp.HandlerFor with
//     ContinueOnError, so that one failing collector does not hide the rest.
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownTimeout bounds the wait for requests in progress when Run stops.
const ShutdownTimeout = 5 * time.Second

// Check is one readiness check. Func returns nil when ready, or why not; it
// is called on every /readyz request, so it must be quick and must not block
// (read a flag, not the network).
type Check struct {
	Name string
	Func func() error
}

// Server is the HTTP server of the ops endpoints.
type Server struct {
	// Log receives the server's errors and the metrics handler's; nil
	// discards them. Set it before Listen or Run.
	Log *slog.Logger

	addr     string
	checks   []Check
	handler  http.Handler
	stopping atomic.Bool

	mu sync.Mutex
	ln net.Listener
}

// New returns a server for addr (host:port; port 0 picks a free one) serving
// reg on /metrics (no /metrics if reg is nil) and the ready checks on
// /readyz. Listen binds the address; Run serves.
func New(addr string, reg *prometheus.Registry, ready ...Check) *Server {
	s := &Server{addr: addr, checks: ready}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      logAdapter{s},
			ErrorHandling: promhttp.ContinueOnError,
			Registry:      reg,
			// Bounds a scrape that piles up behind a slow one.
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		})))
	}
	s.handler = mux
	return s
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// logAdapter gives promhttp the server's logger.
type logAdapter struct{ s *Server }

func (l logAdapter) Println(v ...any) {
	l.s.log().Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// Listen binds the address, so that a taken port is reported before the rest
// of the broker starts and Addr knows the real port. Run calls it if it was
// not called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("ops listener %s: %w", s.addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (with the real port) once Listen has run, else
// the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.addr
}

// Run serves until ctx ends, then stops: /readyz answers 503 from that moment,
// the listener closes, and requests in progress get ShutdownTimeout to finish.
// It returns nil after a clean stop.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("ops server: %w", err)
	case <-ctx.Done():
	}
	s.stopping.Store(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("ops server stop: %w", err)
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	ok := true
	for _, c := range s.checks {
		if err := run(c); err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", c.Name, err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.Name)
		}
	}
	// Read after the checks, which may take a moment: a stop that began
	// meanwhile is reported.
	body := b.String()
	if s.stopping.Load() {
		ok = false
		body = "stopping\n" + body
	}
	if body == "" {
		body = "ok\n"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, body)
}

// run calls one check; a check that panics fails instead of taking the
// request down.
func run(c Check) (err error) {
	if c.Func == nil {
		return errors.New("no check function")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("check panicked: %v", r)
		}
	}()
	return c.Func()
}
