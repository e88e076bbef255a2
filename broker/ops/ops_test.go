package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

const waitFor = 5 * time.Second

// start runs s on a free loopback port until the test ends, and returns its
// base URL and a function that stops it and returns Run's result.
func start(t *testing.T, s *Server) (string, func() error) {
	t.Helper()
	require.NoError(t, s.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-ran:
			case <-time.After(ShutdownTimeout + waitFor):
				t.Fatal("Run did not return")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + s.Addr(), stop
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: waitFor}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

// flag is a readiness check the test turns on and off.
type flag struct{ err atomic.Pointer[error] }

func (f *flag) set(err error) { f.err.Store(&err) }
func (f *flag) check() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sensorfarm_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)

	var mqttReady, storeReady flag
	mqttReady.set(errors.New("listener not started"))
	s := New("127.0.0.1:0", reg, Check{"mqtt", mqttReady.check}, Check{"store", storeReady.check})
	require.Equal(t, "127.0.0.1:0", s.Addr())
	base, stop := start(t, s)
	require.NotContains(t, base, ":0")

	code, body, hdr := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	require.Equal(t, "text/plain; charset=utf-8", hdr.Get("Content-Type"))

	code, body, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "mqtt: listener not started\nstore: ok\n", body)

	mqttReady.set(nil)
	code, body, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "mqtt: ok\nstore: ok\n", body)

	storeReady.set(errors.New("store closed"))
	code, body, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "store: store closed")

	code, body, hdr = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "sensorfarm_test_total 3\n")
	require.Contains(t, body, "promhttp_metric_handler_requests_total") // the handler's own
	require.Contains(t, hdr.Get("Content-Type"), "text/plain")

	code, _, _ = get(t, base+"/nothing")
	require.Equal(t, http.StatusNotFound, code)
	resp, err := http.Post(base+"/healthz", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	require.NoError(t, stop())
	_, err = net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	require.Error(t, err, "the listener must be closed after Run returns")
}

// broken is a collector whose scrape fails for one metric.
type broken struct{ desc *prometheus.Desc }

func (b broken) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }
func (b broken) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(b.desc, errors.New("sensor on fire"))
}

func TestMetricsContinueOnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sensorfarm_test_ok", Help: "Fine."})
	g.Set(1)
	reg.MustRegister(g, broken{prometheus.NewDesc("sensorfarm_test_broken", "Broken.", nil, nil)})
	base, _ := start(t, New("127.0.0.1:0", reg))

	code, body, _ := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "sensorfarm_test_ok 1\n")
	require.NotContains(t, body, "sensorfarm_test_broken ")
	// The error is counted after the scrape that met it.
	_, body, _ = get(t, base+"/metrics")
	require.Contains(t, body, `promhttp_metric_handler_errors_total{cause="gathering"} 1`)
}

func TestNoChecksNoMetrics(t *testing.T) {
	base, _ := start(t, New("127.0.0.1:0", nil))
	code, body, _ := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, _, _ = get(t, base+"/metrics")
	require.Equal(t, http.StatusNotFound, code)
}

func TestCheckPanicsOrIsNil(t *testing.T) {
	base, _ := start(t, New("127.0.0.1:0", nil,
		Check{"panics", func() error { panic("oops") }},
		Check{"nil", nil}))
	code, body, _ := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "panics: check panicked: oops\nnil: no check function\n", body)
}

// TestGracefulStop: a request in progress when Run's context ends is
// answered, and /readyz says the server is stopping.
func TestGracefulStop(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := New("127.0.0.1:0", nil, Check{"slow", func() error {
		close(entered)
		<-release
		return nil
	}})
	base, stop := start(t, s)

	type result struct {
		code int
		body string
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(b)}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	require.Eventually(t, s.stopping.Load, waitFor, time.Millisecond)
	close(release)

	r := <-got
	require.Equal(t, http.StatusServiceUnavailable, r.code, r.body)
	require.Equal(t, "stopping\nslow: ok\n", r.body)
	require.NoError(t, <-stopped)
}

func TestListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	s := New(ln.Addr().String(), nil)
	err = s.Listen()
	require.Error(t, err)
	require.Contains(t, err.Error(), ln.Addr().String())
	require.Error(t, s.Run(context.Background()))
}
