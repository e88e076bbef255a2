package sim

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PA1010DAddr is the PA1010D's fixed I2C address.
const PA1010DAddr = 0x10

// PA1010DOpts tune a simulated PA1010D.
type PA1010DOpts struct {
	// Speed is how many times faster than Now the receiver's clock runs:
	// 10 replays a capture ten times faster than it was recorded, and a
	// Track's fixes come ten times as often, stamped ten times as far
	// apart. 0 means 1.
	Speed float64
	// Loop replays a source that has ended from its start again, if it is
	// a Rewinder (ReadCapture's is). Otherwise, after the end, reads
	// return only padding.
	Loop bool
	// Now is the simulator's clock; nil means time.Now.
	Now func() time.Time
	// ByteRate is how fast, in bytes per second of receiver time, the
	// receiver moves an epoch's output into its I2C buffer; a read in the
	// middle of that gets part of a sentence and then padding, as on the
	// real part. 0 means 11520, the rate of the MT3333's fastest NMEA
	// port setting (115200 baud).
	ByteRate float64
	// AckFlags overrides the flag with which commands are acknowledged,
	// by command number (220 for PMTK220), to inject faults: 0 invalid, 1
	// unsupported, 2 failed, 3 success; a negative flag means the command
	// is ignored and not acknowledged. An overridden command that does not
	// succeed changes nothing.
	AckFlags map[int]int
}

// maxQueue bounds the output waiting to be read. It is the simulator's
// bound, not the chip's (CDtop does not publish its buffer size): an epoch
// that would not fit is dropped whole and counted (Overruns).
const maxQueue = 64 << 10

// PA1010D is a model of a CDtop PA1010D GNSS receiver on I2C: what it
// sends comes from an NMEASource. It implements Device and is safe for
// concurrent use.
//
// Modelled: reads of any length that return the output in order, whatever
// of it the receiver has put in its buffer yet and '\n' padding for the
// rest, so sentences split across reads and padding falls in the middle of
// sentences as it does on the chip; CR LF after every sentence whatever the
// source's line endings; epochs at the source's pace, sped up by Speed;
// PMTK314 (output selection) and PMTK220 (fix interval) written to it,
// which a Track obeys, answered by "$PMTK001,<cmd>,<flag>" in the output:
// 3 when done, 0 for a bad checksum, 2 for bad parameters, 1 for other
// commands. Not modelled: the 10 ms the chip needs between commands and 2
// ms between reads (drivers are tested against Playback for that), other
// PMTK commands, standby.
type PA1010D struct {
	src   NMEASource
	opts  PA1010DOpts
	start time.Time // Now at power-on

	mu       sync.Mutex
	cfg      ReceiverConfig
	next     Epoch // the epoch to send next, when have
	have     bool
	ended    bool
	prevAt   time.Time
	queue    []byte    // output not yet read
	avail    int       // how much of queue is in the I2C buffer
	frac     float64   // a part byte of flow
	flowT    time.Time // receiver time the flow was computed to
	cmd      []byte    // a command being written
	overruns int
}

var _ Device = (*PA1010D)(nil)

// NewPA1010D returns a receiver that has just been powered on and sends
// what src gives, with the PA1010D's default configuration (GGA, GSA, GSV,
// RMC and VTG once a second).
func NewPA1010D(src NMEASource, opts PA1010DOpts) *PA1010D {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	if opts.ByteRate <= 0 {
		opts.ByteRate = 11520
	}
	s := &PA1010D{src: src, opts: opts, start: opts.Now(), cfg: defaultReceiverConfig()}
	s.flowT = s.start
	return s
}

// clock is the receiver's time.
func (s *PA1010D) clock() time.Time {
	el := s.opts.Now().Sub(s.start)
	return s.start.Add(time.Duration(float64(el) * s.opts.Speed))
}

// Tx implements Device: w is taken as command bytes, then r is filled with
// output, padded with '\n'.
func (s *PA1010D) Tx(w, r []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	s.advance(now)
	for _, c := range w {
		s.writeByte(c)
	}
	n := min(len(r), s.avail)
	copy(r, s.queue[:n])
	for i := n; i < len(r); i++ {
		r[i] = '\n'
	}
	s.queue, s.avail = s.queue[n:], s.avail-n
	if len(s.queue) == 0 {
		s.queue = nil // let the array go
	}
	return nil
}

// advance brings the output up to receiver time now: epochs that are due
// are queued, and the queue flows into the I2C buffer at ByteRate.
func (s *PA1010D) advance(now time.Time) {
	// A host that stopped reading for long, with a high Speed and Loop,
	// could leave many laps due; the rest waits for the next transaction.
	for range maxEpochsPerTx {
		if !s.have && !s.ended {
			s.fetch(now)
		}
		until := now
		due := s.have && !s.next.At.After(now)
		if due && s.next.At.After(s.flowT) {
			until = s.next.At
		}
		s.flow(until)
		if !due {
			return
		}
		s.emit(s.next.Sentences)
		s.prevAt, s.have = s.next.At, false
	}
}

