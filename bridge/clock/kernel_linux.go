package clock

import "golang.org/x/sys/unix"

// kernelSynced reports what timedatectl calls "System clock synchronized":
// the kernel's NTP state is not TIME_ERROR and STA_UNSYNC is clear, which an
// NTP client (systemd-timesyncd, chrony, ntpd) clears once it has set the time.
func kernelSynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
}
