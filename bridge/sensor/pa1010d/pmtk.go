package pa1010d

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	nmea "github.com/adrianmo/go-nmea"
)

// Command returns an NMEA sentence as it goes on the wire: "$", body, "*",
// the checksum as two upper-case hex digits, CR LF. The checksum is the
// exclusive or of body's bytes. Command("PMTK220,1000") is
// "$PMTK220,1000*1F\r\n", the command for one fix a second.
func Command(body string) string {
	return "$" + body + "*" + nmea.Checksum(body) + "\r\n"
}

// pmtk314Fields is the number of fields of PMTK314 (PMTK_API_SET_NMEA_OUTPUT)
// on MediaTek firmware: GLL RMC VTG GGA GSA GSV GRS GST, five reserved,
// four proprietary (MALM MEPH MDGP MDBG), ZDA, MCHN.
const pmtk314Fields = 19

// outputCommand is PMTK314 selecting s, each at every fix (a field's value
// is the number of fixes between two outputs; 0 turns it off).
func outputCommand(s Sentences) string {
	var b strings.Builder
	b.WriteString("PMTK314")
	for i := range pmtk314Fields {
		if s&(1<<i) != 0 {
			b.WriteString(",1")
		} else {
			b.WriteString(",0")
		}
	}
	return Command(b.String())
}

// intervalCommand is PMTK220 (PMTK_SET_NMEA_UPDATERATE): the fix interval
// in milliseconds.
func intervalCommand(d time.Duration) string {
	return Command("PMTK220," + strconv.FormatInt(d.Milliseconds(), 10))
}

// minAckReads is how many reads after a command it takes, besides
// AckTimeout, to conclude that no acknowledgement is coming.
const minAckReads = 3

// The flags of a PMTK001 acknowledgement.
const (
	flagInvalid     = 0
	flagUnsupported = 1
	flagFailed      = 2
	flagSuccess     = 3
)

// AckError is a PMTK001 acknowledgement whose flag is not 3 (success). It
// matches ErrRefused with errors.Is.
type AckError struct {
	Cmd  int // the command acknowledged, 314 for PMTK314
	Flag int // 0 invalid packet, 1 unsupported, 2 action failed
}

func (e *AckError) Error() string {
	what := "unknown flag"
	switch e.Flag {
	case flagInvalid:
		what = "invalid command"
	case flagUnsupported:
		what = "unsupported command"
	case flagFailed:
		what = "valid command, but the action failed"
	}
	return fmt.Sprintf("%v: PMTK001 for PMTK%03d has flag %d (%s)", ErrRefused, e.Cmd, e.Flag, what)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *AckError) Is(target error) bool { return target == ErrRefused }

// command writes cmd, a complete PMTK packet from Command, and reads until
// its PMTK001 acknowledgement arrives, or AckTimeout has passed and the
// bus has been read at least minAckReads times. Other sentences
// that arrive meanwhile go to the epoch combiner as in Next.
func (d *Dev) command(cmd string) error {
	name := strings.SplitN(cmd[1:], ",", 2)[0] // "PMTK314"
	num, _ := strconv.Atoi(strings.TrimPrefix(name, "PMTK"))
	if left := time.Until(d.lastWrite.Add(minWriteGap)); left > 0 {
		time.Sleep(left)
	}
	err := d.c.Tx([]byte(cmd), nil)
	d.lastWrite = time.Now()
	if err != nil {
		d.mu.Lock()
		d.stats.I2CErrors++
		d.mu.Unlock()
		return fmt.Errorf("sending %s: %w", name, err)
	}
	deadline := d.lastWrite.Add(d.opts.AckTimeout)
	for reads := 1; ; reads++ {
		if left := time.Until(d.lastRead.Add(d.next)); left > 0 {
			time.Sleep(left)
		}
		sentences, err := d.read()
		if err != nil {
			return fmt.Errorf("waiting for the acknowledgement of %s: %w", name, err)
		}
		var ack *nmea.PMTK001
		for _, s := range sentences {
			if d.hook != nil {
				d.hook(s)
			}
			if a, ok := parseAck(s); ok {
				if ack == nil && int(a.Cmd) == num {
					ack = &a
				}
				continue
			}
			d.cmb.add(s)
		}
		d.collect()
		switch {
		case ack != nil && ack.Flag == flagSuccess:
			return nil
		case ack != nil:
			return &AckError{Cmd: num, Flag: int(ack.Flag)}
		}
		fs := d.rd.fr.stats
		if fs.sentences == 0 && fs.nonPad >= garbageLimit {
			return fmt.Errorf("%w: %d bytes without one", ErrGarbage, fs.nonPad)
		}
		// The receiver must have had both the time and the chance to
		// answer: a host starved of CPU past the deadline has not asked.
		if time.Now().After(deadline) && reads >= minAckReads {
			if fs.sentences == 0 && fs.nonPad > 0 {
				return fmt.Errorf("%w: %d bytes without one in %v", ErrGarbage, fs.nonPad, d.opts.AckTimeout)
			}
			why := "it sent nothing but padding"
			if fs.sentences > 0 {
				why = fmt.Sprintf("%d valid sentences arrived meanwhile", fs.sentences)
			}
			return fmt.Errorf("%w: no PMTK001 for %s within %v (%s)", ErrNoAck, name, d.opts.AckTimeout, why)
		}
	}
}

// parseAck recognises a PMTK001 acknowledgement.
func parseAck(s string) (nmea.PMTK001, bool) {
	if !strings.HasPrefix(s, "$PMTK001,") {
		return nmea.PMTK001{}, false
	}
	var parser nmea.SentenceParser // the zero parser knows PMTK001
	p, err := parser.Parse(s)
	if err != nil {
		return nmea.PMTK001{}, false
	}
	a, ok := p.(nmea.PMTK001)
	return a, ok
}
