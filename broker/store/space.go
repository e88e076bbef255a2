package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultMinFree is --store-min-free's default: room for pebble to flush its
// memtables (two of 4 MiB) and write its logs and manifest, with a margin,
// on a volume that is otherwise full.
const DefaultMinFree = 32 << 20

// spaceCheckEvery bounds how often the volume's free space is looked up.
const spaceCheckEvery = time.Second

// space watches the store's volume. Pebble cannot go on from a failed write
// to its log or manifest (a full disk): it calls Fatalf, and the broker
// would crash at every start. Below the minimum, the broker refuses what it
// would have to store (the publishes the journal is for) and says so in its
// readiness, its metrics and its log, and takes them again once there is
// room.
type space struct {
	path string
	min  uint64

	mu      sync.Mutex
	checked time.Time
	free    atomic.Uint64
	full    atomic.Bool
	log     func(full bool, free, min uint64)
}

// check looks at the volume now; it fails only when it cannot be looked at.
func (s *space) check(path string, min uint64) error {
	s.path, s.min = path, min
	return s.refresh(time.Now())
}

func (s *space) refresh(now time.Time) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.path, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", s.path, err)
	}
	s.checked = now
	free := st.Bavail * uint64(st.Bsize)
	s.free.Store(free)
	full := free < s.min
	if s.full.Swap(full) != full && s.log != nil {
		s.log(full, free, s.min)
	}
	return nil
}

// err is nil while the volume has room; it looks again at most once a
// spaceCheckEvery.
func (s *space) err() error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	if now := time.Now(); now.Sub(s.checked) >= spaceCheckEvery {
		_ = s.refresh(now)
	}
	s.mu.Unlock()
	if s.full.Load() {
		return fmt.Errorf("the store's volume is full: %d bytes free, below --store-min-free %d", s.free.Load(), s.min)
	}
	return nil
}

// Full reports whether the store refuses writes for lack of space, for the
// metrics.
func (h *Hook) Full() bool {
	_ = h.space.err()
	return h.space.full.Load()
}

// FreeBytes is the volume's free space as last looked at.
func (h *Hook) FreeBytes() uint64 { return h.space.free.Load() }
