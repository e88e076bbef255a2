package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The helper process of TestSIGKILLAtRandomMoments runs this test binary
// again with crashEnv set: TestMain sends it here instead of the tests.
const crashEnv = "SPOOL_CRASH_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashHelper(dir)
		os.Exit(3) // not reached: it runs until killed
	}
	os.Exit(m.Run())
}

var crashTime = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func crashOptions() Options {
	return Options{SyncEvery: 3 * time.Millisecond, SegmentBytes: 4096, MaxBytes: 1 << 30}
}

// crashHelper plays bridge until it is killed: it replays what it finds and
// acknowledges it out of order, then appends readings of two streams and
// acknowledges them out of order with several in flight. It says on stdout,
// one write per line, "A stream seq" once a reading was appended (so it may
// be published) and "K stream seq" before it acknowledges one.
func crashHelper(dir string) {
	say := func(format string, a ...any) { _, _ = os.Stdout.WriteString(fmt.Sprintf(format, a...) + "\n") }
	s, err := Open(dir, ptr(crashOptions()))
	if err != nil {
		say("E open: %v", err)
		os.Exit(2)
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	var window []Record
	ackOne := func() {
		i := rng.IntN(len(window))
		r := window[i]
		window = append(window[:i], window[i+1:]...)
		say("K %s %d", r.Stream, r.Seq)
		if err := s.Ack(r.ID); err != nil {
			say("E ack: %v", err)
			os.Exit(2)
		}
	}
	c := s.Replay()
	for {
		r, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			say("E replay: %v", err)
			os.Exit(2)
		}
		window = append(window, r)
		if len(window) > 8 {
			ackOne()
		}
	}
	for i := 0; ; i++ {
		st := []string{"env", "gps"}[i%2]
		rec, err := s.Append(st, func(seq uint64) ([]byte, error) { return reading(st, seq, crashTime), nil })
		if err != nil {
			say("E append: %v", err)
			os.Exit(2)
		}
		say("A %s %d", rec.Stream, rec.Seq)
		window = append(window, rec)
		for len(window) > 1+rng.IntN(8) {
			ackOne()
		}
		if i%16 == 0 {
			time.Sleep(time.Millisecond) // let the sync timer in
		}
	}
}

func ptr[T any](v T) *T { return &v }

// A process killed with SIGKILL at random moments, over and over: every
// Open succeeds, no seq is ever handed out twice, nothing appended and not
// acknowledged is lost, and a kill does not count as a loss.
func TestSIGKILLAtRandomMoments(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	handed := map[string]map[uint64]bool{"env": {}, "gps": {}} // every seq known to be out
	owed := map[string]map[uint64]bool{"env": {}, "gps": {}}   // appended and not (about to be) acked
	appended := 0
	for kill := 0; kill < 20; kill++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, os.Stderr
		require.NoError(t, cmd.Start())
		time.Sleep(time.Duration(10+rng.IntN(191)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err := cmd.Wait()
		require.Error(t, err, "the helper runs until it is killed")

		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			require.NotEqual(t, "E", f[0], "helper: %s", sc.Text())
			if len(f) != 3 {
				continue // a line cut by the kill
			}
			seq, err := strconv.ParseUint(f[2], 10, 64)
			require.NoError(t, err)
			switch f[0] {
			case "A":
				require.False(t, handed[f[1]][seq], "kill %d: %s seq %d handed out twice", kill, f[1], seq)
				handed[f[1]][seq] = true
				owed[f[1]][seq] = true
				appended++
			case "K":
				delete(owed[f[1]], seq)
			}
		}

		o := crashOptions()
		o.SyncEvery = -1
		s, err := Open(dir, &o)
		require.NoError(t, err, "kill %d", kill)
		// A kill before the helper's Open wrote anything (10 ms on a
		// loaded machine) leaves a fresh spool, with no boot to compare.
		if r := s.Recovery(); !r.Fresh {
			require.True(t, r.SameBoot, "kill %d", kill)
		}
		got := map[string]map[uint64]bool{"env": {}, "gps": {}}
		for _, r := range drain(t, s) {
			require.Equal(t, string(reading(r.Stream, r.Seq, crashTime)), string(r.Payload))
			got[r.Stream][r.Seq] = true
			handed[r.Stream][r.Seq] = true // appended just before the kill, unannounced
		}
		for st := range owed {
			for seq := range owed[st] {
				require.True(t, got[st][seq], "kill %d: unacknowledged %s seq %d lost", kill, st, seq)
			}
			last := uint64(0)
			for seq := range handed[st] {
				last = max(last, seq)
			}
			rec, err := s.Append(st, func(seq uint64) ([]byte, error) { return reading(st, seq, crashTime), nil })
			require.NoError(t, err)
			require.Equal(t, last+1, rec.Seq, "kill %d: %s resumes right after the last number out", kill, st)
			handed[st][rec.Seq], owed[st][rec.Seq] = true, true
		}
		require.Zero(t, s.Stats().Dropped, "kill %d: a crash without a reboot loses nothing", kill)
		if kill%2 == 0 {
			require.NoError(t, s.Close())
		} else {
			abandon(s)
		}
	}
	t.Logf("20 kills, %d readings appended by the helper", appended)
	require.Greater(t, appended, 100)
}
