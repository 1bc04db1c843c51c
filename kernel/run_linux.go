//go:build linux

package kernel

// Run: the worker loop that applies changes, retries and reconciles.

import (
	"context"
	"errors"
	"time"

	"github.com/vishvananda/netlink"
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
	t := i.newRunTimers()
	defer t.stop()
	i.loop(ctx, t, links)
	return nil
}

// runTimers are the timers Run selects on; each channel is nil when
// unused.
type runTimers struct {
	tick   <-chan time.Time // periodic reconciliation
	grace  <-chan time.Time // end of adoption
	retry  *time.Timer      // the earliest retry
	settle *time.Timer      // a burst of link events has passed
	stops  []func() bool
}

func (i *Installer) newRunTimers() *runTimers {
	t := &runTimers{retry: time.NewTimer(time.Hour), settle: time.NewTimer(time.Hour)}
	t.retry.Stop()
	t.settle.Stop()
	t.stops = append(t.stops, t.retry.Stop, t.settle.Stop)
	if d := i.cfg.ReconcileInterval; d > 0 {
		tk := time.NewTicker(d)
		t.tick = tk.C
		t.stops = append(t.stops, func() bool { tk.Stop(); return true })
	}
	i.mu.Lock()
	adopting, until := i.adopting, i.adoptUntil
	i.mu.Unlock()
	if adopting {
		g := time.NewTimer(time.Until(until))
		t.grace = g.C
		t.stops = append(t.stops, g.Stop)
	}
	return t
}

func (t *runTimers) stop() {
	for _, f := range t.stops {
		f()
	}
}

// loop is Run's body: apply, then wait for the next reason to look again.
func (i *Installer) loop(ctx context.Context, t *runTimers, links <-chan netlink.LinkUpdate) {
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
			t.retry.Reset(time.Until(i.minDue))
		}
		i.ioMu.Unlock()

		select {
		case <-ctx.Done():
			return
		case <-i.closing:
			return
		case <-i.kick:
		case <-t.retry.C:
		case <-t.tick:
			reconcile = true
		case <-t.grace:
			t.grace = nil
			i.endAdoption("grace time expired")
		case u, ok := <-links:
			if !ok {
				links = nil
				i.log.Warn("device events stopped; relying on periodic reconciliation", "device", i.cfg.Device)
				continue
			}
			if i.linkEvent(u) {
				t.settle.Reset(linkSettle)
			}
		case <-t.settle.C:
			i.ioMu.Lock()
			i.resetBackoff()
			i.ioMu.Unlock()
			reconcile = true
		}
	}
}
