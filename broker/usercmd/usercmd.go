// Package usercmd is `broker user`: it adds, replaces, deletes and lists the
// users of the broker's users file, as mosquitto_passwd does for mosquitto.
//
// A password is read from the terminal (asked twice, not echoed) or, when
// standard input is not a terminal, from its first line; never from the
// command line, where ps and the shell's history would show it. The file is
// replaced atomically (auth.WriteUsers), mode 0600.
package usercmd

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/internal/cliconf"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Exit codes of Run.
const (
	exitOK    = 0
	exitError = 1 // the command was understood but failed
	exitUsage = 2 // the command line is wrong
)

const usage = `Usage:
  broker user add  --users FILE --role bridge --site SITE --node NODE [--cost N] NAME
  broker user add  --users FILE --role reader|homeassistant|admin [--cost N] NAME
  broker user add  --users FILE --role ROLE [--site SITE --node NODE] --generate NAME
  broker user del  --users FILE NAME
  broker user list --users FILE
  broker user export --users FILE --format mosquitto --passwords FILE --out DIR
                     [--prefix PREFIX] [--iterations N]
  broker user export --users FILE --format nats --out DIR [--prefix PREFIX]

add creates the user, or replaces an existing one of that name (role, node and
password). The password is asked for twice on the terminal, or read from the
first line of standard input when that is not a terminal; never from the
command line. --users may also come from %s.

add --generate makes a random 256-bit token instead of asking for a password,
prints it once (a "password: TOKEN" line) and stores its salted HMAC-SHA256:
a token nobody can guess needs no slow hash, so the broker checks it in
microseconds instead of bcrypt's tenth of a second, and a whole fleet of
bridges is let back in at once after a restart. Use it for bridges and other
programs; bcrypt stays for passwords people choose.

export writes the users and the contract's ACL as mosquitto 2's password_file
and acl_file, and a mosquitto.conf naming them: DIR/passwd, DIR/acl and
DIR/mosquitto.conf. Our bcrypt hashes cannot be turned into mosquitto's PBKDF2
ones ($7$), so --passwords names a file of NAME:PASSWORD lines, one per user
(the passwords the boards already have); each is checked against the users
file before it is hashed. --prefix is the broker's --prefix (default ` + wire.DefaultPrefix + `).
With --format nats it writes DIR/users.conf, nats-server's authorization block:
the same bcrypt hashes and the ACL as subject permissions (nats/README.md).

The broker rereads the file on SIGHUP (kill -HUP <pid>) without dropping
connections.
`

// Run runs `broker user` with args (after "user") and returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, cliconf.EnvName("users"))
		return exitUsage
	}
	c := &cmd{stdin: stdin, stdout: stdout, stderr: stderr}
	var run func(path, name string) error
	switch args[0] {
	case "add":
		run = c.add
	case "del", "delete":
		run = c.del
	case "list":
		run = c.list
	case "export":
		run = c.export
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, usage, cliconf.EnvName("users"))
		return exitOK
	default:
		fmt.Fprintf(stderr, "broker user: unknown command %q: want add, del, list or export\n\n"+usage, args[0], cliconf.EnvName("users"))
		return exitUsage
	}

	fs := flag.NewFlagSet("broker user "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	users := fs.String("users", "", "the users `file`")
	var opts addOptions
	if args[0] == "add" {
		fs.StringVar(&opts.role, "role", "", "bridge, reader, homeassistant or admin")
		fs.StringVar(&opts.site, "site", "", "the bridge's site")
		fs.StringVar(&opts.node, "node", "", "the bridge's node")
		fs.IntVar(&opts.cost, "cost", auth.DefaultCost, "bcrypt cost")
		fs.BoolVar(&opts.generate, "generate", false, "generate a random token instead of asking for a password")
	}
	var exp exportOptions
	if args[0] == "export" {
		exp.flags(fs)
	}
	names, err := parse(fs, args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, usage, cliconf.EnvName("users"))
		return exitOK
	case err != nil:
		return c.usageError(err)
	}
	if *users == "" {
		*users = getenv(cliconf.EnvName("users"))
	}
	if *users == "" {
		return c.usageError(fmt.Errorf("--users FILE is required (or %s)", cliconf.EnvName("users")))
	}
	want := 1
	if args[0] == "list" || args[0] == "export" {
		want = 0
	}
	if len(names) != want {
		if want == 0 {
			return c.usageError(fmt.Errorf("%s takes no user name, got %q", args[0], names))
		}
		return c.usageError(fmt.Errorf("want exactly one user NAME, got %d", len(names)))
	}
	name := ""
	if want == 1 {
		name = names[0]
	}
	c.opts = opts
	c.exp = exp
	if err := run(*users, name); err != nil {
		var u usageErr
		if errors.As(err, &u) {
			return c.usageError(err)
		}
		fmt.Fprintf(stderr, "broker user %s: %v\n", args[0], err)
		return exitError
	}
	return exitOK
}

// parse parses flags that may come before or after the positional arguments
// (`add NAME --role reader` as well as `add --role reader NAME`) and returns
// the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// The bcrypt costs add accepts: not below the default (see auth.DefaultCost),
// and not so high that a Raspberry Pi 4 takes many seconds per connection.
// Tests lower minCost to keep their hashes fast.
var minCost = auth.DefaultCost

const maxCost = 15

type addOptions struct {
	role, site, node string
	cost             int
	generate         bool
}

type cmd struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	opts           addOptions
	exp            exportOptions
}

// usageErr marks an error in what the command line asks for.
type usageErr struct{ error }

func (c *cmd) usageError(err error) int {
	fmt.Fprintf(c.stderr, "broker user: %v\nRun 'broker user -h' for usage.\n", err)
	return exitUsage
}

