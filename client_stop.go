package metalbond

import (
	"context"
	"sync"
	"time"

	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
)

// DefaultStopTimeout bounds how long a clean stop waits for the servers to
// take the client's withdrawals (ClientConfig.StopTimeout).
const DefaultStopTimeout = 2 * time.Second

// How a client stops: withdrawing everything (the default) or keeping its
// routes on the servers because it is coming back.
const (
	stopWithdraw = iota
	stopForRestart
)

// Shutdown stops the client cleanly, the ordinary way to stop: every route
// the client announced is withdrawn at every server it has a session with
// (the withdrawals queued before, by Withdraw, go first), and the servers
// pass the withdrawals on to their subscribers at once. A server that has
// not taken them within ClientConfig.StopTimeout is disconnected anyway;
// it then keeps the routes for the graceful restart time, as after a crash.
// Then the sessions close and Run returns.
//
// Cancelling Run's context does the same. Use StopForRestart instead when
// the client is coming back and its routes must not flap.
//
// Shutdown returns when Run has returned, or with ctx's error when ctx is
// done first (the stop goes on). Before Run, it makes Run return at once.
// Calling it again, or after StopForRestart, is harmless. Announce and
// Withdraw fail with ErrClosed from the moment Shutdown is called.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.stop(ctx, stopWithdraw)
}

// StopForRestart stops the client without withdrawing its routes, because
// it is coming back (a restart or an upgrade): servers that negotiated
// graceful restart keep them for the graceful restart time
// (ClientConfig.GracefulRestart), the client's next run under the same Name
// takes them over, and no subscriber sees a flap. Routes the next run does
// not announce are withdrawn when it has re-announced everything. Plain v1
// servers drop the routes when the connection closes, as they do on a
// crash.
//
// Otherwise StopForRestart is like Shutdown: it returns when Run has
// returned, or with ctx's error when ctx is done first. If a stop has
// already begun, it does not change how.
func (c *Client) StopForRestart(ctx context.Context) error {
	return c.stop(ctx, stopForRestart)
}

func (c *Client) stop(ctx context.Context, how int) error {
	c.mu.Lock()
	if !c.stopRequested {
		c.stopRequested = true
		c.stopHow = how
		close(c.stopReq)
	}
	running := c.running
	c.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-c.runDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isStopped reports whether Run is stopping: no session is (re)started.
func (c *Client) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// withdrawAll sends a REMOVE for every announced route on every
// established session and finishes the sessions (session.Finish), at most
// for ClientConfig.StopTimeout. Sessions established from now on are sent
// nothing (see Established).
func (c *Client) withdrawAll() {
	start := time.Now()
	var sessions []*session.Session
	c.mu.Lock()
	n := len(c.announced)
	for _, cc := range c.conns {
		s := cc.sess.Load()
		if !cc.established || s == nil {
			continue
		}
		s.SendFunc(func(b []byte) ([]byte, int) {
			for r := range c.announced {
				b = wire.AppendUpdate(b, wire.ActionRemove, r)
			}
			return b, len(c.announced)
		})
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StopTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log := c.log.With("peer", s.RemoteAddr().String())
			if err := s.Finish(ctx); err != nil {
				log.Warn("server did not take all withdrawals before the stop timeout", "routes", n, "err", err)
				return
			}
			log.Info("withdrew all routes", "routes", n)
		}()
	}
	wg.Wait()
	c.log.Info("clean stop: routes withdrawn", "routes", n, "servers", len(sessions), "took", time.Since(start).Round(time.Millisecond))
}
