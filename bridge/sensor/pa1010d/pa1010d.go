// Package pa1010d reads a CDtop PA1010D GNSS receiver (MediaTek MT3333) over
// I2C and turns its NMEA output into fixes for the gps stream.
//
// The receiver is a byte stream, not a register map: each I2C read returns
// up to 255 bytes of NMEA, padded with '\n' when it has nothing to send. The
// package works in four layers, each tested on its own:
//
//   - the reader (framer.go) drops the padding, reassembles sentences across
//     reads, verifies checksums and resynchronises after garbage;
//   - go-nmea parses the verified sentences into fields;
//   - the epoch combiner (epoch.go) gathers one fix interval's sentences
//     (RMC, GGA, GSA, optionally ZDA, VTG, GST) into one candidate fix;
//   - the quality gate (epoch.go) lets through only real, fresh, good fixes.
//
// Open configures the receiver with checksummed PMTK commands and verifies
// their acknowledgements; Next blocks until the next fix that passes the
// gate. Errors name the chip, bus and address ("pa1010d on <bus> at 0x10:
// ...") and match ErrInvalidAddress, ErrNotFound, ErrGarbage, ErrNoAck or
// ErrRefused with errors.Is where those apply.
package pa1010d

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/sensorfarm/sensorfarm/bridge/sensor"
)

// Addr is the PA1010D's I2C address; it has no address pin.
const Addr = 0x10

// How the bus is used: the PA1010D's limits and this driver's pacing.
const (
	// readSize is one read transaction: the receiver's I2C buffer is read
	// in chunks of at most 255 bytes.
	readSize = 255
	// minReadGap is the least time between two reads.
	minReadGap = 2 * time.Millisecond
	// minWriteGap is the least time between two command writes.
	minWriteGap = 10 * time.Millisecond
	// partialGap is how soon to read again when a read ended in padding in
	// the middle of a sentence: the receiver is still writing it out.
	partialGap = 10 * time.Millisecond
	// garbageLimit is how many bytes other than padding Open accepts
	// without a single valid NMEA sentence before it gives up: about eight
	// reads, or four epochs of a receiver's default output.
	garbageLimit = 2048
)

// Sentences is a set of NMEA sentences for the receiver to output, set with
// PMTK314. Each constant's bit is its field in the PMTK314 command.
type Sentences uint32

// The sentences PMTK314 selects that this package knows. The receiver
// outputs them in a fixed order each fix: GGA, GSA (one per constellation),
// GSV, RMC, VTG, ZDA.
const (
	GLL Sentences = 1 << 0  // position and time: nothing RMC and GGA do not give
	RMC Sentences = 1 << 1  // time, date, status, position, speed, course: required
	VTG Sentences = 1 << 2  // speed and course again, in km/h too: redundant with RMC
	GGA Sentences = 1 << 3  // time, quality, position, altitude, satellites, HDOP: required
	GSA Sentences = 1 << 4  // fix mode (2D/3D) and DOPs, one per constellation
	GSV Sentences = 1 << 5  // satellites in view, 3 to 12 sentences a fix: unused here
	GST Sentences = 1 << 7  // error statistics, if the firmware outputs them
	ZDA Sentences = 1 << 17 // time and date with a four-digit year
)

const knownSentences = GLL | RMC | VTG | GGA | GSA | GSV | GST | ZDA

// sentenceNames lists the sentences in the receiver's output order.
var sentenceNames = []struct {
	name string
	bit  Sentences
}{{"GGA", GGA}, {"GLL", GLL}, {"GSA", GSA}, {"GST", GST}, {"GSV", GSV}, {"RMC", RMC}, {"VTG", VTG}, {"ZDA", ZDA}}

