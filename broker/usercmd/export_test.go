package usercmd

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/auth"
)

// A line written by Debian's mosquitto_passwd 2.0.11 (`mosquitto_passwd -c -b
// FILE farm1-node1 'node1-pw:with colon'`): our hash of the same password with
// the same salt and iterations must be the same line, byte for byte.
const mosquittoPasswdLine = "farm1-node1:$7$101$tSsahAuP03bx+bcM$OVn6EE1BA3QpFyLB80/xjsDo2E0L5gsXd6mN1TO93yZJu0Aa3SrQ9tmd+7rv+i+9WZmZzk1Qc+ep1vnkWxDXdQ==\n"

func TestMosquittoPasswdMatchesMosquittoPasswd(t *testing.T) {
	salt, err := base64.StdEncoding.DecodeString("tSsahAuP03bx+bcM")
	require.NoError(t, err)
	users := []auth.User{{Name: "farm1-node1"}}
	got, err := mosquittoPasswd(users, map[string][]byte{"farm1-node1": []byte("node1-pw:with colon")}, 101, bytes.NewReader(salt))
	require.NoError(t, err)
	require.Equal(t, mosquittoPasswdLine, string(got))
}

func TestMosquittoACL(t *testing.T) {
	users := []auth.User{
		{Name: "farm1-node1", Role: auth.RoleBridge, Site: "farm1", Node: "node1", PasswordHash: placeholderHash},
		{Name: "grafana", Role: auth.RoleReader, PasswordHash: placeholderHash},
		{Name: "hass", Role: auth.RoleHomeAssistant, PasswordHash: placeholderHash},
		{Name: "root", Role: auth.RoleAdmin, PasswordHash: placeholderHash},
	}
	p, err := auth.NewPolicy("farm", users)
	require.NoError(t, err)
	acl := string(mosquittoACL(p, users))
	_, blocks, _ := strings.Cut(acl, "\n\n")
	require.Equal(t, `# bridge farm1/node1
user farm1-node1
topic read homeassistant/status
topic write farm/farm1/node1/status
topic write farm/farm1/node1/health
topic write farm/farm1/node1/env
topic write farm/farm1/node1/env/+
topic write farm/farm1/node1/backlog/env
topic write farm/farm1/node1/gps
topic write farm/farm1/node1/gps/+
topic write farm/farm1/node1/backlog/gps
topic write homeassistant/+/farm_farm1_node1/+/config
topic write homeassistant/+/farm_farm1_node1/config

# reader
user grafana
topic read farm/#
topic read homeassistant/#
topic read $SYS/#

# homeassistant
user hass
topic read farm/#
topic read homeassistant/#
topic read $SYS/#
topic write homeassistant/status

# admin
user root
topic readwrite #
topic readwrite $SYS/#
`, blocks)
	for _, line := range strings.Split(strings.TrimSpace(acl[:len(acl)-len(blocks)]), "\n") {
		require.True(t, strings.HasPrefix(line, "#"), "only comments before the first user block (anonymous clients get nothing): %q", line)
	}
}

