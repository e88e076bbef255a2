package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/require"
)

// A certificate the CA issues is a server certificate for its names that a
// client trusting the CA accepts, and one trusting another CA refuses.
func TestIssue(t *testing.T) {
	ca, err := NewCA("test CA")
	require.NoError(t, err)
	certPEM, keyPEM, err := ca.Issue(7, "localhost", "127.0.0.1")
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	require.EqualValues(t, 7, leaf.SerialNumber.Int64())

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.PEM))
	for _, name := range []string{"localhost", "127.0.0.1"} {
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, name)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "example.com"})
	require.Error(t, err, "a name it was not issued for")

	other, err := NewCA("other CA")
	require.NoError(t, err)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.Cert)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: otherRoots, DNSName: "localhost"})
	require.Error(t, err, "another CA's clients refuse it")

	_, _, err = ca.Issue(8)
	require.Error(t, err)
}
