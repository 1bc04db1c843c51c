//go:build linux

package kernel

// The retry queue: prefixes the kernel refused, retried with backoff.

import (
	"math/rand/v2"
	"time"
)

type retryState struct {
	attempt int
	due     time.Time
	queued  bool // moved back to the dirty set, waiting for its round
	err     error
}

type refusal struct {
	k   key
	err error
}

// succeeded clears the retry state of k.
func (i *Installer) succeeded(k key) { delete(i.retry, k) }

// refuse schedules refused prefixes for a retry with backoff and reports
// them: one Warn line per batch, Debug per prefix.
func (i *Installer) refuse(rs []refusal) {
	if len(rs) == 0 {
		return
	}
	now := time.Now()
	for _, r := range rs {
		i.failures.Add(1)
		st := i.retry[r.k]
		if st == nil {
			st = &retryState{}
			i.retry[r.k] = st
		}
		st.attempt++
		st.queued = false
		st.err = r.err
		st.due = now.Add(backoff(st.attempt))
		if i.minDue.IsZero() || st.due.Before(i.minDue) {
			i.minDue = st.due
		}
		i.log.Debug("kernel refused route", "table", r.k.table, "prefix", r.k.prefix, "attempt", st.attempt, "err", r.err)
	}
	i.log.Warn("kernel refused routes; will retry", "count", len(rs), "table", rs[0].k.table,
		"prefix", rs[0].k.prefix, "err", rs[0].err)
}

// backoff returns the delay before retry number attempt, with ±10% jitter.
func backoff(attempt int) time.Duration {
	d := retryMin
	for n := 1; n < attempt && d < retryMax; n++ {
		d *= 2
	}
	d = min(d, retryMax)
	return d - d/10 + rand.N(d/5+1)
}

// promoteDue moves refused prefixes whose retry is due back into the dirty
// set. Called with ioMu held.
func (i *Installer) promoteDue(now time.Time) {
	if i.minDue.IsZero() || now.Before(i.minDue) {
		return
	}
	i.minDue = time.Time{}
	var due []key
	for k, st := range i.retry {
		if st.queued {
			continue
		}
		if st.due.After(now) {
			if i.minDue.IsZero() || st.due.Before(i.minDue) {
				i.minDue = st.due
			}
			continue
		}
		st.queued = true
		due = append(due, k)
	}
	if len(due) == 0 {
		return
	}
	i.retries.Add(uint64(len(due)))
	i.mu.Lock()
	for _, k := range due {
		i.want.dirty[k] = struct{}{}
	}
	i.mu.Unlock()
}

// resetBackoff makes every refused prefix due now (the device came back).
func (i *Installer) resetBackoff() {
	now := time.Now()
	for _, st := range i.retry {
		st.attempt = 0
		if !st.queued {
			st.due = now
			i.minDue = now
		}
	}
}