func TestExport(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	require.Equal(t, 0, add(t, users, "node1-pw", "--role", "bridge", "--site", "farm1", "--node", "node1", "farm1-node1").code)
	require.Equal(t, 0, add(t, users, "grafana-pw", "--role", "reader", "grafana").code)
	passwords := filepath.Join(dir, "passwords")
	write := func(s string) {
		require.NoError(t, os.WriteFile(passwords, []byte(s), 0o600))
	}
	export := func(out string, extra ...string) result {
		return run(t, "", nil, append([]string{"export", "--users", users, "--format", "mosquitto", "--passwords", passwords, "--out", out, "--iterations", "1000"}, extra...)...)
	}

	write("# the boards' passwords\nfarm1-node1:node1-pw\r\n\ngrafana:grafana-pw\n")
	out := filepath.Join(dir, "out")
	r := export(out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "wrote 2 users to "+filepath.Join(out, "passwd"))

	passwd, err := os.ReadFile(filepath.Join(out, "passwd"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(passwd), "\n"), "\n")
	require.Len(t, lines, 2)
	for i, want := range []struct{ name, password string }{{"farm1-node1", "node1-pw"}, {"grafana", "grafana-pw"}} {
		name, hash, _ := strings.Cut(lines[i], ":")
		require.Equal(t, want.name, name)
		f := strings.Split(hash, "$") // "", "7", iterations, salt, key
		require.Len(t, f, 5, hash)
		require.Equal(t, "7", f[1])
		iter, err := strconv.Atoi(f[2])
		require.NoError(t, err)
		require.Equal(t, 1000, iter)
		salt, err := base64.StdEncoding.DecodeString(f[3])
		require.NoError(t, err)
		require.Len(t, salt, mosquittoSaltLen)
		key, err := pbkdf2.Key(sha512.New, want.password, salt, iter, sha512.Size)
		require.NoError(t, err)
		require.Equal(t, base64.StdEncoding.EncodeToString(key), f[4], "the hash of %s's password", name)
	}
	for name, mode := range map[string]os.FileMode{"passwd": 0o600, "acl": 0o644, "mosquitto.conf": 0o644} {
		fi, err := os.Stat(filepath.Join(out, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), name)
	}
	conf, err := os.ReadFile(filepath.Join(out, "mosquitto.conf"))
	require.NoError(t, err)
	require.Contains(t, string(conf), "allow_anonymous false\npassword_file "+filepath.Join(out, "passwd")+"\nacl_file "+filepath.Join(out, "acl")+"\n")

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			desc, passwords string
			want            []string
		}{
			{"a user without a password", "grafana:grafana-pw\n", []string{"no password for user farm1-node1"}},
			{"a stale password", "farm1-node1:old\ngrafana:grafana-pw\n", []string{"the password of farm1-node1 is not the one in the users file"}},
			{"a name not in the users file", "farm1-node1:node1-pw\ngrafana:grafana-pw\ngrafna:x\n", []string{"grafna is not in the users file"}},
			{"a name twice", "grafana:a\ngrafana:b\n", []string{"line 2: grafana is given twice"}},
			{"a line without a colon", "grafana\n", []string{"line 1: want NAME:PASSWORD"}},
			{"an empty password", "grafana:\n", []string{"line 1: the password of grafana is empty"}},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				write(tc.passwords)
				out := filepath.Join(t.TempDir(), "out")
				r := export(out)
				require.Equal(t, exitError, r.code, r.stdout)
				for _, w := range tc.want {
					require.Contains(t, r.stderr, w)
				}
				require.NotContains(t, r.stderr, "grafana-pw", "never a password in a message")
				require.NoDirExists(t, out, "nothing written")
			})
		}
	})

	t.Run("usage", func(t *testing.T) {
		r := run(t, "", nil, "export", "--users", users, "--format", "emqx", "--iterations", "10", "--prefix", "Farm")
		require.Equal(t, exitUsage, r.code)
		for _, w := range []string{`--format "emqx": want mosquitto or nats`, "--passwords FILE is required", "--out DIR is required", "--iterations 10", "--prefix"} {
			require.Contains(t, r.stderr, w)
		}
		r = run(t, "", nil, "export", "--users", users, "grafana")
		require.Equal(t, exitUsage, r.code)
		require.Contains(t, r.stderr, "export takes no user name")
	})
}

// A generated token is exported at tokenIterations, a chosen password at the
// iterations asked for; both pass checkPasswords.
func TestExportGeneratedToken(t *testing.T) {
	token, h, err := auth.GenerateToken()
	require.NoError(t, err)
	bh, err := auth.HashPassword([]byte("pw-grafana"), 4)
	require.NoError(t, err)
	users := []auth.User{
		{Name: "b1", Role: auth.RoleBridge, Site: "farm1", Node: "n1", PasswordHash: h},
		{Name: "grafana", Role: auth.RoleReader, PasswordHash: bh},
	}
	pws := map[string][]byte{"b1": []byte(token), "grafana": []byte("pw-grafana")}
	require.NoError(t, checkPasswords(users, pws))
	pws["b1"] = []byte("pw-grafana")
	require.ErrorContains(t, checkPasswords(users, pws), "the password of b1 is not the one")
	pws["b1"] = []byte(token)
	out, err := mosquittoPasswd(users, pws, DefaultIterations, rand.Reader)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^b1:\$7\$1000\$`, string(out))
	require.Regexp(t, `(?m)^grafana:\$7\$210000\$`, string(out))
}
