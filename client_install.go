package metalbond

import (
	"context"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/route"
)

type installOp struct {
	add    bool
	synced bool // call SyncNotifier.Synced instead of changing a route
	r      route.Route
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

// installLoop calls the Installer, one change at a time, in order.
func (c *Client) installLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.installWake:
		}
		c.mu.Lock()
		ops := c.installQ
		c.installQ = nil
		c.mu.Unlock()
		for _, op := range ops {
			var err error
			if op.synced {
				if n, ok := c.cfg.Installer.(SyncNotifier); ok {
					n.Synced()
				}
				continue
			}
			if op.add {
				err = c.cfg.Installer.AddRoute(op.r)
				c.stats.installed.Add(1)
			} else {
				err = c.cfg.Installer.RemoveRoute(op.r)
				c.stats.installed.Add(-1)
			}
			if err != nil {
				c.stats.installErrors.Add(1)
				c.log.Error("route installer failed", "add", op.add, "route", op.r.String(), "err", err)
			}
		}
	}
}
