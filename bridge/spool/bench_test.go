package spool

// The evaluation behind README.md: this spool against paho's FileStore (the
// baseline: one file per message) on the bridge's workload: two streams of
// realistic JSON readings (170 and 246 bytes) at 1 Hz each, through an
// outage. tidwall/wal and go.etcd.io/bbolt were measured the same way; their
// candidates were removed to keep both modules out of go.mod, and their
// figures stay in README.md and bench/README.md (the code is at commit
// c29aca6, bridge/spool/bench_test.go and eval_test.go).
//
//	go test -run '^$' -bench . -benchtime 3x ./bridge/spool
//
// Metrics (per reading unless said otherwise):
//   - B/reading: bytes the process caused to be written, from write_bytes in
//     /proc/self/io (the kernel counts a 4 KiB page each time a write makes
//     a clean page dirty; fsync cleans it, so the page is counted again).
//     It covers file data, not the file system's journal and metadata.
//   - dev-B/reading: sectors written to the block device, when the
//     benchmark can loop-mount a scratch ext4 (root): data, metadata and
//     journal, after a final syncfs. Each fsync on ext4 commits the journal,
//     so it shows what the file system adds. Missing without root.
//   - disk-B/reading: what the files occupy afterwards (du).
//   - readings/s (replay): reopen the store and read every reading in order.
//   - x-filestore: how many times fewer bytes (outage) or how many times
//     faster (replay) than FileStore in the same run.
//
// Sync policies: "sync30s" is SyncEvery 30 s at 2 readings/s, i.e. an fsync
// every 60 readings (driven by count so the benchmark is fast and
// repeatable); "fsync-each" syncs every reading; FileStore never syncs (as
// paho ships it), so it promises nothing on a power cut.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/sys/unix"
)

// store is one candidate behind the operations the bridge needs.
type store interface {
	open(dir string) error
	append(i int, stream string, payload []byte) error
	sync() error
	close() error
	// replay reopens dir and passes every reading, oldest first, to fn.
	replay(dir string, fn func([]byte)) error
}

type candidate struct {
	name      string
	syncEvery int // fsync every this many readings; 1 = every one, 0 = never
	make      func(syncEvery int) store
}

var candidates = []candidate{
	{"filestore", 0, func(int) store { return &fileStore{} }},
	{"spool-sync30s", 60, func(n int) store { return &ourSpool{every: n} }},
	{"spool-sync10s", 20, func(n int) store { return &ourSpool{every: n} }},
	{"spool-sync1s", 2, func(n int) store { return &ourSpool{every: n} }},
	{"spool-fsync-each", 1, func(n int) store { return &ourSpool{every: n} }},
}

// outage appends n readings of two streams, syncing as the candidate's
// policy says, and closes the store.
func outage(s store, dir string, n, syncEvery int) error {
	if err := s.open(dir); err != nil {
		return err
	}
	t := crashTime
	for i := 0; i < n; i++ {
		st := []string{"env", "gps"}[i%2]
		if err := s.append(i, st, reading(st, uint64(i/2+1), t)); err != nil {
			return err
		}
		if syncEvery > 1 && (i+1)%syncEvery == 0 {
			if err := s.sync(); err != nil {
				return err
			}
		}
		if i%2 == 1 {
			t = t.Add(time.Second)
		}
	}
	return s.close()
}

func readings(c candidate) int {
	if c.syncEvery == 1 || c.syncEvery == 2 {
		return 600 // five minutes: an fsync each (or every other) takes long
	}
	return 3600 // half an hour
}

func BenchmarkOutage(b *testing.B) {
	fsys := newScratchFS(b)
	var ref float64 // FileStore's B/reading
	for _, c := range candidates {
		b.Run(c.name, func(b *testing.B) {
			n := readings(c)
			var wrote, dev, disk float64
			for it := 0; it < b.N; it++ {
				dir := fsys.dir(b)
				w0, d0 := writeBytes(b), fsys.written(b)
				if err := outage(c.make(c.syncEvery), dir, n, c.syncEvery); err != nil {
					b.Fatal(err)
				}
				wrote += float64(writeBytes(b) - w0)
				dev += float64(fsys.written(b) - d0)
				disk += float64(du(b, dir))
				fsys.remove(b, dir)
			}
			per := float64(b.N * n)
			b.ReportMetric(wrote/per, "B/reading")
			if fsys.ok {
				b.ReportMetric(dev/per, "dev-B/reading")
			}
			b.ReportMetric(disk/per, "disk-B/reading")
			if c.name == "filestore" {
				ref = wrote / per
			} else if ref > 0 {
				b.ReportMetric(ref/(wrote/per), "x-filestore")
			}
		})
	}
}

