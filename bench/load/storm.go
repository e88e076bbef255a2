package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Storm opens many persistent sessions at once, as a farm's bridges do when
// the broker comes back.
type Storm struct {
	Addr string
	// Login gives client i (from 0) its identity; client IDs must differ.
	Login func(i int) Login
	N     int
	// Concurrency is how many connections are being opened at once.
	Concurrency int
	Limit       time.Duration
}

// StormResult is how the connections went.
type StormResult struct {
	Connected int
	// Elapsed runs from the first dial to the last CONNACK.
	Elapsed time.Duration
	// Connack is each client's time from dial to CONNACK.
	Connack Histogram
}

// Rate is connections per second.
func (r *StormResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Connected) / r.Elapsed.Seconds()
}

// Sessions are the connections a storm left open.
type Sessions struct{ clients []mqtt.Client }

// Close disconnects every session, Concurrency at a time.
func (s *Sessions) Close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range s.clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Disconnect(0)
			<-sem
		}()
	}
	wg.Wait()
}

// Run opens the N sessions (clean session off) and leaves them open, so the
// caller can measure what they cost the broker before it closes them. On an
// error the sessions opened so far are closed.
func (s Storm) Run(ctx context.Context) (*Sessions, *StormResult, error) {
	if s.N <= 0 || s.Concurrency <= 0 || s.Limit <= 0 || s.Login == nil {
		return nil, nil, errors.New("a storm needs a count, a concurrency, a time limit and logins")
	}
	if err := Loopback(s.Addr); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Limit)
	defer cancel()

	type done struct {
		c   mqtt.Client
		d   time.Duration
		end time.Time
		err error
	}
	out := make(chan done, s.N)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(s.Concurrency, s.N) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				c, err := Connect(ctx, s.Addr, s.Login(i), false, nil)
				now := time.Now()
				out <- done{c, now.Sub(t0), now, err}
			}
		}()
	}
	start := time.Now()
	go func() {
		defer close(next)
		for i := range s.N {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(out)
	}()

	ses := &Sessions{}
	r := &StormResult{}
	var errs []error
	var last time.Time
	for d := range out {
		if d.err != nil {
			if len(errs) < 5 {
				errs = append(errs, d.err)
			}
			continue
		}
		ses.clients = append(ses.clients, d.c)
		r.Connack.Record(d.d)
		if d.end.After(last) {
			last = d.end
		}
	}
	r.Connected = len(ses.clients)
	r.Elapsed = last.Sub(start)
	if r.Connected < s.N {
		ses.Close()
		return nil, r, fmt.Errorf("%d of %d sessions connected: %w", r.Connected, s.N, errors.Join(append(errs, ctx.Err())...))
	}
	return ses, r, nil
}
