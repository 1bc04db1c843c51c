package metalbond

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
)

// connLoop keeps one server's session up until ctx is done.
func (c *Client) connLoop(ctx context.Context, cc *clientConn) {
	log := c.log.With("peer", cc.addr)
	delay := c.cfg.RetryMin
	for ctx.Err() == nil {
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
			if ctx.Err() != nil {
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
