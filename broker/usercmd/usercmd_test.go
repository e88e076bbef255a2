package usercmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/sensorfarm/sensorfarm/broker/auth"
)

// TestMain lowers the smallest accepted --cost, so that the tests can hash at
// bcrypt's minimum: cost 10 takes 0.6 s a hash under -race.
func TestMain(m *testing.M) {
	minCost = bcrypt.MinCost
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs `broker user args...` with stdin as its standard input.
func run(t *testing.T, stdin string, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

// fast is the cost the tests hash at.
var fast = []string{"--cost", "4"}

func add(t *testing.T, file, password string, args ...string) result {
	t.Helper()
	return run(t, password+"\n", nil, append(append([]string{"add", "--users", file}, fast...), args...)...)
}

func TestRoundTrip(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")

	// The file is created by the first add, at the default cost here.
	r := run(t, "s3cret-bridge\n", nil, "add", "--users", file, "--role", "bridge", "--site", "farm1", "--node", "pizero-01", "farm1-pizero-01")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "added user farm1-pizero-01 (bridge farm1/pizero-01) to "+file+"\nsend the broker SIGHUP to apply it\n", r.stdout)
	require.Empty(t, r.stderr, "no prompt when stdin is not a terminal")

	// Flags after the name work too.
	r = add(t, file, "s3cret-grafana", "grafana", "--role", "reader")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "added user grafana (reader)")
	require.Equal(t, 0, add(t, file, "s3cret-hass", "--role", "homeassistant", "hass").code)
	require.Equal(t, 0, add(t, file, "s3cret-root", "--role", "admin", "root").code)

	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	users, err := auth.ReadUsers(file)
	require.NoError(t, err)
	require.Len(t, users, 4)
	cost, err := bcrypt.Cost([]byte(users[0].PasswordHash))
	require.NoError(t, err)
	require.Equal(t, auth.DefaultCost, cost, "add hashes at the default cost unless told")

	// The passwords check out through the policy the broker uses.
	p, err := auth.NewPolicy("sensorfarm", users)
	require.NoError(t, err)
	require.NoError(t, p.Authenticate(auth.Login{Username: "farm1-pizero-01", Password: []byte("s3cret-bridge"), ClientID: "bridge:farm1:pizero-01"}))
	require.NoError(t, p.Authenticate(auth.Login{Username: "grafana", Password: []byte("s3cret-grafana"), ClientID: "g"}))
	require.ErrorIs(t, p.Authenticate(auth.Login{Username: "grafana", Password: []byte("s3cret-grafana\n"), ClientID: "g"}), auth.ErrWrongPassword,
		"the line ending is not part of the password")

	// No password, plain or hashed, is in anything printed.
	r = run(t, "", nil, "list", "--users", file)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, strings.Join([]string{
		"NAME             ROLE           SITE   NODE",
		"farm1-pizero-01  bridge         farm1  pizero-01",
		"grafana          reader         -      -",
		"hass             homeassistant  -      -",
		"root             admin          -      -",
		"",
	}, "\n"), r.stdout)
	body, err := os.ReadFile(file)
	require.NoError(t, err)
	for _, s := range []string{"s3cret"} {
		require.NotContains(t, string(body), s, "the file holds hashes only")
	}
	for _, u := range users {
		require.NotContains(t, r.stdout, u.PasswordHash)
	}

	// add on an existing name replaces it, and says so.
	r = add(t, file, "n3w", "--role", "reader", "hass")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "replaced user hass in "+file+": was homeassistant, now reader, with the new password\nsend the broker SIGHUP to apply it\n", r.stdout)
	users, err = auth.ReadUsers(file)
	require.NoError(t, err)
	require.Len(t, users, 4)
	require.Equal(t, auth.RoleReader, users[2].Role, "replaced in place")
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(users[2].PasswordHash), []byte("n3w")))

	// del removes; del of a missing name is an error.
	r = run(t, "", nil, "del", "--users", file, "hass")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "deleted user hass (reader) from "+file+"\nsend the broker SIGHUP to apply it\n", r.stdout)
	r = run(t, "", nil, "del", "--users", file, "hass")
	require.Equal(t, 1, r.code)
	require.Equal(t, "broker user del: no user hass in "+file+"\n", r.stderr)

	r = run(t, "", map[string]string{"SENSORFARM_USERS": file}, "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stdout, "hass")
	require.Contains(t, r.stdout, "grafana")

	// No temporary file is left beside the users file.
	entries, err := os.ReadDir(filepath.Dir(file))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

func TestPasswordInput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")
	for _, tc := range []struct {
		desc, stdin, want string
	}{
		{"first line only", "one\ntwo\n", "one"},
		{"CRLF", "pw\r\n", "pw"},
		{"no line ending", "pw", "pw"},
		{"spaces are kept", " pw ", " pw "},
		{"72 bytes", strings.Repeat("x", 72), strings.Repeat("x", 72)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := run(t, tc.stdin, nil, "add", "--users", file, "--cost", "4", "--role", "reader", "u")
			require.Equal(t, 0, r.code, r.stderr)
			users, err := auth.ReadUsers(file)
			require.NoError(t, err)
			require.NoError(t, bcrypt.CompareHashAndPassword([]byte(users[0].PasswordHash), []byte(tc.want)))
		})
	}
	for _, tc := range []struct{ desc, stdin, want string }{
		{"empty stdin", "", "the password is empty"},
		{"empty line", "\nsecond\n", "the password is empty"},
		{"too long", strings.Repeat("x", 73), "73 bytes long; bcrypt takes at most 72"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before, err := os.ReadFile(file)
			require.NoError(t, err)
			r := run(t, tc.stdin, nil, "add", "--users", file, "--cost", "4", "--role", "admin", "u")
			require.Equal(t, 1, r.code)
			require.Contains(t, r.stderr, tc.want)
			after, err := os.ReadFile(file)
			require.NoError(t, err)
			require.Equal(t, before, after, "nothing changed")
		})
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "users.yaml")
	for _, tc := range []struct {
		desc string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"passwd"}, `unknown command "passwd": want add, del, list or export`},
		{"no --users", []string{"list"}, "--users FILE is required (or SENSORFARM_USERS)"},
		{"no name", []string{"add", "--users", file, "--role", "reader"}, "want exactly one user NAME, got 0"},
		{"two names", []string{"add", "--users", file, "--role", "reader", "a", "b"}, "want exactly one user NAME, got 2"},
		{"list with a name", []string{"list", "--users", file, "a"}, `list takes no user name, got ["a"]`},
		{"no role", []string{"add", "--users", file, "a"}, "--role is required"},
		{"bad role", []string{"add", "--users", file, "--role", "root", "a"}, `--role "root": want bridge, reader, homeassistant or admin`},
		{"bridge without node", []string{"add", "--users", file, "--role", "bridge", "--site", "s", "a"}, "--role bridge needs --site and --node"},
		{"reader with node", []string{"add", "--users", file, "--role", "reader", "--node", "n", "a"}, "--site and --node are for --role bridge only, not reader"},
		{"bad name", []string{"add", "--users", file, "--role", "reader", "Alice"}, `user name "Alice" has 'A'`},
		{"bad site", []string{"add", "--users", file, "--role", "bridge", "--site", "a/b", "--node", "n", "a"}, `--site "a/b" has '/'`},
		{"cost too high", []string{"add", "--users", file, "--role", "reader", "--cost", "20", "a"}, "--cost 20: want 4 to 15"},
		{"password on the command line", []string{"add", "--users", file, "--role", "reader", "--password", "x", "a"}, "flag provided but not defined: -password"},
		{"role flag for del", []string{"del", "--users", file, "--role", "reader", "a"}, "flag provided but not defined: -role"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := run(t, "pw\n", nil, tc.args...)
			require.Equal(t, 2, r.code, r.stdout)
			require.Contains(t, r.stderr, tc.want)
			_, err := os.Stat(file)
			require.ErrorIs(t, err, os.ErrNotExist, "no file was written")
		})
	}

	r := run(t, "", nil, "-h")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "broker user add  --users FILE --role bridge --site SITE --node NODE")
	r = run(t, "", nil, "add", "-h")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "never from the\ncommand line")
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	for _, cmd := range []string{"list", "del"} {
		args := []string{cmd, "--users", missing}
		if cmd == "del" {
			args = append(args, "a")
		}
		r := run(t, "", nil, args...)
		require.Equal(t, 1, r.code)
		require.Contains(t, r.stderr, "no such file or directory")
	}

	// A broken file is not overwritten by add.
	broken := filepath.Join(dir, "broken.yaml")
	require.NoError(t, os.WriteFile(broken, []byte("users:\n- name: a\n  role: reader\n  password: plain\n"), 0o600))
	r := add(t, broken, "pw", "--role", "reader", "b")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `a plain-text "password" is refused`)
	require.Contains(t, r.stderr, "the file was not changed")
	b, err := os.ReadFile(broken)
	require.NoError(t, err)
	require.Contains(t, string(b), "password: plain")

	// A bridge whose discovery id would collide with another's is refused
	// before the password is asked for.
	file := filepath.Join(dir, "users.yaml")
	require.Equal(t, 0, add(t, file, "pw", "--role", "bridge", "--site", "a_b", "--node", "c", "one").code)
	r = run(t, "", nil, "add", "--users", file, "--role", "bridge", "--site", "a", "--node", "b_c", "two")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "would share the Home Assistant discovery id")
	require.NotContains(t, r.stderr, "password is empty", "the password was not asked for")
}

