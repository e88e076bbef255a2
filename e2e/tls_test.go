package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/internal/testpki"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	ca   *testpki.CA
	cert *x509.Certificate
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca, err := testpki.NewCA(name)
	require.NoError(t, err)
	return &testCA{ca: ca, cert: ca.Cert, pem: ca.PEM}
}

// issue makes a server certificate for names (DNS names or IP literals) and
// returns its PEM and its key's PEM.
func (ca *testCA) issue(t *testing.T, serial int64, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.ca.Issue(serial, names...)
	require.NoError(t, err)
	return certPEM, keyPEM
}

// writeAtomic replaces a file as cert-manager's secret volume does: the new
// content appears at once, never half written.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, b, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// peerSerial makes a fresh TLS connection and returns the serial number of
// the certificate the broker presents.
func peerSerial(t *testing.T, addr string, roots *x509.CertPool) (int64, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// startTLSBroker runs our broker with --users and a TLS listener on a free
// loopback port, and returns the TLS port.
func startTLSBroker(t *testing.T, users, cert, key string, extra ...string) (*process, string) {
	t.Helper()
	args := append([]string{filepath.Join(bin, "broker"), "--listen", "127.0.0.1:0", "--users", users, "--data", t.TempDir(),
		"--ops-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key}, extra...)
	p := start(t, "broker", args...)
	m := p.waitLog(`msg="tls listening" addr=127\.0\.0\.1:(\d+)`, 15*time.Second)
	p.waitLog(`msg=listening `, 5*time.Second)
	return p, m[1]
}

// TestTLSEndToEnd: mosquitto_sub and the real bridge over TLS with their own
// passwords; a client that trusts another CA, or that connects by a name the
// certificate does not carry, is refused.
func TestTLSEndToEnd(t *testing.T) {
	need(t, "mosquitto_sub")
	dir := t.TempDir()
	ca := newCA(t, "sensorfarm test CA")
	other := newCA(t, "some other CA")
	certPEM, keyPEM := ca.issue(t, 100, "localhost") // no IP: 127.0.0.1 must not match
	caFile, otherFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other-ca.pem")
	cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for f, b := range map[string][]byte{caFile: ca.pem, otherFile: other.pem, cert: certPEM, key: keyPEM} {
		require.NoError(t, os.WriteFile(f, b, 0o600))
	}
	users := filepath.Join(dir, "users.yaml")
	userAdd(t, users, grafana)
	userAdd(t, users, node1)
	_, port := startTLSBroker(t, users, cert, key)

	sub := subscribe(t, net.JoinHostPort("localhost", port), "--cafile", caFile, "-u", grafana.name, "-P", grafana.password,
		"-i", grafana.clientID(), "-t", "sensorfarm/#")

	pwFile := filepath.Join(dir, "node1.pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(node1.password+"\n"), 0o600))
	start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, "unused:1", node1.site, node1.node, "--sim", "--gps=false",
		"--broker", "mqtts://localhost:"+port, "--ca-file", caFile, "--username", node1.name, "--password-file", pwFile)...)...)
	m := sub.next("sensorfarm/farm1/node1/env", 20*time.Second)
	require.Contains(t, m.Payload, `"node":"node1"`)

	refused := func(desc string, args ...string) {
		t.Helper()
		argv := append([]string{"mosquitto_sub", "-p", port, "-u", grafana.name, "-P", grafana.password, "-t", "sensorfarm/#", "-E", "-W", "5"}, args...)
		code, out := runOnce(t, nil, argv...)
		require.NotEqual(t, 0, code, "%s: mosquitto_sub connected: %s", desc, out)
		require.NotContains(t, out, "Subscribed", desc)
		t.Logf("%s: refused: %s", desc, strings.TrimSpace(out))
	}
	refused("a CA that did not sign the certificate", "-h", "localhost", "--cafile", otherFile)
	refused("a host the certificate does not name", "-h", "127.0.0.1", "--cafile", caFile)

	// Go's TLS client agrees on both.
	_, err := peerSerial(t, "127.0.0.1:"+port, x509.NewCertPool())
	require.ErrorContains(t, err, "certificate signed by unknown authority")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	d := &net.Dialer{Timeout: 5 * time.Second}
	_, err = tls.DialWithDialer(d, "tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	require.ErrorContains(t, err, "doesn't contain any IP SANs")
	// TLS 1.1 is refused.
	_, err = tls.DialWithDialer(d, "tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	require.Error(t, err)
}

// TestTLSCertificateRotation replaces the certificate and key files while the
// broker runs: a broken pair is logged and the old one kept; a good one (from
// another CA, as a CA rotation would bring) is served to the next connection,
// without a restart; connected clients stay connected.
func TestTLSCertificateRotation(t *testing.T) {
	need(t, "mosquitto_sub")
	dir := t.TempDir()
	ca, ca2 := newCA(t, "sensorfarm test CA"), newCA(t, "sensorfarm test CA 2")
	certPEM, keyPEM := ca.issue(t, 100, "localhost")
	cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
	require.NoError(t, os.WriteFile(cert, certPEM, 0o600))
	require.NoError(t, os.WriteFile(key, keyPEM, 0o600))
	users := filepath.Join(dir, "users.yaml")
	userAdd(t, users, grafana)
	broker, port := startTLSBroker(t, users, cert, key)
	addr := "127.0.0.1:" + port
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	roots.AddCert(ca2.cert)

	serial, err := peerSerial(t, addr, roots)
	require.NoError(t, err)
	require.EqualValues(t, 100, serial)
	sub := subscribe(t, net.JoinHostPort("localhost", port), "--cafile", caFile, "-u", grafana.name, "-P", grafana.password,
		"-i", grafana.clientID(), "-t", "sensorfarm/#")

	// A key that does not match the certificate: the old pair stays.
	_, strayKey := ca.issue(t, 150, "localhost")
	writeAtomic(t, key, strayKey)
	// The files are looked at on a handshake, at most once a second.
	require.Eventually(t, func() bool {
		s, err := peerSerial(t, addr, roots)
		require.NoError(t, err)
		require.EqualValues(t, 100, s)
		return strings.Contains(broker.out.String(), `msg="TLS certificate not reloaded; the previous one stays in service"`)
	}, 10*time.Second, 200*time.Millisecond, "the broken pair was not noticed")
	require.Equal(t, 1, strings.Count(broker.out.String(), "TLS certificate not reloaded"), "a broken pair is logged once")

	// The renewed pair, signed by the new CA.
	t0 := time.Now()
	certPEM, keyPEM = ca2.issue(t, 200, "localhost")
	writeAtomic(t, cert, certPEM)
	writeAtomic(t, key, keyPEM)
	require.Eventually(t, func() bool {
		s, err := peerSerial(t, addr, roots)
		return err == nil && s == 200
	}, 10*time.Second, 100*time.Millisecond, "the new certificate is not served")
	t.Logf("new certificate served %s after the files changed", time.Since(t0).Round(time.Millisecond))
	broker.waitLog(`msg="TLS certificate reloaded" .*serial=200`, time.Second)
	require.True(t, broker.running())
	require.True(t, sub.running(), "the subscriber connected before the rotation was dropped")
}