func BenchmarkReplay(b *testing.B) {
	var ref float64 // FileStore's readings/s
	for _, c := range candidates {
		if c.syncEvery != 0 && c.syncEvery != 60 {
			continue // the files are the same as with sync30s
		}
		b.Run(c.name, func(b *testing.B) {
			const n = 3600
			dir := b.TempDir()
			if err := outage(c.make(c.syncEvery), dir, n, c.syncEvery); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				got, size := 0, 0
				if err := c.make(c.syncEvery).replay(dir, func(p []byte) { got++; size += len(p) }); err != nil {
					b.Fatal(err)
				}
				if got != n || size < n*150 {
					b.Fatalf("replayed %d readings (%d bytes), want %d", got, size, n)
				}
			}
			rate := float64(b.N*n) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "readings/s")
			if c.name == "filestore" {
				ref = rate
			} else if ref > 0 {
				b.ReportMetric(rate/ref, "x-filestore")
			}
		})
	}
}

// ---- the candidates ----

type ourSpool struct {
	every int
	s     *Spool
}

func (o *ourSpool) options() *Options {
	opts := DefaultOptions()
	opts.SyncEvery = -1
	if o.every == 1 {
		opts.SyncEvery = 0
	}
	return &opts
}

func (o *ourSpool) open(dir string) (err error) {
	o.s, err = Open(dir, o.options())
	return err
}

func (o *ourSpool) append(_ int, stream string, p []byte) error {
	_, err := o.s.Append(stream, func(uint64) ([]byte, error) { return p, nil })
	return err
}

func (o *ourSpool) sync() error  { return o.s.Sync() }
func (o *ourSpool) close() error { return o.s.Close() }

func (o *ourSpool) replay(dir string, fn func([]byte)) error {
	s, err := Open(dir, o.options())
	if err != nil {
		return err
	}
	defer s.Close()
	c := s.Replay()
	for {
		r, err := c.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fn(r.Payload)
	}
}

// fileStore is paho's FileStore holding QoS 1 PUBLISH packets, as paho
// would for messages in flight.
type fileStore struct{ fs *mqtt.FileStore }

func (f *fileStore) open(dir string) error {
	f.fs = mqtt.NewFileStore(dir)
	f.fs.Open()
	return nil
}

func (f *fileStore) append(i int, stream string, p []byte) error {
	pk := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pk.Qos, pk.MessageID = 1, uint16(i%65535+1)
	pk.TopicName = "sensorfarm/rpi4/pizero-01/backlog/" + stream
	pk.Payload = p
	f.fs.Put(fmt.Sprintf("o.%d", i), pk)
	return nil
}

func (f *fileStore) sync() error  { return nil }
func (f *fileStore) close() error { f.fs.Close(); return nil }

func (f *fileStore) replay(dir string, fn func([]byte)) error {
	fs := mqtt.NewFileStore(dir)
	fs.Open()
	defer fs.Close()
	for _, k := range fs.All() {
		pk, ok := fs.Get(k).(*packets.PublishPacket)
		if !ok {
			return fmt.Errorf("filestore: %s is not a publish packet", k)
		}
		fn(pk.Payload)
	}
	return nil
}

// ---- measuring ----

// writeBytes reads this process's write_bytes from /proc/self/io.
func writeBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}

func du(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// scratchFS is a loop-mounted ext4 file system made for the benchmark, so
// that the sectors it writes can be counted; without root it falls back to
// temporary directories and counts nothing.
type scratchFS struct {
	ok    bool
	mnt   string
	stat  string // /sys/block/loopN/stat
	count int
}

func newScratchFS(b *testing.B) *scratchFS {
	s := &scratchFS{}
	tmp := b.TempDir()
	img, mnt := filepath.Join(tmp, "ext4.img"), filepath.Join(tmp, "mnt")
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		return nil
	}
	err := os.Mkdir(mnt, 0o755)
	if err == nil {
		err = run("truncate", "-s", "512M", img)
	}
	if err == nil {
		err = run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
	}
	if err == nil {
		err = run("mount", "-o", "loop", img, mnt)
	}
	if err != nil {
		b.Logf("no scratch ext4, dev-B/reading not measured: %v", err)
		return s
	}
	b.Cleanup(func() { _ = run("umount", mnt) })
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", mnt).Output()
	if err != nil {
		b.Logf("no loop device found: %v", err)
		return s
	}
	s.ok, s.mnt = true, mnt
	s.stat = filepath.Join("/sys/block", filepath.Base(strings.TrimSpace(string(out))), "stat")
	return s
}

func (s *scratchFS) dir(b *testing.B) string {
	if !s.ok {
		return b.TempDir()
	}
	s.count++
	d := filepath.Join(s.mnt, strconv.Itoa(s.count))
	if err := os.Mkdir(d, 0o755); err != nil {
		b.Fatal(err)
	}
	s.flush(b)
	return d
}

func (s *scratchFS) flush(b *testing.B) {
	f, err := os.Open(s.mnt)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
}

// written is the bytes written to the device so far, after a syncfs.
func (s *scratchFS) written(b *testing.B) int64 {
	if !s.ok {
		return 0
	}
	s.flush(b)
	raw, err := os.ReadFile(s.stat)
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw))
	sectors, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return sectors * 512
}

func (s *scratchFS) remove(b *testing.B, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if s.ok {
		s.flush(b)
	}
}
