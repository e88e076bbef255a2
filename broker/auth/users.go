// Package auth is who may connect to the broker and what each may do: the users
// file (names, roles, bcrypt password hashes), the ACL that follows the wire
// contract's "Who may publish where", and the mochi hook that applies both.
//
// The policy is plain data: Policy.Authenticate and Policy.Allowed take
// strings and return a verdict, so every rule is tested without a server. Hook
// is the thin wrapper mochi calls, and the only part that knows about mochi.
//
// Everything no rule allows is denied. This is not mochi's auth.Ledger, whose
// ACLOk allows a topic that no rule matches.
package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Role is what a user is for; it decides the user's ACL.
type Role string

// The roles of the wire contract.
const (
	// RoleBridge is one node's bridge: bound to one site and node, it
	// publishes under its own <prefix>/<site>/<node>/ and its own Home
	// Assistant discovery topics.
	RoleBridge Role = "bridge"
	// RoleReader reads the farm (Grafana, an archiver, mosquitto_sub).
	RoleReader Role = "reader"
	// RoleHomeAssistant is Home Assistant's own user: a reader that may also
	// publish its birth and will on homeassistant/status.
	RoleHomeAssistant Role = "homeassistant"
	// RoleAdmin may do anything.
	RoleAdmin Role = "admin"
)

// Roles lists every role, in the order they are documented.
var Roles = []Role{RoleBridge, RoleReader, RoleHomeAssistant, RoleAdmin}

func (r Role) valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// DefaultCost is the bcrypt cost `broker user add` hashes with: bcrypt's own
// default, 2^10 rounds. Measured for one check of a password: 46 ms on this
// project's x86-64 build machine, 79 ms for the arm64 build under
// qemu-aarch64-static -cpu cortex-a72 (an emulator: that says little about
// real silicon). A Raspberry Pi 4's Cortex-A72 at 1.5 GHz should be about four
// times slower than the x86 machine, so about 0.2 s (an estimate, not measured
// on a Pi). The broker pays this once per connection, not per message: 50
// bridges reconnecting at once would cost a Pi 4's four cores about 2.5 s.
// Cost 11 would double both; below 10 a stolen users file is cheaper to attack
// than the usual recommendation. A hash keeps its own cost, so a file may mix
// costs (`broker user add --cost`).
const DefaultCost = bcrypt.DefaultCost

// User is one entry of the users file.
type User struct {
	// Name is the MQTT user name: [a-z0-9_-], 1 to 64 bytes, as wire's names.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Site and Node bind a bridge to its node; they are set for bridges only.
	Site string `json:"site,omitempty"`
	Node string `json:"node,omitempty"`
	// PasswordHash is the bcrypt hash of a chosen password ($2a$, $2b$ or
	// $2y$), or the HMAC-SHA256 of a generated token (see GenerateToken).
	PasswordHash string `json:"password_hash"`
}

// ClientID is the only MQTT client ID a bridge user may connect with,
// bridge:<site>:<node> (wire.Node.ClientID); empty for other roles.
func (u User) ClientID() string {
	if u.Role != RoleBridge {
		return ""
	}
	return wire.Node{Site: u.Site, Node: u.Node}.ClientID()
}

// Where describes the user for people: the role, and for a bridge its node.
func (u User) Where() string {
	if u.Role == RoleBridge {
		return fmt.Sprintf("%s %s/%s", u.Role, u.Site, u.Node)
	}
	return string(u.Role)
}

// bcryptHash is the modular-crypt form of a bcrypt hash: version, two-digit
// cost, then 22 characters of salt and 31 of hash in bcrypt's base64.
var bcryptHash = regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

