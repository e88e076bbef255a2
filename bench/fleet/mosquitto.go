package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ExportMosquitto writes mosquitto's password file and ACL for u into
// dir/mosquitto with the real `broker user export` (broker is our binary,
// usersFile what NewUsers wrote), so that mosquitto runs with the same users
// and rules as our broker. It returns the path of the mosquitto.conf lines
// that apply them. iterations is PBKDF2's; 0 keeps the export's default.
func (u *Users) ExportMosquitto(ctx context.Context, broker, usersFile, dir string, iterations int) (string, error) {
	var pw strings.Builder
	for _, c := range append(append([]Cred(nil), u.Bridges...), u.Reader) {
		fmt.Fprintf(&pw, "%s:%s\n", c.Name, c.Password)
	}
	pwFile := filepath.Join(dir, "passwords")
	if err := os.WriteFile(pwFile, []byte(pw.String()), 0o600); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "mosquitto")
	args := []string{"user", "export", "--format", "mosquitto", "--users", usersFile, "--passwords", pwFile, "--out", out}
	if iterations > 0 {
		args = append(args, "--iterations", strconv.Itoa(iterations))
	}
	if b, err := exec.CommandContext(ctx, broker, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("broker user export: %w: %s", err, b)
	}
	return filepath.Join(out, "mosquitto.conf"), nil
}
