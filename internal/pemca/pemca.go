// Package pemca reads the CA certificates both binaries trust: the broker's
// client CA and the bridge's --ca-file.
package pemca

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Load reads a PEM file of one or more CA certificates.
func Load(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
