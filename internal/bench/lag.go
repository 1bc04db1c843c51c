package bench

import (
	"slices"
	"sync"
	"time"
)

// lagRecorder collects delivery delays (time from the announcer's write to
// a subscriber's read) up to a fixed number of samples.
//
// A lagRecorder is safe for concurrent use.
type lagRecorder struct {
	mu      sync.Mutex
	samples []time.Duration
	limit   int
}

func newLagRecorder(limit int) *lagRecorder {
	return &lagRecorder{limit: limit}
}

func (r *lagRecorder) add(d time.Duration) {
	r.mu.Lock()
	if len(r.samples) < r.limit {
		r.samples = append(r.samples, d)
	}
	r.mu.Unlock()
}

// quantiles returns the given quantiles (0..1) of the samples, and false if
// there are none.
func (r *lagRecorder) quantiles(qs ...float64) ([]time.Duration, bool) {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	if len(s) == 0 {
		return nil, false
	}
	slices.Sort(s)
	out := make([]time.Duration, len(qs))
	for i, q := range qs {
		out[i] = s[min(len(s)-1, int(q*float64(len(s))))]
	}
	return out, true
}