// Validate checks one user on its own: its name, role, binding and hash.
func (u User) Validate() error {
	var errs []error
	if err := wire.ValidateName("user name", u.Name); err != nil {
		errs = append(errs, err)
	}
	switch {
	case !u.Role.valid():
		errs = append(errs, fmt.Errorf("role %q is not one of %s", u.Role, roleList()))
	case u.Role == RoleBridge:
		if u.Site == "" || u.Node == "" {
			errs = append(errs, errors.New("a bridge needs its site and node (the node it publishes for)"))
		}
		for _, p := range []struct{ what, v string }{{"site", u.Site}, {"node", u.Node}} {
			if p.v == "" {
				continue
			}
			if err := wire.ValidateName(p.what, p.v); err != nil {
				errs = append(errs, err)
			}
		}
	case u.Site != "" || u.Node != "":
		errs = append(errs, fmt.Errorf("site and node are for bridges only, not for role %s", u.Role))
	}
	if err := checkHash(u.PasswordHash); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkHash(h string) error {
	if h == "" {
		return errors.New("password_hash is missing: set the password with `broker user add`")
	}
	if IsTokenHash(h) {
		return nil
	}
	if !bcryptHash.MatchString(h) {
		return errors.New("password_hash is neither a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters) nor a generated token's (" + tokenScheme + "); " +
			"passwords are never stored in plain text: set it with `broker user add`")
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Errorf("password_hash: %w", err)
	}
	return nil
}

// ValidateUsers checks each user and the list as a whole: no name twice, and
// no two bridges of different nodes whose Home Assistant discovery ids (see
// wire.DiscoveryID) are the same, which would let each overwrite the other's.
func ValidateUsers(users []User) error {
	var errs []error
	seen := map[string]int{}
	ids := map[string]User{}
	for i, u := range users {
		if err := u.Validate(); err != nil {
			errs = append(errs, userError(i, u.Name, err))
			continue
		}
		if j, ok := seen[u.Name]; ok {
			errs = append(errs, fmt.Errorf("user %d (%q): the name is already used by user %d; each name may appear once", i+1, u.Name, j+1))
			continue
		}
		seen[u.Name] = i
		if u.Role != RoleBridge {
			continue
		}
		id := discoverySuffix(u.Site, u.Node)
		if o, ok := ids[id]; ok && (o.Site != u.Site || o.Node != u.Node) {
			errs = append(errs, fmt.Errorf("user %d (%q): bridge %s/%s and %q's bridge %s/%s would share the Home Assistant discovery id <prefix>_%s: rename a site or node",
				i+1, u.Name, u.Site, u.Node, o.Name, o.Site, o.Node, id))
			continue
		}
		ids[id] = u
	}
	return errors.Join(errs...)
}

// userError names the user (by position and name) in front of its problems,
// one per line when there are several.
func userError(i int, name string, err error) error {
	s := err.Error()
	if !strings.Contains(s, "\n") {
		return fmt.Errorf("user %d (%q): %w", i+1, name, err)
	}
	return fmt.Errorf("user %d (%q):\n  - %s", i+1, name, strings.ReplaceAll(s, "\n", "\n  - "))
}

// usersFile is the file's shape. Password is there only to be refused with a
// clear message: a plain-text password must never be accepted.
type usersFile struct {
	Users []fileUser `json:"users"`
}

type fileUser struct {
	User
	Password *string `json:"password,omitempty"`
}

// ParseUsers reads a users file's content and validates it. Unknown keys are
// refused, so that a misspelt key cannot silently change a user's rights.
func ParseUsers(data []byte) ([]User, error) {
	var f usersFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		hint := ""
		if strings.Contains(err.Error(), "cannot unmarshal") {
			hint = ` (quote a value that YAML would read as a number or a boolean, e.g. node: "01")`
		}
		return nil, fmt.Errorf("not a users file (a YAML mapping with a list of users): %w%s", err, hint)
	}
	users := make([]User, len(f.Users))
	var errs []error
	for i, fu := range f.Users {
		if fu.Password != nil {
			errs = append(errs, fmt.Errorf("user %d (%q): a plain-text \"password\" is refused: only bcrypt hashes are stored (password_hash); set the password with `broker user add`", i+1, fu.Name))
		}
		users[i] = fu.User
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := ValidateUsers(users); err != nil {
		return nil, err
	}
	return users, nil
}

// ReadUsers reads and validates the users file at path.
func ReadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	users, err := ParseUsers(b)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, nil
}

const fileHeader = `# sensorfarm broker users. Manage them with ` + "`broker user add|del|list`" + `; the broker
# rereads this file on SIGHUP. Passwords are bcrypt hashes, never plain text.
`

// MarshalUsers renders users as the file's YAML, every value quoted (a node
// named "01" or "yes" must stay a string), in the order given.
func MarshalUsers(users []User) []byte {
	var b bytes.Buffer
	b.WriteString(fileHeader)
	if len(users) == 0 {
		b.WriteString("users: []\n")
		return b.Bytes()
	}
	b.WriteString("users:\n")
	for _, u := range users {
		fmt.Fprintf(&b, "- name: %s\n  role: %s\n", strconv.Quote(u.Name), strconv.Quote(string(u.Role)))
		if u.Site != "" || u.Node != "" {
			fmt.Fprintf(&b, "  site: %s\n  node: %s\n", strconv.Quote(u.Site), strconv.Quote(u.Node))
		}
		fmt.Fprintf(&b, "  password_hash: %s\n", strconv.Quote(u.PasswordHash))
	}
	return b.Bytes()
}

// WriteUsers validates users and replaces the file at path atomically: a
// temporary file in the same directory, mode 0600, synced, then renamed over
// path. A broker reading the file (on SIGHUP) sees the old content or the new,
// never a part.
func WriteUsers(path string, users []User) (err error) {
	if err := ValidateUsers(users); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if _, err := tmp.Write(MarshalUsers(users)); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// MaxPasswordLen is bcrypt's limit: it reads at most 72 bytes.
const MaxPasswordLen = 72

// HashPassword returns the bcrypt hash of password at cost.
func HashPassword(password []byte, cost int) (string, error) {
	switch {
	case len(password) == 0:
		return "", errors.New("the password is empty")
	case len(password) > MaxPasswordLen:
		return "", fmt.Errorf("the password is %d bytes long; bcrypt takes at most %d", len(password), MaxPasswordLen)
	case cost < bcrypt.MinCost || cost > bcrypt.MaxCost:
		return "", fmt.Errorf("bcrypt cost %d is out of range %d-%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}
