package clock

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSyncedFromAdjtimex: the decision from adjtimex's answer, for what each
// NTP client leaves in the kernel.
func TestSyncedFromAdjtimex(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		state    int
		status   int32
		maxerror int64
		want     bool
	}{
		{"boot, no NTP client yet", unix.TIME_ERROR, unix.STA_UNSYNC, ntpPhaseLimit, false},
		{"timesyncd or ntpd synchronised", unix.TIME_OK, unix.STA_PLL, 48_000, true},
		{"chrony synchronised, no rtcsync: STA_UNSYNC stays, maxerror is chrony's", unix.TIME_ERROR, unix.STA_UNSYNC, 52_000, true},
		{"chrony not synchronised writes 16 s", unix.TIME_ERROR, unix.STA_UNSYNC, ntpPhaseLimit, false},
		{"chrony stopped updating an hour ago: the bound grew past a second", unix.TIME_ERROR, unix.STA_UNSYNC, 52_000 + 3600*500, false},
		{"clock hardware fault", unix.TIME_OK, unix.STA_CLOCKERR, 1000, false},
	} {
		require.Equal(t, tc.want, synced(tc.state, tc.status, tc.maxerror), tc.desc)
	}
}
