// Package load is the MQTT load generator of the benchmarks: publishers and
// subscribers on paho.mqtt.golang, payloads stamped with their intended send
// time, latencies kept in a bounded histogram, an open-loop fixed-rate mode
// and a closed-loop mode. It connects to loopback addresses only.
package load

import (
	"fmt"
	"math/bits"
	"time"
)

// Histogram counts durations in log-linear buckets, as HdrHistogram does:
// values below 2^subBits are exact, above it every power of two is split in
// 2^(subBits-1) buckets, so a value is reported within 1/128 (0.8 %) of what
// was recorded, whatever its size, in a fixed 60 KiB. The zero value is
// ready to use; it is not safe for concurrent use.
type Histogram struct {
	counts [buckets]uint64
	n      uint64
	min    time.Duration
	max    time.Duration
	sum    time.Duration
}

const (
	subBits = 8
	subHalf = 1 << (subBits - 1)
	// buckets: the exact ones, then subHalf per power of two up to 2^63.
	buckets = 1<<subBits + (64-subBits)*subHalf
)

// bucketOf returns the bucket that holds v (v >= 0).
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // >= 1
	return 1<<subBits + (shift-1)*subHalf + int(v>>shift) - subHalf
}

// highest returns the largest value that falls in bucket i, which is what a
// quantile reports: never less than what was recorded.
func highest(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	j := i - 1<<subBits
	shift := j/subHalf + 1
	mant := uint64(j%subHalf + subHalf)
	return (mant+1)<<shift - 1
}

// Record adds one duration; a negative one (a clock step) counts as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is how many values were recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest value recorded, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean is the average of the values recorded, exactly.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the value below or at which a fraction q of the recorded
// values lie (the nearest-rank definition), to the histogram's precision and
// never above Max. q is clamped to [0, 1]; an empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q > 1 {
		q = 1
	}
	rank := uint64(q*float64(h.n) + 0.999999999) // ceil without float noise at exact ranks
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(highest(i))
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return v
		}
	}
	return h.max
}

// String is a one-line summary for logs.
func (h *Histogram) String() string {
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", h.n, h.Quantile(0.5), h.Quantile(0.99), h.max)
}