// maxEpochsPerTx bounds the work of one transaction.
const maxEpochsPerTx = 4096

// fetch asks the source for the next epoch.
func (s *PA1010D) fetch(now time.Time) {
	e, ok := s.src.Next(s.prevAt, now, s.cfg)
	if !ok && s.opts.Loop {
		if rw, can := s.src.(Rewinder); can {
			rw.Rewind()
			e, ok = s.src.Next(s.prevAt, now, s.cfg)
		}
	}
	if !ok {
		s.ended = true
		return
	}
	if !e.At.After(s.prevAt) && !s.prevAt.IsZero() {
		e.At = s.prevAt.Add(time.Millisecond) // sources must move on
	}
	s.next, s.have = e, true
}

// flow moves output into the I2C buffer up to receiver time until.
func (s *PA1010D) flow(until time.Time) {
	if d := until.Sub(s.flowT); d > 0 && s.avail < len(s.queue) {
		s.frac += d.Seconds() * s.opts.ByteRate
		n := int(min(s.frac, float64(len(s.queue)-s.avail)))
		s.avail += n
		s.frac -= float64(n)
	}
	if s.avail == len(s.queue) {
		s.frac = 0 // an idle receiver saves no credit
	}
	if until.After(s.flowT) {
		s.flowT = until
	}
}

// emit queues sentences, each with CR LF.
func (s *PA1010D) emit(sentences []string) {
	size := 0
	for _, l := range sentences {
		size += len(l) + 2
	}
	if len(s.queue)+size > maxQueue {
		s.overruns++
		return
	}
	for _, l := range sentences {
		s.queue = append(s.queue, l...)
		s.queue = append(s.queue, '\r', '\n')
	}
}

// writeByte takes one byte written by the host: commands start at '$' and
// end at CR or LF.
func (s *PA1010D) writeByte(c byte) {
	switch {
	case c == '$':
		s.cmd = append(s.cmd[:0], c)
	case c == '\r' || c == '\n':
		if len(s.cmd) > 0 {
			s.command(string(s.cmd))
		}
		s.cmd = s.cmd[:0]
	case len(s.cmd) > 0 && len(s.cmd) < 255:
		s.cmd = append(s.cmd, c)
	}
}

// command carries out one PMTK packet and queues its acknowledgement.
func (s *PA1010D) command(pkt string) {
	if !strings.HasPrefix(pkt, "$PMTK") {
		return
	}
	body, valid := validSentence(pkt)
	if !valid {
		if i := strings.LastIndexByte(pkt, '*'); i > 0 {
			body = pkt[1:i]
		} else {
			body = pkt[1:]
		}
	}
	fields := strings.Split(body, ",")
	num, err := strconv.Atoi(strings.TrimPrefix(fields[0], "PMTK"))
	if err != nil || num < 0 || num > 999 {
		return // not a packet the receiver can name in an ack
	}
	flag := 0
	cfg := s.cfg
	if valid {
		flag = s.apply(&cfg, num, fields[1:])
	}
	if f, ok := s.opts.AckFlags[num]; ok {
		flag = f
	}
	if flag == 3 {
		s.cfg = cfg
	}
	if flag < 0 {
		return
	}
	s.emit([]string{sentence(fmt.Sprintf("PMTK001,%d,%d", num, flag))})
}

// apply sets cfg from a packet with a good checksum and returns the ack
// flag.
func (s *PA1010D) apply(cfg *ReceiverConfig, num int, args []string) int {
	switch num {
	case 314:
		if len(args) != len(cfg.Output) {
			return 2
		}
		var out [19]int
		for i, a := range args {
			v, err := strconv.Atoi(a)
			if err != nil || v < 0 || v > 5 {
				return 2
			}
			out[i] = v
		}
		cfg.Output = out
		return 3
	case 220:
		if len(args) != 1 {
			return 2
		}
		ms, err := strconv.Atoi(args[0])
		if err != nil || ms < 100 || ms > 10000 {
			return 2
		}
		cfg.Interval = time.Duration(ms) * time.Millisecond
		return 3
	}
	return 1
}

// Config returns the configuration the PMTK commands have set.
func (s *PA1010D) Config() ReceiverConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Done tells whether the source has ended (and will not loop) and every
// byte of its output has been read.
func (s *PA1010D) Done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.clock())
	return s.ended && !s.have && len(s.queue) == 0
}

// Overruns counts the epochs dropped because the host did not read.
func (s *PA1010D) Overruns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overruns
}