func TestPlaceholderHashIsWellFormed(t *testing.T) {
	require.Len(t, placeholderHash, 60)
	require.NoError(t, auth.User{Name: "x", Role: auth.RoleAdmin, PasswordHash: placeholderHash}.Validate())
}

// add --generate prints a token once, stores only its hash, and the token is
// the user's password.
func TestGenerate(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")
	r := run(t, "", nil, "add", "--users", file, "--role", "bridge", "--site", "farm1", "--node", "n1", "--generate", "farm1-n1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "added user farm1-n1 (bridge farm1/n1)")
	i := strings.LastIndex(r.stdout, "password: ")
	require.Positive(t, i, r.stdout)
	token := strings.TrimSpace(r.stdout[i+len("password: "):])
	require.Len(t, token, 43)

	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NotContains(t, string(b), token)
	require.Contains(t, string(b), `password_hash: "$sf-hmac-sha256$`)
	users, err := auth.ReadUsers(file)
	require.NoError(t, err)
	p, err := auth.NewPolicy("sensorfarm", users)
	require.NoError(t, err)
	require.NoError(t, p.Authenticate(auth.Login{Username: "farm1-n1", Password: []byte(token), ClientID: "bridge:farm1:n1"}))
	require.False(t, p.Costly("farm1-n1"))

	// A second generate makes another token.
	r2 := run(t, "", nil, "add", "--users", file, "--role", "bridge", "--site", "farm1", "--node", "n1", "--generate", "farm1-n1")
	require.Equal(t, 0, r2.code, r2.stderr)
	require.NotContains(t, r2.stdout, token)
}
