package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"time"
)

// Durability is what the broker does so that nothing it acknowledged is lost
// (the README's "What the broker promises"). A Config built in code may leave
// any field zero: each zero takes its default (DefaultDurability).
type Durability struct {
	// HoldTimeout bounds how long a publish is held back while a persistent
	// session it goes to is full; past it, its publisher is disconnected
	// without a PUBACK and sends it again after reconnecting. Below the
	// bridge's 10 s acknowledgement timeout.
	HoldTimeout time.Duration
	// HoldOffline is how long after its client went away a persistent
	// session still holds publishers back when full. Past it, messages for
	// it that find it full are dropped (and counted), so that an abandoned
	// session does not stop the farm.
	HoldOffline time.Duration
	// SessionExpiry is the longest a persistent session is kept while its
	// client is away (MQTT 5 clients may ask for less).
	SessionExpiry time.Duration
	// StoreMinFree is the free space the store's volume keeps, in bytes:
	// below it the broker refuses publishes it would have to store rather
	// than fail on a full disk.
	StoreMinFree uint64
	// Stock turns off the hold, the journal and the store's split of writes:
	// mochi's own delivery, every store write fsynced. For comparisons only.
	Stock bool
}

// DefaultDurability is the production setting.
func DefaultDurability() Durability {
	return Durability{
		HoldTimeout:   5 * time.Second,
		HoldOffline:   10 * time.Minute,
		SessionExpiry: 7 * 24 * time.Hour,
		StoreMinFree:  32 << 20,
	}
}

// WithDefaults returns d with each zero replaced by its default.
func (d Durability) WithDefaults() Durability {
	def := DefaultDurability()
	d.HoldTimeout = cmp.Or(d.HoldTimeout, def.HoldTimeout)
	d.HoldOffline = cmp.Or(d.HoldOffline, def.HoldOffline)
	d.SessionExpiry = cmp.Or(d.SessionExpiry, def.SessionExpiry)
	d.StoreMinFree = cmp.Or(d.StoreMinFree, def.StoreMinFree)
	return d
}

func (d *Durability) addFlags(fs *flag.FlagSet) {
	*d = DefaultDurability()
	fs.DurationVar(&d.HoldTimeout, "hold-timeout", d.HoldTimeout, "longest a publish is held back while a persistent session it goes to is full, a `duration`; then its publisher is disconnected without a PUBACK")
	fs.DurationVar(&d.HoldOffline, "hold-offline", d.HoldOffline, "how long after its client left a full persistent session still holds publishers back, a `duration`; past it, messages for it are dropped")
	fs.DurationVar(&d.SessionExpiry, "session-expiry", d.SessionExpiry, "longest a persistent session is kept while its client is away, a `duration` in whole seconds")
	fs.Var(uintFlag[uint64]{&d.StoreMinFree, 1 << 20, 1 << 50}, "store-min-free", "free `bytes` the store's volume keeps; below it publishes that need storing are refused without a PUBACK")
	fs.BoolVar(&d.Stock, "stock-delivery", false, "mochi's own delivery: no hold, no journal, every store write fsynced (loses acknowledged messages; for comparisons only)")
}

func (d Durability) validate() error {
	var errs []error
	if t := d.HoldTimeout; t < 100*time.Millisecond || t > time.Minute {
		errs = append(errs, fmt.Errorf("--hold-timeout %s: want 100ms to 1m, below the bridges' acknowledgement timeout (10s)", t))
	}
	if t := d.HoldOffline; t < 0 || t > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("--hold-offline %s: want 0 to 168h", t))
	}
	if t := d.SessionExpiry; t < time.Second || t%time.Second != 0 || t > 4294967295*time.Second {
		errs = append(errs, fmt.Errorf("--session-expiry %s: want whole seconds from 1s to 136 years", t))
	}
	return errors.Join(errs...)
}
