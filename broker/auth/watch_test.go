package auth

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A changed users file is put in force without SIGHUP, as a Kubernetes
// Secret update needs; a broken one is refused and the users stay.
func TestWatchUsersFile(t *testing.T) {
	users := farmUsers(t)
	path := writeUsers(t, users)
	buf := new(syncBuffer)
	h := new(Hook)
	h.SetOpts(slog.New(slog.NewTextHandler(buf, nil)), nil)
	require.NoError(t, h.Init(&Options{UsersFile: path, WatchEvery: 10 * time.Millisecond}))
	t.Cleanup(func() { require.NoError(t, h.Stop()) })

	late := User{Name: "late", Role: RoleReader, PasswordHash: hashOf(t, "pw-late")}
	require.NoError(t, WriteUsers(path, append(users, late)))
	require.Eventually(t, func() bool { _, ok := h.Policy().User("late"); return ok }, 5*time.Second, 10*time.Millisecond)
	// Logged right after the new policy is in force.
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "users file changed; users reloaded") }, 5*time.Second, 10*time.Millisecond)

	good := h.Policy()
	// Truncated, as a write in place is for a moment: not loaded.
	require.NoError(t, os.Truncate(path, 0))
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "users file is empty") }, 5*time.Second, 10*time.Millisecond)
	require.Same(t, good, h.Policy())

	require.NoError(t, os.WriteFile(path, []byte("users: [\n"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "was not reloaded") }, 5*time.Second, 10*time.Millisecond)
	require.Same(t, good, h.Policy())

	// A Kubernetes Secret volume: the file is a symlink into a directory
	// that the kubelet swaps.
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(dir+"/v1", 0o700))
	require.NoError(t, WriteUsers(dir+"/v1/users.yaml", users))
	require.NoError(t, os.Symlink("v1", dir+"/..data"))
	require.NoError(t, os.Symlink("..data/users.yaml", dir+"/users.yaml"))
	h2 := new(Hook)
	h2.SetOpts(slog.New(slog.DiscardHandler), nil)
	require.NoError(t, h2.Init(&Options{UsersFile: dir + "/users.yaml", WatchEvery: 10 * time.Millisecond}))
	t.Cleanup(func() { require.NoError(t, h2.Stop()) })
	require.NoError(t, os.Mkdir(dir+"/v2", 0o700))
	require.NoError(t, WriteUsers(dir+"/v2/users.yaml", append(users, late)))
	require.NoError(t, os.Symlink("v2", dir+"/..data.tmp"))
	require.NoError(t, os.Rename(dir+"/..data.tmp", dir+"/..data"))
	require.Eventually(t, func() bool { _, ok := h2.Policy().User("late"); return ok }, 5*time.Second, 10*time.Millisecond)
}
