package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// entry renders one user of a users file by hand, as a person would write it.
func entry(name, role, extra, hash string) string {
	s := "- name: " + name + "\n  role: " + role + "\n"
	if extra != "" {
		s += "  " + strings.ReplaceAll(strings.TrimSpace(extra), "\n", "\n  ") + "\n"
	}
	if hash != "" {
		s += "  password_hash: \"" + hash + "\"\n"
	}
	return s
}

func TestParseUsers(t *testing.T) {
	h := hashOf(t, "pw")
	users, err := ParseUsers([]byte("users:\n" +
		entry("b1", "bridge", "site: farm1\nnode: node1", h) +
		entry("grafana", "reader", "", h) +
		entry("hass", "homeassistant", "", h) +
		entry("root", "admin", "", h)))
	require.NoError(t, err)
	require.Equal(t, []User{
		{Name: "b1", Role: RoleBridge, Site: "farm1", Node: "node1", PasswordHash: h},
		{Name: "grafana", Role: RoleReader, PasswordHash: h},
		{Name: "hass", Role: RoleHomeAssistant, PasswordHash: h},
		{Name: "root", Role: RoleAdmin, PasswordHash: h},
	}, users)
	require.Equal(t, "bridge:farm1:node1", users[0].ClientID())
	require.Empty(t, users[1].ClientID())

	// Hashes of the other bcrypt variants (htpasswd -B writes $2y$).
	for _, v := range []string{"$2b$", "$2y$"} {
		_, err := ParseUsers([]byte("users:\n" + entry("u", "reader", "", v+h[4:])))
		require.NoError(t, err, v)
	}
	// An empty file, or an empty list: nobody.
	for _, s := range []string{"", "users: []\n", "# nobody yet\n"} {
		users, err := ParseUsers([]byte(s))
		require.NoError(t, err, "%q", s)
		require.Empty(t, users)
	}
}

