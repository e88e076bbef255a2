// Package spool keeps the bridge's durable state in its spool directory. For
// now that is the per-stream sequence counter; the disk queue of unsent
// readings joins it here.
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

const seqFile = "seq.json"

// Seq hands out each stream's sequence numbers: 1, 2, 3, … per stream, never
// reused, across restarts. A number is written to disk before it is handed
// out, so a crash can only skip numbers, never repeat them.
type Seq struct {
	mu   sync.Mutex
	path string
	last map[string]uint64
}

// OpenSeq loads the counters kept in dir, creating dir if needed.
func OpenSeq(dir string) (*Seq, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	s := &Seq{path: filepath.Join(dir, seqFile), last: map[string]uint64{}}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("sequence state: %w", err)
	}
	if err := json.Unmarshal(b, &s.last); err != nil {
		return nil, fmt.Errorf("sequence state %s is corrupt (%v): move it aside to start again from 1", s.path, err)
	}
	return s, nil
}

// Next returns the stream's next sequence number once it is on disk.
func (s *Seq) Next(stream string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.last[stream] + 1
	s.last[stream] = next
	if err := s.save(); err != nil {
		s.last[stream] = next - 1
		return 0, err
	}
	return next, nil
}

// save replaces the state file atomically: a power cut leaves the old or the
// new file, never a torn one.
func (s *Seq) save() error {
	b, err := json.Marshal(s.last)
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("sequence state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		return fmt.Errorf("sequence state: %w", err)
	}
	return nil
}
