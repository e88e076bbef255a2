package usercmd

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/wire"
)

// formatNATS is --format nats: the users and the contract's ACL for
// nats-server's MQTT listener (nats/README.md).
const formatNATS = "nats"

// natsUsersFile is what --format nats writes in --out: an authorization block
// that nats-server's configuration includes (nats/k8s/nats.conf does).
const natsUsersFile = "users.conf"

func (o exportOptions) checkNATS() error {
	var errs []error
	if o.passwords != "" {
		errs = append(errs, errors.New("--passwords is for mosquitto: nats-server checks the users file's bcrypt hashes itself"))
	}
	if o.out == "" {
		errs = append(errs, errors.New("--out DIR is required"))
	}
	if err := wire.ValidateName("--prefix", o.prefix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// exportNATS writes the users in path as nats-server's authorization block.
func (c *cmd) exportNATS(path string) error {
	o := c.exp
	if err := o.checkNATS(); err != nil {
		return usageErr{err}
	}
	users, policy, err := readPolicy(path, o.prefix)
	if err != nil {
		return err
	}
	conf, err := natsAuthorization(policy, users)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dir, err := outDir(o.out)
	if err != nil {
		return err
	}
	file := filepath.Join(dir, natsUsersFile)
	if err := writeFileAtomic(file, conf, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %d users and their permissions to %s (include it in nats-server's configuration)\n", len(users), file)
	return nil
}

// natsAuthorization is nats-server's authorization block for users: each
// user's bcrypt hash as it is (nats-server checks "$2a$", "$2b$" and "$2y$"
// hashes with the same golang.org/x/crypto/bcrypt our broker uses), and the
// role's grants (auth.Policy.Grants, the broker's own table) as subject
// permissions.
//
// What nats-server's MQTT layer needs beyond the grants, read in its v2.15.2
// source and checked by e2e/nats_test.go: nothing. The JetStream API calls
// behind sessions, retained messages and QoS 1 are made by the account's
// internal client, not with the user's permissions, and an MQTT client may
// always subscribe to its own delivery subjects ($MQTT.sub.<nuid>,
// $MQTT.deliver.pubrel.*; client.go, canSubscribeInternal). So no user gets
// $MQTT.> or $JS.API.>: either would let a NATS-protocol client read every
// stored message. Every role but admin is limited to MQTT connections for the
// same reason.
//
// $SYS/# is left out of the readers' grants: on nats-server it is not the
// broker's statistics but the system account's subjects; its statistics are
// the monitoring port's (/varz).
func natsAuthorization(p *auth.Policy, users []auth.User) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`# nats-server authorization written by "broker user export --format nats" from
# the broker's users file and ACL. Where nats-server differs from our broker
# (nats/README.md):
#   - a bridge user may take any client ID (our broker: only bridge:<site>:<node>),
#     so a leaked bridge password can take over another node's session;
#   - a will on a topic the user may not publish is accepted and never sent;
#   - a subscription is refused when one of its subjects is not allowed.
authorization {
  users: [
`)
	var tokens []string
	for _, u := range users {
		if auth.IsTokenHash(u.PasswordHash) {
			tokens = append(tokens, u.Name)
		}
	}
	if len(tokens) > 0 {
		// nats-server takes any other string as a plain-text password: the
		// hash itself would log in, and the token would not.
		return nil, fmt.Errorf("users %s have generated tokens (broker user add --generate), which nats-server cannot check: it checks bcrypt hashes only; give them passwords with broker user add (no --generate)", strings.Join(tokens, ", "))
	}
	for _, u := range users {
		g := p.Grants(u)
		fmt.Fprintf(&b, "    # %s\n    {\n      user: %s\n      password: %s\n", u.Where(), strconv.Quote(u.Name), strconv.Quote(u.PasswordHash))
		if g.All {
			b.WriteString("    }\n")
			continue
		}
		pub, err := natsSubjects(g.Write)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.Name, err)
		}
		sub, err := natsSubjects(g.Read)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.Name, err)
		}
		b.WriteString("      allowed_connection_types: [\"MQTT\"]\n      permissions: {\n")
		fmt.Fprintf(&b, "        publish: %s\n        subscribe: %s\n      }\n    }\n", natsPermission(pub), natsPermission(sub))
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes(), nil
}

// natsPermission is an allow list, or a deny of everything when there is
// nothing to allow: nats-server allows everything when a direction has no
// permission at all.
func natsPermission(subjects []string) string {
	if len(subjects) == 0 {
		return `{ deny: [">"] }`
	}
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return "{ allow: [" + strings.Join(q, ", ") + "] }"
}

// natsSubjects maps MQTT topic filters to the NATS subjects nats-server's MQTT
// layer uses for them: '/' separates tokens as '.' does, '+' is '*', and a
// trailing '#' is both its parent and the parent's '>' (a/# matches a in MQTT,
// so nats-server subscribes to both). Filters on $-topics are left out (see
// natsAuthorization). A level with a character the mapping changes ('.', ' ',
// '*', '>') or an empty level is refused; wire's names never have one.
func natsSubjects(filters []string) ([]string, error) {
	var out []string
	for _, f := range filters {
		if strings.HasPrefix(f, "$") {
			continue
		}
		levels := strings.Split(f, "/")
		for i, l := range levels {
			switch {
			case l == "+":
				levels[i] = "*"
			case l == "#" && i == len(levels)-1:
			case l == "" || strings.ContainsAny(l, ". *>#+"):
				return nil, fmt.Errorf("topic filter %q: level %q has no plain NATS subject", f, l)
			}
		}
		if levels[len(levels)-1] != "#" {
			out = append(out, strings.Join(levels, "."))
			continue
		}
		if parent := levels[:len(levels)-1]; len(parent) > 0 {
			out = append(out, strings.Join(parent, "."), strings.Join(parent, ".")+".>")
		} else {
			out = append(out, ">")
		}
	}
	return out, nil
}
