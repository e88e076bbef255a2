package auth

import (
	"os"
	"time"
)

// The users file is reread when it changes, as the TLS pair is (tlsconf): on
// Kubernetes it is a Secret volume, which the kubelet updates in place by
// swapping a symlink, and nobody is there to send SIGHUP. A change is seen by
// a stat (through the symlinks) every Options.WatchEvery: modification time,
// size and inode. A new state is loaded once it has held for one more look,
// so that a file written in place (an editor, a truncate then a write) is not
// read half written: a truncated users file can be valid YAML that lacks
// users. An empty file is never loaded by the watch: it is what a file
// written in place looks like between its truncation and its write, which on
// a loaded machine can outlast two looks; an operator who means to remove
// every user writes "users: []".

// fileState tells a rewritten users file from the one last read.
type fileState struct {
	mod   time.Time
	size  int64
	inode uint64
}

func statUsers(path string) (fileState, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, false
	}
	return fileState{mod: fi.ModTime(), size: fi.Size(), inode: inode(fi)}, true
}

// watch rereads the users file whenever its state differs from last (the
// state before the users in force were read), until stop is closed. A file
// that cannot be read or is invalid leaves the users in force, and is logged
// once per state.
func (h *Hook) watch(last fileState, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	seen := last // the state at the previous look
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st, ok := statUsers(h.opts.UsersFile)
		settled := st == seen
		seen = st
		if st == last || !settled {
			continue
		}
		last = st
		if !ok {
			h.Log.Error("users file is gone; the users in force stay", "file", h.opts.UsersFile)
			continue
		}
		if st.size == 0 {
			h.Log.Warn("users file is empty, taken as being written; the users in force stay", "file", h.opts.UsersFile)
			continue
		}
		n, err := h.Reload()
		if err != nil {
			h.Log.Error("users file changed but was not reloaded; the previous users stay in force", "file", h.opts.UsersFile, "err", err)
			continue
		}
		h.Log.Info("users file changed; users reloaded", "file", h.opts.UsersFile, "user_count", n)
	}
}
