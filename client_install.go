package metalbond

import (
	"context"
	"fmt"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/route"
)

type installOp struct {
	add    bool
	synced bool // call SyncNotifier.Synced instead of changing a route
	replay bool // AddRoute of a route already given (Replay): not counted
	// done, if set, makes the op a marker: it is closed once every op
	// before it has been applied.
	done chan struct{}
	r    route.Route
}

// Replay calls the Installer's AddRoute again for every route currently
// received in vni, for an installer that lost them (a VNI whose kernel
// table was recreated, say). Routes of VNIs not subscribed are not kept,
// so there are none to replay.
//
// The calls are made like every other Installer call: from the Client's
// one installer goroutine, never concurrently, and in order: when Replay
// returns they are queued behind every change already queued and ahead of
// every later one. Replay does not wait for them, so it may be called from
// inside an Installer method. The returned channel is closed when the
// Installer has returned from the last of them, or when Run ends first (the
// calls not made by then are dropped). Before Run they wait for Run. Replay
// fails for an invalid VNI, and with ErrClosed once Run has ended.
func (c *Client) Replay(vni route.VNI) (<-chan struct{}, error) {
	if !vni.Valid() {
		return nil, fmt.Errorf("%w: %d exceeds 24 bits", ErrInvalidVNI, vni)
	}
	done := make(chan struct{})
	c.mu.Lock()
	if c.installClosed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	for _, r := range c.recv.Routes(vni) {
		c.installQ = append(c.installQ, installOp{add: true, replay: true, r: r})
	}
	c.installQ = append(c.installQ, installOp{done: done})
	c.mu.Unlock()
	c.wakeInstaller()
	return done, nil
}

// dropSource withdraws every received route whose last holder was id.
func (c *Client) dropSource(id routetable.SourceID) {
	c.mu.Lock()
	n := 0
	c.recv.RemoveSource(id, func(r route.Route) {
		c.installQ = append(c.installQ, installOp{add: false, r: r})
		n++
	})
	c.mu.Unlock()
	if n > 0 {
		c.log.Info("withdrew routes of ended session", "session", id, "routes", n)
		c.wakeInstaller()
	}
}

func (c *Client) wakeInstaller() {
	select {
	case c.installWake <- struct{}{}:
	default:
	}
}

// installLoop calls the Installer, one change at a time, in order, until
// ctx is done; it then drops what is left and calls StopNotifier.Stopped.
func (c *Client) installLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			c.stopInstaller()
			return
		case <-c.installWake:
		}
		c.mu.Lock()
		ops := c.installQ
		c.installQ = nil
		c.mu.Unlock()
		for _, op := range ops {
			c.apply(op)
		}
	}
}

// apply makes the Installer call op asks for.
func (c *Client) apply(op installOp) {
	var err error
	switch {
	case op.done != nil:
		close(op.done)
		return
	case op.synced:
		if n, ok := c.cfg.Installer.(SyncNotifier); ok {
			n.Synced()
		}
		return
	case op.add:
		err = c.cfg.Installer.AddRoute(op.r)
		if !op.replay {
			c.stats.installed.Add(1)
		}
	default:
		err = c.cfg.Installer.RemoveRoute(op.r)
		c.stats.installed.Add(-1)
	}
	if err != nil {
		c.stats.installErrors.Add(1)
		c.log.Error("route installer failed", "add", op.add, "route", op.r.String(), "err", err)
	}
}

// stopInstaller drops the changes not yet applied (releasing Replay's
// waiters) and tells a StopNotifier.
func (c *Client) stopInstaller() {
	c.mu.Lock()
	c.installClosed = true
	ops := c.installQ
	c.installQ = nil
	c.mu.Unlock()
	for _, op := range ops {
		if op.done != nil {
			close(op.done)
		}
	}
	if n, ok := c.cfg.Installer.(StopNotifier); ok {
		if err := n.Stopped(); err != nil {
			c.log.Error("route installer failed to stop", "err", err)
		}
	}
}
