package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Operations of StoreErrors.StoreError. Any other value counts as StoreOpOther,
// so that the label's values stay few and known.
const (
	StoreOpOpen       = "open"       // opening the database
	StoreOpRead       = "read"       // reading state back at start
	StoreOpWrite      = "write"      // saving a retained message, session, subscription or in-flight message
	StoreOpDelete     = "delete"     // deleting one
	StoreOpBackground = "background" // a flush or compaction (pebble's BackgroundError)
	StoreOpClose      = "close"      // closing the database
	StoreOpOther      = "other"
)

var storeOps = [...]string{StoreOpOpen, StoreOpRead, StoreOpWrite, StoreOpDelete, StoreOpBackground, StoreOpClose, StoreOpOther}

// StoreErrors is what the store reports its failures through.
type StoreErrors interface {
	// StoreError counts one failure of op, one of the StoreOp constants.
	StoreError(op string)
}

// StoreErrorCounter counts store failures per operation; it is a StoreErrors
// and a Collector. The zero value is ready to use and safe for concurrent use.
type StoreErrorCounter struct {
	n [len(storeOps)]atomic.Uint64
}

var _ StoreErrors = (*StoreErrorCounter)(nil)

// NewStoreErrorCounter returns a counter at zero.
func NewStoreErrorCounter() *StoreErrorCounter { return new(StoreErrorCounter) }

// StoreError implements StoreErrors.
func (c *StoreErrorCounter) StoreError(op string) {
	for i, o := range storeOps {
		if o == op {
			c.n[i].Add(1)
			return
		}
	}
	c.n[len(storeOps)-1].Add(1)
}

var storeErrorsDesc = prometheus.NewDesc(fqName("store_errors_total"),
	"Failures of the persistent store, by operation.", []string{"op"}, nil)

// Describe implements the descriptors check of NewRegistry.
func (c *StoreErrorCounter) Describe(ch chan<- *prometheus.Desc) { ch <- storeErrorsDesc }

// Update implements Collector. Every operation is sent, at zero too, so that
// rate() sees the first error.
func (c *StoreErrorCounter) Update(ch chan<- prometheus.Metric) error {
	for i, op := range storeOps {
		ch <- prometheus.MustNewConstMetric(storeErrorsDesc, prometheus.CounterValue, float64(c.n[i].Load()), op)
	}
	return nil
}
