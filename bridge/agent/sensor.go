package agent

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
)

// sensorState tracks one sensor's health: its error count and the last error
// logged, so that a sensor failing the same way every retry is logged once.
type sensorState struct {
	a    *agent
	name string
	addr uint16

	mu       sync.Mutex
	count    uint64
	lastErr  string
	nextOpen time.Time
}

func (a *agent) newSensor(name string, addr uint16) *sensorState {
	s := &sensorState{a: a, name: name, addr: addr}
	a.mu.Lock()
	a.sensors = append(a.sensors, s)
	a.mu.Unlock()
	return s
}

func (s *sensorState) errors() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// bus returns the shared bus if this sensor may try to open now: at most once
// per --sensor-retry, because a missing sensor will not appear every second.
func (s *sensorState) bus() (i2c.Bus, bool) {
	s.mu.Lock()
	now := time.Now()
	if now.Before(s.nextOpen) {
		s.mu.Unlock()
		return nil, false
	}
	s.nextOpen = now.Add(s.a.opts.Config.SensorRetry)
	s.mu.Unlock()
	bus, err := s.a.bus.get()
	if err != nil {
		cfg := s.a.opts.Config
		name := strconv.Quote(cfg.I2CBus)
		if cfg.I2CBus == "" {
			name = "(the first one)"
		}
		s.fail(fmt.Errorf("%s at %#x: I2C bus %s cannot be opened: %w (is I2C enabled? sudo raspi-config nonint do_i2c 0)",
			s.name, s.addr, name, err))
		return nil, false
	}
	return bus, true
}

// wait sleeps until the sensor may be tried again, or ctx ends.
func (s *sensorState) wait(ctx context.Context) {
	s.mu.Lock()
	d := time.Until(s.nextOpen)
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// fail counts an error and logs it when it differs from the last one.
func (s *sensorState) fail(err error) {
	s.mu.Lock()
	s.count++
	n := s.count
	msg := err.Error()
	repeat := msg == s.lastErr
	s.lastErr = msg
	s.mu.Unlock()
	if !repeat {
		s.a.log.Error(s.name+" unavailable; retrying", "err", err, "errors", n, "retry_in", s.a.opts.Config.SensorRetry)
		s.a.stateChanged()
	}
}

// ready logs a sensor that works (again).
func (s *sensorState) ready(what string) {
	s.mu.Lock()
	recovered := s.lastErr != ""
	s.lastErr = ""
	n := s.count
	s.mu.Unlock()
	s.a.log.Info("sensor ready", "sensor", what, "errors_before", n, "recovered", recovered)
	if recovered {
		s.a.stateChanged()
	}
}
