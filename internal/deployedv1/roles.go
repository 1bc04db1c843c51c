package deployedv1

import (
	"context"
	"fmt"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// RunClient runs the peer as a deployed v1 client: HELLO, the handshake,
// a SUBSCRIBE for each of vnis once established, a KEEPALIVE every agreed
// interval, and every UPDATE received applied to its table. It returns the
// first failure, or ctx's cause when ctx ends.
func (p *Peer) RunClient(ctx context.Context, vnis ...route.VNI) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := p.send(wire.Hello{Keepalive: uint32(p.cfg.Keepalive / time.Second)}); err != nil {
		return fmt.Errorf("send HELLO: %w", err)
	}
	established := false
	var lastKA time.Time
	return p.run(ctx, func(t wire.Type, body []byte) error {
		switch {
		case t == wire.TypeHello && !established:
			m, err := wire.Decode(t, body)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrDecode, err)
			}
			h := m.(wire.Hello)
			if !h.IsServer {
				return fmt.Errorf("%w: server HELLO without isServer", ErrProtocol)
			}
			p.keepalive.Store(int64(time.Duration(h.Keepalive) * time.Second))
			return p.send(wire.Keepalive{})
		case t == wire.TypeKeepalive && !established:
			established = true
			go p.sendKeepalives(ctx, cancel)
			for _, v := range vnis {
				if err := p.send(wire.Subscribe{VNI: v}); err != nil {
					return err
				}
			}
		case t == wire.TypeKeepalive:
			p.keepaliveSeen(&lastKA)
		case t == wire.TypeUpdate && established:
			return p.update(body)
		default:
			return fmt.Errorf("%w: %v (established %v)", ErrProtocol, t, established)
		}
		return nil
	})
}

// sendKeepalives sends a KEEPALIVE every agreed interval until ctx ends.
func (p *Peer) sendKeepalives(ctx context.Context, fail context.CancelCauseFunc) {
	t := time.NewTicker(time.Duration(p.keepalive.Load()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.send(wire.Keepalive{}); err != nil {
				fail(fmt.Errorf("send KEEPALIVE: %w", err))
				return
			}
		}
	}
}

// RunServer runs the peer as a deployed v1 server for the one client on its
// connection: it answers HELLO with a plain v1 server HELLO, answers every
// KEEPALIVE with a KEEPALIVE, accepts SUBSCRIBE and UNSUBSCRIBE, and applies
// every UPDATE to its table. established, if not nil, is closed when the
// handshake is done. It returns the first failure, or ctx's cause when ctx
// ends.
func (p *Peer) RunServer(ctx context.Context, established chan<- struct{}) error {
	helloSeen, up := false, false
	var lastKA time.Time
	return p.run(ctx, func(t wire.Type, body []byte) error {
		switch {
		case t == wire.TypeHello && !helloSeen:
			m, err := wire.Decode(t, body)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrDecode, err)
			}
			h := m.(wire.Hello)
			if h.IsServer {
				return fmt.Errorf("%w: client HELLO with isServer", ErrProtocol)
			}
			ka := min(time.Duration(h.Keepalive)*time.Second, p.cfg.Keepalive)
			p.keepalive.Store(int64(ka))
			helloSeen = true
			return p.send(wire.Hello{Keepalive: uint32(ka / time.Second), IsServer: true})
		case t == wire.TypeKeepalive && helloSeen:
			if !up {
				up = true
				if established != nil {
					close(established)
				}
			} else {
				p.keepaliveSeen(&lastKA)
			}
			return p.send(wire.Keepalive{})
		case (t == wire.TypeSubscribe || t == wire.TypeUnsubscribe) && up:
		case t == wire.TypeUpdate && up:
			return p.update(body)
		default:
			return fmt.Errorf("%w: %v", ErrProtocol, t)
		}
		return nil
	})
}