func TestParseUsersErrors(t *testing.T) {
	h := hashOf(t, "pw")
	for _, tc := range []struct {
		desc, file string
		want       []string
	}{
		{"bad role", entry("u", "superuser", "", h),
			[]string{`user 1 ("u"): role "superuser" is not one of bridge, reader, homeassistant, admin`}},
		{"no role", "- name: u\n  password_hash: \"" + h + "\"\n", []string{`role "" is not one of`}},
		{"bridge without site and node", entry("b", "bridge", "", h), []string{`user 1 ("b"): a bridge needs its site and node`}},
		{"bridge without node", entry("b", "bridge", "site: farm1", h), []string{"a bridge needs its site and node"}},
		{"bridge without site", entry("b", "bridge", "node: n1", h), []string{"a bridge needs its site and node"}},
		{"reader with a node", entry("r", "reader", "site: farm1\nnode: n1", h), []string{"site and node are for bridges only, not for role reader"}},
		{"admin with a site", entry("r", "admin", "site: farm1", h), []string{"site and node are for bridges only, not for role admin"}},
		{"upper-case user name", entry("Grafana", "reader", "", h), []string{`user name "Grafana" has 'G' at byte 0`}},
		{"user name with a colon", entry("\"a:b\"", "reader", "", h), []string{`user name "a:b" has ':' at byte 1`}},
		{"user name with a space", entry("\"a b\"", "reader", "", h), []string{`user name "a b" has ' '`}},
		{"empty user name", entry("\"\"", "reader", "", h), []string{"user name is empty"}},
		{"user name too long", entry(strings.Repeat("a", 65), "reader", "", h), []string{"is 65 bytes long: at most 64"}},
		{"bad site", entry("b", "bridge", "site: Farm1\nnode: n1", h), []string{`site "Farm1" has 'F'`}},
		{"bad node", entry("b", "bridge", "site: farm1\nnode: n/1", h), []string{`node "n/1" has '/'`}},
		{"wildcard node", entry("b", "bridge", "site: farm1\nnode: \"+\"", h), []string{`node "+" has '+'`}},
		{"duplicate user", entry("u", "reader", "", h) + entry("v", "reader", "", h) + entry("u", "admin", "", h),
			[]string{`user 3 ("u"): the name is already used by user 1`}},
		{"plain-text password", "- name: u\n  role: reader\n  password: hunter2\n",
			[]string{`user 1 ("u"): a plain-text "password" is refused`}},
		{"plain-text password beside a hash", entry("u", "reader", "password: hunter2", h), []string{`a plain-text "password" is refused`}},
		{"plain text as the hash", entry("u", "reader", "", "hunter2"), []string{"password_hash is neither a bcrypt hash", "never stored in plain text"}},
		{"hash too short", entry("u", "reader", "", h[:59]), []string{"password_hash is neither a bcrypt hash"}},
		{"hash of another kind", entry("u", "reader", "", "$6$saltsalt$"+strings.Repeat("x", 86)), []string{"password_hash is neither a bcrypt hash"}},
		{"hash with an impossible cost", entry("u", "reader", "", "$2a$99$"+h[7:]), []string{"password_hash: crypto/bcrypt: cost 99 is outside"}},
		{"no hash", entry("u", "reader", "", ""), []string{"password_hash is missing"}},
		{"unknown key", entry("u", "reader", "rol: admin", h), []string{`unknown field "rol"`}},
		{"unknown top-level key", "acl: []\nusers: []\n", []string{`unknown field "acl"`}},
		{"a list, not a mapping", "- u\n", []string{"not a users file"}},
		{"not YAML", "users: [\n", []string{"not a users file"}},
		{"discovery ids collide", entry("b1", "bridge", "site: a_b\nnode: c", h) + entry("b2", "bridge", "site: a\nnode: b_c", h),
			[]string{`user 2 ("b2"): bridge a/b_c and "b1"'s bridge a_b/c would share the Home Assistant discovery id <prefix>_a_b_c`}},
		{"every problem is reported", entry("U", "reader", "", h) + entry("b", "bridge", "", "x"),
			[]string{`user name "U"`, "a bridge needs its site and node", "password_hash is neither a bcrypt hash"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			file := tc.file
			if !strings.HasPrefix(file, "acl") && !strings.HasPrefix(file, "users") && !strings.HasPrefix(file, "- u\n") {
				file = "users:\n" + file
			}
			_, err := ParseUsers([]byte(file))
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// Two bridge users for one node are fine (a credential being rotated).
func TestTwoUsersOneNode(t *testing.T) {
	h := hashOf(t, "pw")
	_, err := ParseUsers([]byte("users:\n" + entry("b1", "bridge", "site: farm1\nnode: n1", h) + entry("b1-new", "bridge", "site: farm1\nnode: n1", h)))
	require.NoError(t, err)
}

func TestMarshalRoundTrip(t *testing.T) {
	h := hashOf(t, "pw")
	// Names YAML would read as something else unless quoted.
	users := []User{
		{Name: "yes", Role: RoleBridge, Site: "01", Node: "null", PasswordHash: h},
		{Name: "0x10", Role: RoleReader, PasswordHash: h},
		{Name: "true", Role: RoleHomeAssistant, PasswordHash: h},
		{Name: "1e3", Role: RoleAdmin, PasswordHash: h},
	}
	b := MarshalUsers(users)
	got, err := ParseUsers(b)
	require.NoError(t, err, "%s", b)
	require.Equal(t, users, got)
	require.True(t, strings.HasPrefix(string(b), "# sensorfarm broker users."), "the file says what it is")

	got, err = ParseUsers(MarshalUsers(nil))
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestWriteUsers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.yaml")
	// An existing file, readable by all: the new one is 0600 whatever the old.
	require.NoError(t, os.WriteFile(path, []byte("users: []\n"), 0o644))

	users := []User{{Name: "root", Role: RoleAdmin, PasswordHash: hashOf(t, "pw")}}
	require.NoError(t, WriteUsers(path, users))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	got, err := ReadUsers(path)
	require.NoError(t, err)
	require.Equal(t, users, got)

	// An invalid list is refused, and the file stays as it was.
	err = WriteUsers(path, append(users, User{Name: "root", Role: RoleReader, PasswordHash: hashOf(t, "pw")}))
	require.ErrorContains(t, err, "already used")
	got, err = ReadUsers(path)
	require.NoError(t, err)
	require.Equal(t, users, got)

	// No temporary file is left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// A directory that does not exist: an error naming the file.
	err = WriteUsers(filepath.Join(dir, "no", "users.yaml"), users)
	require.ErrorContains(t, err, "users file")
}

func TestReadUsersErrors(t *testing.T) {
	_, err := ReadUsers(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "users file: open ")

	p := filepath.Join(t.TempDir(), "users.yaml")
	require.NoError(t, os.WriteFile(p, []byte("users:\n"+entry("u", "root", "", hashOf(t, "pw"))), 0o600))
	_, err = ReadUsers(p)
	require.ErrorContains(t, err, "users file "+p+`: user 1 ("u"): role "root" is not one of`)
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword([]byte("correct horse"), bcrypt.MinCost)
	require.NoError(t, err)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(h), []byte("correct horse")))
	require.NoError(t, checkHash(h))

	_, err = HashPassword(nil, DefaultCost)
	require.ErrorContains(t, err, "empty")
	_, err = HashPassword([]byte(strings.Repeat("x", 73)), DefaultCost)
	require.ErrorContains(t, err, "73 bytes long; bcrypt takes at most 72")
	_, err = HashPassword([]byte("x"), 3)
	require.ErrorContains(t, err, "bcrypt cost 3 is out of range")
	require.Equal(t, 10, DefaultCost)
}
