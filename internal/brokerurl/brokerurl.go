// Package brokerurl reads the MQTT broker URLs the farm's clients (the bridge,
// the archive) take with --broker, and makes the client side of a TLS one, so
// that both accept the same schemes and check a broker's certificate alike.
package brokerurl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// schemes are the broker URL schemes the clients accept, each with whether it
// asks for TLS. paho also dials "mqtt+ssl" and "tcps", and websockets; the
// clients keep to the names the farm's documents use.
var schemes = map[string]bool{"tcp": false, "mqtt": false, "mqtts": true, "ssl": true, "tls": true}

// ParseBrokers reads a comma-separated failover list of broker URLs, each
// scheme://host:port. The list is tried in order on every connection, so the
// first is the preferred broker. Every URL shares one set of credentials and
// TLS settings, so the list must be all TLS or all plain: a plain URL among
// TLS ones would send the password in clear on a failover.
func ParseList(list string) ([]*url.URL, error) {
	var urls []*url.URL
	var errs []error
	seen := map[string]bool{}
	for raw := range strings.SplitSeq(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			errs = append(errs, fmt.Errorf("%q: an empty URL in the list (want scheme://host:port[,scheme://host:port...])", list))
			continue
		}
		u, err := Parse(raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[u.Host] {
			errs = append(errs, fmt.Errorf("%q: %s is listed twice", list, u.Host))
			continue
		}
		seen[u.Host] = true
		urls = append(urls, u)
	}
	if len(errs) == 0 && len(urls) > 1 {
		tlsURLs := 0
		for _, u := range urls {
			if IsTLS(u) {
				tlsURLs++
			}
		}
		if tlsURLs != 0 && tlsURLs != len(urls) {
			errs = append(errs, fmt.Errorf("%q mixes TLS and plain URLs: the brokers share one password, which a failover to a plain one would send in clear", list))
		}
	}
	return urls, errors.Join(errs...)
}

// Parse reads one broker URL: scheme://host:port and nothing else.
func Parse(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	if _, ok := schemes[u.Scheme]; !ok {
		return nil, fmt.Errorf("%q: scheme %q is not supported: use tcp:// or mqtt://, or mqtts:// for TLS", raw, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%q: want scheme://host:port", raw)
	}
	if u.Path != "" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q: want scheme://host:port and nothing else (the user name is --username)", raw)
	}
	return u, nil
}

// IsTLS reports whether a broker URL asks for TLS.
func IsTLS(u *url.URL) bool { return schemes[u.Scheme] }

// TLSConfig is the client side of a TLS broker URL: TLS 1.2 at least, the
// broker's certificate checked against cas (nil: the system's roots) and
// against the URL's host, which is set as ServerName so that the check holds
// also when paho dials through a proxy. nil for a plain URL.
func TLSConfig(u *url.URL, cas *x509.CertPool) *tls.Config {
	if !IsTLS(u) {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), RootCAs: cas}
}
