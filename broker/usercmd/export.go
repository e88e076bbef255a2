package usercmd

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/wire"
)

// The parameters of mosquitto 2's "$7$" password hashes: PBKDF2-HMAC-SHA512
// with a 12-byte salt and a 64-byte key, the only sizes mosquitto's own
// check accepts (mosquitto_passwd writes the same).
const (
	mosquittoSaltLen = 12
	mosquittoKeyLen  = sha512.Size
)

// DefaultIterations is the PBKDF2 iteration count export hashes with:
// OWASP's recommendation for PBKDF2-HMAC-SHA512 (2023). mosquitto_passwd's
// own default, 101, makes a stolen password file nearly as cheap to attack as
// plain SHA-512. mosquitto pays this once per connection, as our broker pays
// bcrypt's cost.
const DefaultIterations = 210_000

// tokenIterations hashes a generated token (auth.GenerateToken) for mosquitto:
// a 256-bit random secret needs no slow key derivation there either, so
// mosquitto checks it as cheaply as our broker does (and a storm benchmark
// compares like with like). 1000 is the least export accepts.
const tokenIterations = 1000

// The exported files, in the --out directory.
const (
	passwdFile = "passwd"
	aclFile    = "acl"
	confFile   = "mosquitto.conf"
)

type exportOptions struct {
	format, passwords, out, prefix string
	iterations                     int
}

func (o *exportOptions) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "format", "", "mosquitto or nats")
	fs.StringVar(&o.passwords, "passwords", "", "`file` of NAME:PASSWORD lines, one per user")
	fs.StringVar(&o.out, "out", "", "`directory` to write passwd, acl and mosquitto.conf to")
	fs.StringVar(&o.prefix, "prefix", wire.DefaultPrefix, "the broker's --prefix")
	fs.IntVar(&o.iterations, "iterations", DefaultIterations, "PBKDF2 iterations of the password hashes")
}

func (o exportOptions) check() error {
	var errs []error
	if o.format != "mosquitto" {
		errs = append(errs, fmt.Errorf("--format %q: want mosquitto or nats", o.format))
	}
	if o.passwords == "" {
		errs = append(errs, errors.New("--passwords FILE is required: our bcrypt hashes cannot be converted, so each user's password is hashed again for mosquitto"))
	}
	if o.out == "" {
		errs = append(errs, errors.New("--out DIR is required"))
	}
	if err := wire.ValidateName("--prefix", o.prefix); err != nil {
		errs = append(errs, err)
	}
	if o.iterations < 1000 {
		errs = append(errs, fmt.Errorf("--iterations %d: want at least 1000", o.iterations))
	}
	return errors.Join(errs...)
}

// export writes the users in path as mosquitto's password file and their ACL
// as mosquitto's ACL file.
func (c *cmd) export(path, _ string) error {
	o := c.exp
	if o.format == formatNATS {
		return c.exportNATS(path)
	}
	if err := o.check(); err != nil {
		return usageErr{err}
	}
	users, policy, err := readPolicy(path, o.prefix)
	if err != nil {
		return err
	}
	pwData, err := os.ReadFile(o.passwords)
	if err != nil {
		return fmt.Errorf("read the passwords: %w", err)
	}
	passwords, err := parsePasswords(pwData)
	if err != nil {
		return fmt.Errorf("%s: %w", o.passwords, err)
	}
	if err := checkPasswords(users, passwords); err != nil {
		return fmt.Errorf("%s: %w", o.passwords, err)
	}
	passwd, err := mosquittoPasswd(users, passwords, o.iterations, rand.Reader)
	if err != nil {
		return err
	}
	dir, err := outDir(o.out)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{passwdFile, passwd, 0o600},
		{aclFile, mosquittoACL(policy, users), 0o644},
		{confFile, mosquittoConf(dir), 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.stdout, "wrote %d users to %s, their ACL to %s and %s naming both\n",
		len(users), filepath.Join(dir, passwdFile), filepath.Join(dir, aclFile), filepath.Join(dir, confFile))
	return nil
}

// readPolicy reads the users in path and the policy they make under prefix,
// which every export format is written from.
func readPolicy(path, prefix string) ([]auth.User, *auth.Policy, error) {
	users, err := read(path, false)
	if err != nil {
		return nil, nil, err
	}
	policy, err := auth.NewPolicy(prefix, users)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, policy, nil
}

