package clock

import "golang.org/x/sys/unix"

// kernelSynced asks the kernel whether an NTP client has synchronised the
// system clock.
func kernelSynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && synced(state, int32(tx.Status), int64(tx.Maxerror))
}

// maxSyncError is the largest error bound (adjtimex maxerror, µs) that
// counts as synchronised: an NTP client vouches that the clock is within a
// second. The kernel adds 500 µs to it every second without an update, so
// it lapses about half an hour after the client stops updating.
const maxSyncError = 1_000_000

// ntpPhaseLimit is the kernel's maxerror while no NTP client has ever set it
// (NTP_PHASE_LIMIT, 16 s), and what chrony writes when it is not
// synchronised (MAX_SYNC_ERROR).
const ntpPhaseLimit = 16_000_000

// synced decides from adjtimex's answer. systemd-timesyncd and ntpd clear
// STA_UNSYNC once they have set the time (what timedatectl shows as "System
// clock synchronized"). chrony clears it only with its rtcsync directive,
// which many images do not set; without it the state stays TIME_ERROR, but
// chrony still writes its error bounds (sys_timex.c set_sync_status:
// ADJ_MAXERROR and ADJ_ESTERROR on every clock update, 16 s when it is not
// synchronised). So a maxerror within a second also counts, unless the
// kernel flags the clock itself as faulty (STA_CLOCKERR).
func synced(state int, status int32, maxerror int64) bool {
	if status&unix.STA_CLOCKERR != 0 {
		return false
	}
	if state != unix.TIME_ERROR && status&unix.STA_UNSYNC == 0 {
		return true
	}
	return maxerror >= 0 && maxerror <= maxSyncError
}
