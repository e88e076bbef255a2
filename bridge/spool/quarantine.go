package spool

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Quarantine moves a poison reading, one the broker will never accept, out
// of the spool: it is appended to quarantine/poison.jsonl with the reason,
// counted dropped and acknowledged. When it cannot be written the reading
// stays in the spool and the error says why.
func (s *Spool) Quarantine(rec Record, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	g := s.segmentOfLocked(rec.ID)
	if g == nil || !g.pending.get(rec.ID-g.first) {
		return nil
	}
	line, err := json.Marshal(struct {
		ID      uint64    `json:"id"`
		Stream  string    `json:"stream"`
		Seq     uint64    `json:"seq"`
		Time    time.Time `json:"time"`
		Reason  string    `json:"reason"`
		Payload string    `json:"payload"`
	}{rec.ID, rec.Stream, rec.Seq, rec.Time, reason, string(rec.Payload)})
	if err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	if err := appendFile(filepath.Join(s.dir, quarantineDir, "poison.jsonl"), append(line, '\n')); err != nil {
		return fmt.Errorf("spool: quarantine %s seq %d: %w", rec.Stream, rec.Seq, err)
	}
	s.drops.Quarantined++
	s.ackLocked(rec.ID)
	if err := s.persistLocked(false); err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	return nil
}

const quarantineDir = "quarantine"

func appendFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