// outDir makes the --out directory, private to its owner (the files hold
// password hashes), and returns its absolute path.
func outDir(out string) (string, error) {
	dir, err := filepath.Abs(out)
	if err != nil {
		return "", fmt.Errorf("--out %s: %w", out, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the output directory: %w", err)
	}
	return dir, nil
}

// parsePasswords reads NAME:PASSWORD lines, the plain-text form mosquitto_passwd
// -U takes; a password may contain ':'. Empty lines and lines starting with '#'
// are skipped.
func parsePasswords(data []byte) (map[string][]byte, error) {
	out := make(map[string][]byte)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, pw, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: want NAME:PASSWORD", n)
		case pw == "":
			return nil, fmt.Errorf("line %d: the password of %s is empty", n, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("line %d: %s is given twice", n, name)
		}
		out[name] = []byte(pw)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return out, nil
}

// checkPasswords checks that every user has a password and that it is the
// one the users file holds, so that the export never locks a board out with a
// stale or mistyped password; a name not in the users file is refused too.
func checkPasswords(users []auth.User, passwords map[string][]byte) error {
	var errs []error
	known := make(map[string]bool, len(users))
	for _, u := range users {
		known[u.Name] = true
		pw, ok := passwords[u.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("no password for user %s", u.Name))
			continue
		}
		if !u.CheckPassword(pw) {
			errs = append(errs, fmt.Errorf("the password of %s is not the one in the users file", u.Name))
		}
	}
	var unknown []string
	for name := range passwords {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		errs = append(errs, fmt.Errorf("%s is not in the users file", name))
	}
	return errors.Join(errs...)
}

// mosquittoPasswd is mosquitto 2's password file: one NAME:$7$ITER$SALT$KEY line
// per user, salt and key in standard base64.
func mosquittoPasswd(users []auth.User, passwords map[string][]byte, iterations int, random io.Reader) ([]byte, error) {
	var b bytes.Buffer
	for _, u := range users {
		salt := make([]byte, mosquittoSaltLen)
		if _, err := io.ReadFull(random, salt); err != nil {
			return nil, fmt.Errorf("salt for %s: %w", u.Name, err)
		}
		iter := iterations
		if u.Generated() {
			iter = tokenIterations
		}
		key, err := pbkdf2.Key(sha512.New, string(passwords[u.Name]), salt, iter, mosquittoKeyLen)
		if err != nil {
			return nil, fmt.Errorf("hash the password of %s: %w", u.Name, err)
		}
		fmt.Fprintf(&b, "%s:$7$%d$%s$%s\n", u.Name, iter,
			base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key))
	}
	return b.Bytes(), nil
}

// mosquittoACL is mosquitto's acl_file for users: a "user" block per user
// holding its role's grants (auth.Policy.Grants, the broker's own table), a
// filter both read and written as one readwrite line. Nothing comes before the
// first block, so anonymous clients get nothing.
func mosquittoACL(p *auth.Policy, users []auth.User) []byte {
	var b bytes.Buffer
	b.WriteString(`# mosquitto acl_file written by "broker user export" from the broker's own ACL.
# Where mosquitto differs from our broker (tested in e2e/export_test.go):
#   - a bridge user may connect only with its own client ID, bridge:<site>:<node>,
#     and nobody else may use a bridge:... ID (mosquitto: any client ID);
#   - a will on a topic the user may not publish refuses the connection
#     (mosquitto: accepted, but the will is not sent);
#   - a subscription to a filter the user may not read is refused
#     (mosquitto: granted, but nothing the user may not read is delivered).
`)
	for _, u := range users {
		fmt.Fprintf(&b, "\n# %s\nuser %s\n", u.Where(), u.Name)
		g := p.Grants(u)
		if g.All {
			// '#' does not match $-topics in an ACL either: they need their own line.
			b.WriteString("topic readwrite #\ntopic readwrite $SYS/#\n")
			continue
		}
		for _, f := range g.Read {
			access := "read"
			if slices.Contains(g.Write, f) {
				access = "readwrite"
			}
			fmt.Fprintf(&b, "topic %s %s\n", access, f)
		}
		for _, f := range g.Write {
			if !slices.Contains(g.Read, f) {
				fmt.Fprintf(&b, "topic write %s\n", f)
			}
		}
	}
	return b.Bytes()
}

// mosquittoConf is the part of mosquitto.conf that applies the export; the
// listeners are the operator's to add.
func mosquittoConf(dir string) []byte {
	return fmt.Appendf(nil, `# Written by "broker user export": the farm's users and ACL.
# Add your listener lines (e.g. "listener 1883") and run: mosquitto -c %s
per_listener_settings false
allow_anonymous false
password_file %s
acl_file %s
`, filepath.Join(dir, confFile), filepath.Join(dir, passwdFile), filepath.Join(dir, aclFile))
}

// writeFileAtomic replaces path with data, so a reader (a running mosquitto
// told to reload) sees the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
