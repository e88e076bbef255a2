package load

import (
	"context"
	"time"
)

// Schedule is an open-loop sender's timetable: message i is due at
// Start + i*Interval whatever happened to the messages before it. A sender
// that falls behind (the broker stalled it) sends at once, and the message
// still carries its due time, so the stall counts in the latency of every
// message it delayed. A closed-loop sender, which waits for one message to be
// acknowledged before it sends the next, would instead send fewer messages
// during a stall and hide it: coordinated omission.
type Schedule struct {
	Start    time.Time
	Interval time.Duration
}

// Due is when message i (from 0) should be sent.
func (s Schedule) Due(i int) time.Time {
	return s.Start.Add(time.Duration(i) * s.Interval)
}

// Wait sleeps until message i is due and returns its due time; it returns at
// once when it is already late. It returns ctx's error when ctx ends first.
func (s Schedule) Wait(ctx context.Context, i int) (time.Time, error) {
	due := s.Due(i)
	d := time.Until(due)
	if d <= 0 {
		return due, ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return due, nil
	case <-ctx.Done():
		return due, ctx.Err()
	}
}