// read returns the users in path; a missing file is an empty list when
// missingOK.
func read(path string, missingOK bool) ([]auth.User, error) {
	users, err := auth.ReadUsers(path)
	if errors.Is(err, os.ErrNotExist) && missingOK {
		return nil, nil
	}
	return users, err
}

func (c *cmd) add(path, name string) error {
	u := auth.User{Name: name, Role: auth.Role(c.opts.role), Site: c.opts.site, Node: c.opts.node}
	if err := c.checkAdd(u); err != nil {
		return usageErr{err}
	}
	users, err := read(path, true)
	if err != nil {
		return fmt.Errorf("%w (the file was not changed; fix it by hand or move it away)", err)
	}
	i := index(users, name)
	// Check the whole list with a placeholder hash before asking for the
	// password, so that nobody types a password for a change that fails.
	next := append([]auth.User(nil), users...)
	probe := u
	probe.PasswordHash = placeholderHash
	if i >= 0 {
		next[i] = probe
	} else {
		next = append(next, probe)
	}
	if err := auth.ValidateUsers(next); err != nil {
		return err
	}

	var token string
	if c.opts.generate {
		token, u.PasswordHash, err = auth.GenerateToken()
	} else {
		var pw []byte
		if pw, err = readPassword(c.stdin, c.stderr); err == nil {
			u.PasswordHash, err = auth.HashPassword(pw, c.opts.cost)
		}
	}
	if err != nil {
		return err
	}
	if i >= 0 {
		next[i] = u
	} else {
		next[len(next)-1] = u
	}
	if err := auth.WriteUsers(path, next); err != nil {
		return err
	}
	if i >= 0 {
		fmt.Fprintf(c.stdout, "replaced user %s in %s: was %s, now %s, with the new password\n", name, path, users[i].Where(), u.Where())
	} else {
		fmt.Fprintf(c.stdout, "added user %s (%s) to %s\n", name, u.Where(), path)
	}
	fmt.Fprintln(c.stdout, "send the broker SIGHUP to apply it")
	if token != "" {
		fmt.Fprintf(c.stdout, "the generated password, shown only now (give it to the client; the file keeps only its hash):\npassword: %s\n", token)
	}
	return nil
}

// placeholderHash is a well-formed bcrypt hash of nothing anyone types, used
// only to validate a list before the real hash exists.
const placeholderHash = "$2a$10$" + "......................" + "..............................."

// checkAdd checks the command line of add, naming the flags.
func (c *cmd) checkAdd(u auth.User) error {
	var errs []error
	if err := wire.ValidateName("user name", u.Name); err != nil {
		errs = append(errs, err)
	}
	switch u.Role {
	case "":
		errs = append(errs, errors.New("--role is required: bridge, reader, homeassistant or admin"))
	case auth.RoleBridge:
		if u.Site == "" || u.Node == "" {
			errs = append(errs, errors.New("--role bridge needs --site and --node: the node this bridge publishes for"))
		}
	case auth.RoleReader, auth.RoleHomeAssistant, auth.RoleAdmin:
		if u.Site != "" || u.Node != "" {
			errs = append(errs, fmt.Errorf("--site and --node are for --role bridge only, not %s", u.Role))
		}
	default:
		errs = append(errs, fmt.Errorf("--role %q: want bridge, reader, homeassistant or admin", u.Role))
	}
	for _, p := range []struct{ what, v string }{{"--site", u.Site}, {"--node", u.Node}} {
		if p.v != "" {
			if err := wire.ValidateName(p.what, p.v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.opts.cost < minCost || c.opts.cost > maxCost {
		errs = append(errs, fmt.Errorf("--cost %d: want %d to %d (each step doubles the time a connection's check takes)", c.opts.cost, minCost, maxCost))
	}
	return errors.Join(errs...)
}

func (c *cmd) del(path, name string) error {
	users, err := read(path, false)
	if err != nil {
		return err
	}
	i := index(users, name)
	if i < 0 {
		return fmt.Errorf("no user %s in %s", name, path)
	}
	gone := users[i]
	users = append(users[:i], users[i+1:]...)
	if err := auth.WriteUsers(path, users); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted user %s (%s) from %s\nsend the broker SIGHUP to apply it\n", name, gone.Where(), path)
	return nil
}

// list prints name, role, site and node; never a hash.
func (c *cmd) list(path, _ string) error {
	users, err := read(path, false)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tROLE\tSITE\tNODE")
	for _, u := range users {
		site, node := u.Site, u.Node
		if u.Role != auth.RoleBridge {
			site, node = "-", "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.Name, u.Role, site, node)
	}
	return w.Flush()
}

func index(users []auth.User, name string) int {
	for i, u := range users {
		if u.Name == name {
			return i
		}
	}
	return -1
}

// readPassword asks for the password twice on the terminal without echo when
// stdin is one, and otherwise reads the first line of stdin (without its line
// ending).
func readPassword(stdin io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(prompt, "Password: ")
		first, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(prompt, "Password again: ")
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(first, again) {
			return nil, errors.New("the two passwords differ; nothing was changed")
		}
		return checkPassword(first)
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password from standard input: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	return checkPassword([]byte(line))
}

func checkPassword(pw []byte) ([]byte, error) {
	switch {
	case len(pw) == 0:
		return nil, errors.New("the password is empty (it is read from the terminal, or from the first line of standard input)")
	case len(pw) > auth.MaxPasswordLen:
		return nil, fmt.Errorf("the password is %d bytes long; bcrypt takes at most %d", len(pw), auth.MaxPasswordLen)
	}
	return pw, nil
}
