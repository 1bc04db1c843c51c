//go:build linux

package kernel

// Run: the worker loop that applies changes, retries and reconciles.

import (
	"context"
	"errors"
	"time"
)

// Run applies changes to the kernel until ctx is done or Close is called,
// then returns nil. Besides changes it reacts to the retry timer, to the
// reconciliation period and to state changes of the device. Only one Run
// may be active at a time.
func (i *Installer) Run(ctx context.Context) error {
	i.mu.Lock()
	switch {
	case i.closed:
		i.mu.Unlock()
		return ErrClosed
	case i.running:
		i.mu.Unlock()
		return errors.New("kernel: Run is already running")
	}
	i.running = true
	i.runWG.Add(1)
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		i.running = false
		i.mu.Unlock()
		i.runWG.Done()
	}()

	links, stopLinks := i.subscribeLinks()
	defer stopLinks()

	var tick <-chan time.Time
	if d := i.cfg.ReconcileInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	var grace <-chan time.Time
	i.mu.Lock()
	adopting, until := i.adopting, i.adoptUntil
	i.mu.Unlock()
	if adopting {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		grace = t.C
	}
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()

	stopped := func() bool {
		select {
		case <-ctx.Done():
			return true
		case <-i.closing:
			return true
		default:
			return false
		}
	}
	reconcile := true // once at start: covers what happened since New
	for {
		i.ioMu.Lock()
		if reconcile {
			i.reconcile()
			reconcile = false
		}
		i.promoteDue(time.Now())
		for more := true; more && !stopped(); {
			more = i.applyRound()
		}
		if !i.minDue.IsZero() {
			retryTimer.Reset(time.Until(i.minDue))
		}
		i.ioMu.Unlock()

		select {
		case <-ctx.Done():
			return nil
		case <-i.closing:
			return nil
		case <-i.kick:
		case <-retryTimer.C:
		case <-tick:
			reconcile = true
		case <-grace:
			grace = nil
			i.endAdoption("grace time expired")
		case u, ok := <-links:
			if !ok {
				links = nil
				i.log.Warn("device events stopped; relying on periodic reconciliation", "device", i.cfg.Device)
				continue
			}
			if i.linkEvent(u) {
				settle.Reset(linkSettle)
			}
		case <-settle.C:
			i.ioMu.Lock()
			i.resetBackoff()
			i.ioMu.Unlock()
			reconcile = true
		}
	}
}
