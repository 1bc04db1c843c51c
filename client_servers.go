package metalbond

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
)

func newClientConn(addr string) *clientConn {
	cc := &clientConn{addr: addr, done: make(chan struct{})}
	cc.state.Store(uint32(session.StateConnecting))
	return cc
}

func checkServerAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("server address %q: %w", addr, err)
	}
	return nil
}

// AddServer adds the route server at addr (host:port) to the client. It
// fails if addr is malformed, if the server is already configured (in
// ClientConfig.Servers or by an earlier AddServer), or with ErrClosed once
// Run has ended.
//
// When AddServer returns, the server is listed by Peers and, if Run is
// running, a connection attempt has started (otherwise it starts with Run).
// Once the session is established the client sends it every subscription
// and announcement, as to the servers configured from the start.
func (c *Client) AddServer(addr string) error {
	if err := checkServerAddr(addr); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	if c.serverLocked(addr) >= 0 {
		return fmt.Errorf("server %q: already configured", addr)
	}
	cc := newClientConn(addr)
	c.conns = append(c.conns, cc)
	if c.running {
		c.startConnLocked(cc)
	}
	c.log.Info("server added", "peer", addr)
	return nil
}

// RemoveServer closes the session to the server at addr and forgets the
// server. It fails if addr is not configured.
//
// When RemoveServer returns, the session is closed, its goroutines have
// ended, and every route that only this server had delivered has been
// queued for removal from the Installer (no grace period applies: the
// server was removed on purpose). The Installer's RemoveRoute calls follow
// from its own goroutine, in order with every other change. Routes that
// other servers also delivered stay.
func (c *Client) RemoveServer(addr string) error {
	c.mu.Lock()
	i := c.serverLocked(addr)
	if i < 0 {
		c.mu.Unlock()
		return fmt.Errorf("server %q: not configured", addr)
	}
	cc := c.conns[i]
	c.conns = slices.Delete(c.conns, i, i+1)
	cc.removed = true
	cancel := cc.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-cc.done
	}
	c.mu.Lock()
	stale := cc.stale
	cc.stale = nil
	for _, ss := range stale {
		c.stopStaleTimer(ss)
	}
	c.mu.Unlock()
	for _, ss := range stale {
		c.dropSource(ss.id)
	}
	c.log.Info("server removed", "peer", addr)
	return nil
}

// serverLocked returns the index of addr in c.conns, or -1. c.mu is held.
func (c *Client) serverLocked(addr string) int {
	return slices.IndexFunc(c.conns, func(cc *clientConn) bool { return cc.addr == addr })
}

// startConnLocked starts the connLoop of cc. c.mu is held, and Run is
// running and not stopped.
func (c *Client) startConnLocked(cc *clientConn) {
	ctx, cancel := context.WithCancel(c.runCtx)
	cc.cancel = cancel
	c.connLoops.Add(1)
	go func() {
		defer c.connLoops.Done()
		defer close(cc.done)
		defer cancel()
		c.connLoop(ctx, cc)
	}()
}

// connLoop keeps one server's session up until ctx is done.
func (c *Client) connLoop(ctx context.Context, cc *clientConn) {
	log := c.log.With("peer", cc.addr)
	delay := c.cfg.RetryMin
	for ctx.Err() == nil && !c.isStopped() {
		cc.state.Store(uint32(session.StateConnecting))
		conn, err := c.cfg.Dial(ctx, "tcp", cc.addr)
		if err == nil {
			id := routetable.SourceID(c.nextID.Add(1))
			cc.id.Store(uint32(id))
			h := &clientHandler{c: c, cc: cc, id: id, log: log}
			scfg := session.Config{
				Role:         session.RoleClient,
				Keepalive:    c.cfg.Keepalive,
				WriteTimeout: c.cfg.WriteTimeout,
				MaxQueue:     c.cfg.MaxQueue,
				HighWater:    c.cfg.HighWater,
				Logger:       log,
				NoPaceV1:     c.cfg.NoPaceV1,
			}
			if c.cfg.GracefulRestart > 0 {
				scfg.Features = wire.FeatureEndOfSync | wire.FeatureGracefulRestart
				scfg.GracefulRestart = c.cfg.GracefulRestart
				scfg.Name = c.cfg.Name
			}
			sess := session.New(conn, scfg, h)
			cc.sess.Store(sess)
			log.Debug("connected", "local", conn.LocalAddr().String())
			err = sess.Run(ctx)
			wasUp := c.sessionDown(cc, id, c.keepTime(sess))
			cc.sess.Store(nil)
			if ctx.Err() != nil || c.isStopped() {
				break
			}
			log.Info("session down", "err", err)
			if wasUp {
				delay = c.cfg.RetryMin
			}
		} else if ctx.Err() == nil {
			log.Warn("connect failed", "err", err)
		}
		cc.state.Store(uint32(session.StateRetry))
		// Full jitter over [delay/2, delay*3/2) spreads a fleet's reconnects.
		wait := delay/2 + rand.N(delay)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		delay = min(2*delay, c.cfg.RetryMax)
	}
	cc.state.Store(uint32(session.StateClosed))
}

// keepTime is how long to keep the routes of sess after it ended.
func (c *Client) keepTime(sess *session.Session) time.Duration {
	if c.cfg.GracePeriod > 0 {
		return c.cfg.GracePeriod
	}
	if sess.Negotiated()&wire.FeatureGracefulRestart != 0 {
		h, _ := sess.PeerHello()
		return min(time.Duration(h.GracefulRestart)*time.Second, c.cfg.GracefulRestart)
	}
	return 0
}
