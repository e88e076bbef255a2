// Package tlsconf builds the broker's TLS settings: a server certificate that
// is reread when its files change (cert-manager rotates them in place on
// Kubernetes), TLS 1.2 at least, and optionally client certificates checked
// against a CA of our own.
package tlsconf

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/internal/pemca"
)

// Options say where the PEM files are.
type Options struct {
	CertFile string // server certificate chain, leaf first
	KeyFile  string // its private key
	// ClientCAFile, when set, makes every TLS client present a certificate
	// signed by one of these CAs. It adds to the password check, never
	// replaces it: the users file still decides who may connect.
	ClientCAFile string
	Log          *slog.Logger
}

// Config returns a server tls.Config whose certificate is reloaded by rl. It
// fails when the files cannot be read or do not form a pair, naming the flag.
func Config(o Options) (*tls.Config, *Reloader, error) {
	rl, err := NewReloader(o.CertFile, o.KeyFile, o.Log)
	if err != nil {
		return nil, nil, err
	}
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: rl.GetCertificate,
	}
	if o.ClientCAFile != "" {
		pool, err := pemca.Load(o.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, rl, nil
}

// fileState is what tells a rewritten file from the one loaded.
type fileState struct {
	mtime time.Time
	size  int64
}

func stat(file string) (fileState, error) {
	fi, err := os.Stat(file) // follows the symlinks of a Kubernetes secret volume
	if err != nil {
		return fileState{}, err
	}
	return fileState{fi.ModTime(), fi.Size()}, nil
}

// Reloader serves the certificate pair and rereads it when either file's
// modification time or size changes. The check is a stat of both files, at
// most once per CheckEvery, on a handshake. A pair that cannot be loaded
// (half written, mismatched, unreadable) leaves the previous one in service;
// the failure is logged once per state of the files, and the next change is
// tried again.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	// CheckEvery bounds how often the files are looked at.
	CheckEvery time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	loaded    [2]fileState // the files' state when cert was loaded
	failed    string       // the last failure logged, so each is logged once
	lastCheck time.Time
}

// DefaultCheckEvery is cheap (two stats) and short against cert-manager's
// renewal, which happens days before the old certificate expires.
const DefaultCheckEvery = time.Second

// NewReloader loads the pair once; an error names the flags.
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rl := &Reloader{certFile: certFile, keyFile: keyFile, log: log, CheckEvery: DefaultCheckEvery}
	st, err := rl.states()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
	}
	rl.cert, rl.loaded, rl.lastCheck = &cert, st, time.Now()
	return rl, nil
}

func (rl *Reloader) states() ([2]fileState, error) {
	c, err := stat(rl.certFile)
	if err != nil {
		return [2]fileState{}, fmt.Errorf("--tls-cert: %w", err)
	}
	k, err := stat(rl.keyFile)
	if err != nil {
		return [2]fileState{}, fmt.Errorf("--tls-key: %w", err)
	}
	return [2]fileState{c, k}, nil
}

// GetCertificate is the tls.Config hook: the current pair, reloaded first if
// its files changed.
func (rl *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if time.Since(rl.lastCheck) >= rl.CheckEvery {
		rl.lastCheck = time.Now()
		rl.reloadLocked()
	}
	return rl.cert, nil
}

// Check rereads the pair now if its files changed, and reports whether a new
// pair is in service.
func (rl *Reloader) Check() (bool, error) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.lastCheck = time.Now()
	return rl.reloadLocked()
}

func (rl *Reloader) reloadLocked() (bool, error) {
	st, err := rl.states()
	if err == nil && st == rl.loaded {
		return false, nil
	}
	if err == nil {
		var cert tls.Certificate
		cert, err = tls.LoadX509KeyPair(rl.certFile, rl.keyFile)
		if err == nil {
			rl.cert, rl.loaded, rl.failed = &cert, st, ""
			attrs := []any{"cert", rl.certFile}
			if leaf := cert.Leaf; leaf != nil {
				attrs = append(attrs, "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			rl.log.Info("TLS certificate reloaded", attrs...)
			return true, nil
		}
	}
	if key := fmt.Sprint(st, err); key != rl.failed {
		rl.failed = key
		rl.log.Error("TLS certificate not reloaded; the previous one stays in service", "cert", rl.certFile, "key", rl.keyFile, "err", err)
	}
	return false, err
}