// ParseSentences reads a comma-separated list of sentence names such as
// "RMC,GGA,GSA", in any case and order.
func ParseSentences(list string) (Sentences, error) {
	var set Sentences
	for _, f := range strings.Split(list, ",") {
		name := strings.ToUpper(strings.TrimSpace(f))
		found := false
		for _, n := range sentenceNames {
			if n.name == name {
				set |= n.bit
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown sentence %q: use GGA, GLL, GSA, GST, GSV, RMC, VTG or ZDA", f)
		}
	}
	return set, nil
}

// String lists the set's names, comma-separated, as ParseSentences reads them.
func (s Sentences) String() string {
	var names []string
	for _, n := range sentenceNames {
		if s&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// usedSentences are the ones the epoch combiner reads.
const usedSentences = RMC | GGA | GSA | VTG | GST | ZDA

// Opts are the receiver's settings and the quality gate. A zero field takes
// its value from DefaultOpts, so Opts{MinSats: 6} changes only MinSats.
type Opts struct {
	// FixInterval is the time between fixes, set with PMTK220: 100 ms
	// (10 Hz) to 10 s, in whole milliseconds. Faster fixes follow a moving
	// node more closely but cost bus time and CPU on a Pi Zero: with the
	// default sentences an epoch is about 250 bytes, so 10 Hz is ten reads
	// a second and ten candidate readings a second for the bridge to
	// thin out. In its normal mode the receiver tracks the satellites
	// continuously whatever the interval (saving power is the business of
	// its periodic modes, PMTK225), so a slower interval saves I2C traffic
	// rather than receiver power.
	FixInterval time.Duration
	// Sentences selects the receiver's output with PMTK314. RMC and GGA
	// are required. Every extra sentence costs bus time: GSV alone is
	// 3 to 12 sentences of up to 70 bytes each a fix, more than all the
	// rest, and this package does not read it. VTG repeats RMC's speed
	// and course; ZDA adds a four-digit year (RMC has two); GST, where
	// the firmware supports it, replaces the HDOP-based accuracy estimate
	// with the receiver's own error statistics.
	Sentences Sentences
	// MaxHDOP is the largest horizontal dilution of precision a fix may
	// have. HDOP scales the satellite ranging error into position error;
	// see UERE. Use math.Inf(1) to turn the check off.
	MaxHDOP float64
	// MinSats is the least number of satellites a fix must use (GGA).
	MinSats int
	// UERE is the user equivalent range error in metres (1σ): a fix's
	// gps_accuracy is HDOP × UERE, the 1σ horizontal radial (DRMS) error,
	// the radius Home Assistant's device tracker reads. When the epoch
	// has a GST sentence its latitude and longitude standard deviations
	// are used instead: √(σlat² + σlon²), the same DRMS measure, from
	// the receiver's own residuals.
	UERE float64
	// NotBefore is the earliest date a fix may carry. A receiver without
	// real time reports a placeholder date with a plausible-looking
	// position, and a receiver with a GPS week rollover fault reports
	// dates 1024 weeks (19.6 years) early; both must never reach a
	// payload or the bridge's clock.
	NotBefore time.Time
	// AckTimeout bounds Open's wait for each PMTK001 acknowledgement.
	AckTimeout time.Duration
	// PollInterval is how often the bus is read while the receiver has
	// nothing to send. While data flows, reads follow each other at the
	// receiver's minimum of 2 ms. It should be well under FixInterval,
	// since it adds up to its own length to each fix's latency.
	PollInterval time.Duration
}

// DefaultOpts suit a node that reports where it is once a second.
//
//   - FixInterval 1 s: the receiver's default.
//   - Sentences RMC+GGA+GSA: all this package needs (date, status, speed
//     and course from RMC; position, altitude, satellites and HDOP from
//     GGA; 2D/3D from GSA). VTG adds nothing RMC lacks. About 250 bytes a
//     fix instead of about 600 with the receiver's default output.
//   - MaxHDOP 20: the gate is validity (GGA quality, RMC status and mode,
//     GSA fix type, satellites, a real position and date), not accuracy,
//     which travels in gps_accuracy (HDOP × UERE) for the consumer to
//     judge. Honest 3D fixes in a cold start or under a poor sky report 4
//     satellites and an HDOP around 5.2 for minutes (gpsd reports them as
//     fixes); a bound of 5 published nothing from them. 20 is the top of
//     "fair" geometry: beyond it a fix is more than 100 m (1σ) off, and
//     99.99 is the "no solution" placeholder some receivers print. In the
//     real captures (testdata/nmea) every fix gpsd reports has an HDOP of
//     2.88 or less, and every false epoch is refused by a validity check,
//     never by HDOP: the bound refuses nothing there either way.
//   - MinSats 4: the least for a 3D solution (three coordinates and the
//     clock bias). With 3 the receiver has to assume its altitude (a 2D
//     fix) and the horizontal error grows with the error of that
//     assumption, which HDOP does not show. With two constellations the
//     receiver uses 8-20 satellites in the open, so this costs little.
//   - UERE 5 m: the usual 1σ error budget of single-frequency civil
//     GPS without corrections (signal in space 1-2 m, ionosphere after
//     the broadcast model 2-5 m, troposphere about 0.5 m, multipath and
//     receiver noise 1-2 m: about 5 m root sum square, as in textbook
//     budgets such as Kaplan and Hegarty's Understanding GPS). It is also
//     the figure behind the wire contract's example (HDOP 0.98,
//     gps_accuracy 4.9 m).
//   - NotBefore 2019-04-07, the second rollover of the 10-bit GPS week
//     number. A node running this code cannot really be at an earlier
//     date, and the floor catches what a receiver without real time says:
//     every cold-start placeholder date in the captures (MediaTek's
//     1980-01-05, 1999-08-22 of the first rollover, the 2006 and 2010
//     dates of the gp-320fw), and every date a receiver with a rollover
//     fault can report until the next rollover in 2038, since such dates
//     are 1024 weeks early. Year 2019 is the oldest the floor can be for
//     that; a later one would only catch dates a receiver cannot produce
//     by mistake.
//   - AckTimeout 2 s: two fix intervals; the receiver answers within one.
//   - PollInterval 100 ms: at most a tenth of the fix interval of latency,
//     ten idle reads a second.
var DefaultOpts = Opts{
	FixInterval:  time.Second,
	Sentences:    RMC | GGA | GSA,
	MaxHDOP:      20,
	MinSats:      4,
	UERE:         5,
	NotBefore:    time.Date(2019, 4, 7, 0, 0, 0, 0, time.UTC),
	AckTimeout:   2 * time.Second,
	PollInterval: 100 * time.Millisecond,
}

// withDefaults returns o with every zero field taken from DefaultOpts.
func (o Opts) withDefaults() Opts {
	d := DefaultOpts
	if o.FixInterval == 0 {
		o.FixInterval = d.FixInterval
	}
	if o.Sentences == 0 {
		o.Sentences = d.Sentences
	}
	if o.MaxHDOP == 0 {
		o.MaxHDOP = d.MaxHDOP
	}
	if o.MinSats == 0 {
		o.MinSats = d.MinSats
	}
	if o.UERE == 0 {
		o.UERE = d.UERE
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = d.NotBefore
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = d.AckTimeout
	}
	if o.PollInterval == 0 {
		o.PollInterval = d.PollInterval
	}
	return o
}

// Validate checks o, its zero fields taken from DefaultOpts, as Open does, so
// that a bad setting can be refused at start-up before any bus is touched.
func (o Opts) Validate() error {
	d := o.withDefaults()
	return d.validate()
}

func (o *Opts) validate() error {
	if o.FixInterval < 100*time.Millisecond || o.FixInterval > 10*time.Second || o.FixInterval%time.Millisecond != 0 {
		return fmt.Errorf("fix interval %v is out of range: use 100ms to 10s in whole milliseconds", o.FixInterval)
	}
	if o.Sentences&^knownSentences != 0 {
		return fmt.Errorf("sentences %#x include unknown bits: use GLL, RMC, VTG, GGA, GSA, GSV, GST and ZDA", uint32(o.Sentences))
	}
	if o.Sentences&(RMC|GGA) != RMC|GGA {
		return errors.New("sentences must include RMC and GGA: a fix needs RMC's date and status and GGA's altitude, satellites and HDOP")
	}
	if math.IsNaN(o.MaxHDOP) || o.MaxHDOP < 0 {
		return fmt.Errorf("maximum HDOP %v is not a positive number", o.MaxHDOP)
	}
	if o.MinSats < 0 || o.MinSats > 64 {
		return fmt.Errorf("minimum satellites %d is out of range 0..64", o.MinSats)
	}
	if math.IsNaN(o.UERE) || math.IsInf(o.UERE, 0) || o.UERE < 0 {
		return fmt.Errorf("UERE %v m is not a positive number", o.UERE)
	}
	if o.AckTimeout < 0 {
		return fmt.Errorf("ack timeout %v is negative", o.AckTimeout)
	}
	if o.PollInterval < minReadGap || o.PollInterval > 10*time.Second {
		return fmt.Errorf("poll interval %v is out of range: use %v to 10s", o.PollInterval, minReadGap)
	}
	return nil
}

var (
	// ErrInvalidAddress means the address given to Open is not 0x10.
	ErrInvalidAddress = errors.New("not a PA1010D address: it always answers at 0x10")
	// ErrNotFound means no device acknowledged the address: the receiver
	// is unplugged, unpowered or miswired.
	ErrNotFound = errors.New("no device answers at this address (check wiring and power)")
	// ErrGarbage means a device answers but sends no valid NMEA: another
	// chip at 0x10, or a bus so disturbed that no sentence survives.
	ErrGarbage = errors.New("the device answers but sends no valid NMEA (not a PA1010D, or a disturbed bus)")
	// ErrNoAck means a configuration command was not acknowledged in time.
	ErrNoAck = errors.New("no acknowledgement from the receiver")
	// ErrRefused means the receiver acknowledged a command with a flag
	// other than success. errors.As with an *AckError gives the flag.
	ErrRefused = errors.New("the receiver refused a command")
)

// Stats are the receiver's health counters, since Open.
type Stats struct {
	// Sentences counts sentences with a valid checksum.
	Sentences uint64
	// ChecksumErrors counts sentences dropped for a wrong or missing
	// checksum. None of their content is ever used.
	ChecksumErrors uint64
	// Overlong counts sentences dropped for being longer than 120 bytes
	// (NMEA allows 82).
	Overlong uint64
	// Garbage counts fragments dropped while resynchronising: bytes
	// outside any sentence, sentences cut short by the next '$', and
	// sentences holding a byte that is not printable ASCII (such as NUL).
	Garbage uint64
	// Malformed counts sentences with a valid checksum whose fields do not
	// parse; they are dropped.
	Malformed uint64
	// Stray counts sentences that arrived when no epoch could take them:
	// after their epoch was complete, or before the first timed sentence.
	Stray uint64
	// I2CErrors counts failed bus transactions.
	I2CErrors uint64
	// Epochs counts the epochs (fix intervals) seen.
	Epochs uint64
	// EpochsNoFix counts the epochs that gave no fix: the receiver had
	// none, or the quality gate refused it.
	EpochsNoFix uint64
	// Fixes counts the fixes returned by Next or queued for it.
	Fixes uint64
	// FixMode is the mode of the last epoch's fix, 2 or 3, or 0 when the
	// last epoch gave none: wire.Health's gps_fix.
	FixMode int
	// LastRefusal says why the last epoch without a fix had none.
	LastRefusal string
}

// Dev is an open PA1010D. Next must be called from one goroutine at a time;
// Stats and String may be called from any goroutine.
type Dev struct {
	c     i2c.Dev
	where string // "pa1010d on <bus> at 0x10", the prefix of every error
	opts  Opts

	// Owned by the goroutine in Open or Next.
	rd        reader
	cmb       combiner
	fixes     []Fix // combined but not yet returned by Next
	lastRead  time.Time
	lastWrite time.Time
	next      time.Duration // wait before the next read
	hook      func(string)  // tests: every sentence with a valid checksum

	mu    sync.Mutex
	stats Stats
}

// Open configures the receiver at addr on bus with opts (nil means
// DefaultOpts): it sends PMTK314 (sentences) and PMTK220 (fix interval) and
// waits for each acknowledgement. NMEA arriving meanwhile is combined as
// usual, so the first fixes are kept for Next.
func Open(bus i2c.Bus, addr uint16, opts *Opts) (*Dev, error) {
	return open(bus, addr, opts, nil)
}

// open is Open with a hook that sees every sentence with a valid checksum,
// for tests.
func open(bus i2c.Bus, addr uint16, opts *Opts, hook func(string)) (*Dev, error) {
	if opts == nil {
		opts = &DefaultOpts
	}
	where := fmt.Sprintf("pa1010d on %s at %#x", bus, addr)
	if addr != Addr {
		return nil, fmt.Errorf("%s: %w", where, ErrInvalidAddress)
	}
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	d := &Dev{c: i2c.Dev{Bus: bus, Addr: addr}, where: where, opts: o, hook: hook}
	d.cmb = newCombiner(&d.opts)

	// A first read tells a missing receiver from a present one before any
	// command is sent.
	sentences, err := d.read()
	if err != nil {
		if sensor.IsNACK(err) {
			return nil, fmt.Errorf("%s: %w: %w", where, ErrNotFound, err)
		}
		return nil, fmt.Errorf("%s: first read: %w", where, err)
	}
	d.handle(sentences)
	for _, cmd := range []string{outputCommand(o.Sentences), intervalCommand(o.FixInterval)} {
		if err := d.command(cmd); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return d, nil
}

// String is "pa1010d on <bus> at 0x10".
func (d *Dev) String() string { return d.where }

// Stats returns the counters since Open.
func (d *Dev) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Next blocks until the receiver delivers a fix that passes the quality
// gate and returns it; a fix already received is returned first. It returns
// ctx.Err() when ctx is done, and an error when an I2C transaction fails;
// the caller should then Open the receiver again.
func (d *Dev) Next(ctx context.Context) (Fix, error) {
	for {
		if len(d.fixes) > 0 {
			f := d.fixes[0]
			d.fixes = d.fixes[1:]
			return f, nil
		}
		if err := d.wait(ctx, d.next); err != nil {
			return Fix{}, err
		}
		sentences, err := d.read()
		if err != nil {
			return Fix{}, fmt.Errorf("%s: reading: %w", d.where, err)
		}
		d.handle(sentences)
	}
}

// wait sleeps until at least gap after the last read, or until ctx is done.
func (d *Dev) wait(ctx context.Context, gap time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	left := time.Until(d.lastRead.Add(gap))
	if left <= 0 {
		return nil
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// read does one read transaction and returns the complete sentences with a
// valid checksum it finished. It sets d.next, the pause before the next
// read: the minimum while the receiver has more to send.
func (d *Dev) read() ([]string, error) {
	if left := time.Until(d.lastRead.Add(minReadGap)); left > 0 {
		time.Sleep(left)
	}
	// The sentences this read completes were in the receiver's buffer when
	// it started: the time an epoch's first sentence is paired with.
	d.cmb.at = time.Now()
	sentences, err := d.rd.read(&d.c)
	d.lastRead = time.Now()
	switch {
	case err != nil:
		d.next = d.opts.PollInterval
	case !d.rd.fr.lastPad:
		d.next = minReadGap // the read ended in data: there is more
	case d.rd.fr.in:
		d.next = partialGap // padding in the middle of a sentence
	default:
		d.next = d.opts.PollInterval
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.stats.I2CErrors++
	}
	fs := &d.rd.fr.stats
	d.stats.Sentences, d.stats.ChecksumErrors = fs.sentences, fs.checksum
	d.stats.Overlong, d.stats.Garbage = fs.overlong, fs.garbage
	return sentences, err
}

// handle feeds sentences to the epoch combiner and queues the fixes it
// emits.
func (d *Dev) handle(sentences []string) {
	for _, s := range sentences {
		if d.hook != nil {
			d.hook(s)
		}
		d.cmb.add(s)
	}
	d.collect()
}

// collect takes the combiner's results into the queue and the stats.
func (d *Dev) collect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.cmb.take() {
		d.stats.Epochs++
		if r.refusal != "" {
			d.stats.EpochsNoFix++
			d.stats.FixMode = 0
			d.stats.LastRefusal = r.refusal
			continue
		}
		d.stats.Fixes++
		d.stats.FixMode = r.fix.Mode
		d.fixes = append(d.fixes, r.fix)
	}
	cs := &d.cmb.stats
	d.stats.Malformed, d.stats.Stray = cs.malformed, cs.stray
}
