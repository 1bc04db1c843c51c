package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// announcer sends routes of a Layout, and fences, to the server: a raw
// peer writing pre-encoded frames, or a library client.
type announcer interface {
	// send adds (or removes) routes [lo, hi), then applies the fences,
	// in this order on the wire.
	send(add bool, lo, hi int, fences ...fenceOp) error
}

// fenceOp adds or removes fence k in vni.
type fenceOp struct {
	vni route.VNI
	k   int
	add bool
}

type rawAnnouncer struct {
	p *Peer
	l *Layout
}

func (a rawAnnouncer) send(add bool, lo, hi int, fences ...fenceOp) error {
	bufs := make([][]byte, 0, 1+len(fences))
	if hi > lo {
		if add {
			bufs = append(bufs, a.l.AddFrames(lo, hi))
		} else {
			bufs = append(bufs, a.l.RemoveFrames(lo, hi))
		}
	}
	for _, f := range fences {
		bufs = append(bufs, fenceFrame(f.vni, f.k, f.add))
	}
	return a.p.writev(bufs...)
}

type libAnnouncer struct {
	lp  *libPeer
	l   *Layout
	ctx context.Context
}

func (a libAnnouncer) send(add bool, lo, hi int, fences ...fenceOp) error {
	change := a.lp.c.Announce
	if !add {
		change = a.lp.c.Withdraw
	}
	for g := lo; g < hi; g++ {
		if err := change(a.ctx, a.l.Route(g)); err != nil {
			return err
		}
	}
	for _, f := range fences {
		change := a.lp.c.Announce
		if !f.add {
			change = a.lp.c.Withdraw
		}
		if err := change(a.ctx, Fence(f.vni, f.k)); err != nil {
			return err
		}
	}
	return nil
}

// announcer connects an announcer for the routes of l.
func (e *env) announcer(l *Layout) (announcer, error) {
	if e.cfg.Lib {
		lp, err := e.startLib(nil, l)
		if err != nil {
			return nil, err
		}
		return libAnnouncer{lp: lp, l: l, ctx: e.ctx}, nil
	}
	ps, err := e.dial(1)
	if err != nil {
		return nil, err
	}
	ps[0].Start(nil)
	return rawAnnouncer{p: ps[0], l: l}, nil
}

// sub is a subscriber: a Receiver fed by a raw peer or a library client.
type sub struct {
	rcv       *Receiver
	subscribe func() error
	close     func()
}

// subscribers connects n subscribers for the vi-th VNI of l; they do not
// subscribe until told to.
func (e *env) subscribers(l *Layout, vi, n int) ([]sub, error) {
	subs := make([]sub, n)
	vni := l.VNIOf(vi)
	if e.cfg.Lib {
		for i := range subs {
			rcv := NewReceiver(l, vi, -1)
			lp, err := e.startLib(rcv, l)
			if err != nil {
				return nil, err
			}
			subs[i] = sub{rcv: rcv, subscribe: func() error { return lp.c.Subscribe(e.ctx, vni) }, close: lp.Close}
		}
		return subs, nil
	}
	ps, err := e.dial(n)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		rcv := NewReceiver(l, vi, -1)
		p.Start(rcv)
		subs[i] = sub{rcv: rcv, subscribe: func() error { return p.Subscribe(vni) }, close: p.Close}
	}
	return subs, nil
}

// subscribeFrame returns the SUBSCRIBE frame for vni.
func subscribeFrame(vni route.VNI) []byte {
	b, _ := wire.AppendFrame(nil, wire.Subscribe{VNI: vni})
	return b
}

func receivers(subs []sub) []*Receiver {
	rs := make([]*Receiver, len(subs))
	for i, s := range subs {
		rs[i] = s.rcv
	}
	return rs
}

func subscribeAll(subs []sub) error {
	for _, s := range subs {
		if err := s.subscribe(); err != nil {
			return err
		}
	}
	return nil
}

// libPeer is a metalbond.Client run by the benchmark.
type libPeer struct {
	c      *metalbond.Client
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startLib starts a library client whose Installer feeds rcv (nil: every
// received route is foreign) and waits until it is connected.
func (e *env) startLib(rcv *Receiver, l *Layout) (*libPeer, error) {
	return e.startLibWith(&libInstaller{l: l, rcv: rcv})
}

// startLibWith starts a library client with inst and waits until it is
// connected.
func (e *env) startLibWith(inst metalbond.Installer) (*libPeer, error) {
	local := e.source()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	c, err := metalbond.NewClient(metalbond.ClientConfig{
		Servers:   []string{e.srv.Addr()},
		Keepalive: e.cfg.Keepalive,
		Installer: inst,
		Dial:      d.DialContext,
		RetryMin:  100 * time.Millisecond,
		RetryMax:  time.Second,
		// A client that dies in a scenario is gone: the server must not
		// keep its routes for a graceful restart.
		GracefulRestart: -1,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	lp := &libPeer{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(lp.done)
		c.Run(ctx)
	}()
	e.mu.Lock()
	e.libs = append(e.libs, lp)
	e.mu.Unlock()
	wctx, wcancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		return nil, fmt.Errorf("library client not connected: %w", err)
	}
	return lp, nil
}

// Close stops the client and waits for it.
func (lp *libPeer) Close() {
	lp.once.Do(func() {
		lp.cancel()
		<-lp.done
	})
}

// libInstaller is the Installer of a library client: it hands what the
// client learns to a Receiver.
type libInstaller struct {
	l     *Layout
	rcv   *Receiver
	stray atomic.Int64
}

func (i *libInstaller) AddRoute(r route.Route) error    { i.change(r, true); return nil }
func (i *libInstaller) RemoveRoute(r route.Route) error { i.change(r, false); return nil }

func (i *libInstaller) change(r route.Route, add bool) {
	if i.rcv == nil {
		i.stray.Add(1)
		return
	}
	if k, ok := fenceNumber(r); ok {
		i.rcv.fence(k, add)
		return
	}
	if g, ok := i.l.index(r); ok {
		i.rcv.apply(g, add)
		return
	}
	i.rcv.foreignUpdate()
}

// index returns the number of route r in l.
func (l *Layout) index(r route.Route) (int, bool) {
	p := r.Prefix
	if !p.Addr().Is4() || p.Bits() != 32 {
		return 0, false
	}
	g := int(binary.BigEndian.Uint32(p.Addr().AsSlice())) - prefixBase
	if g < 0 || g >= l.Len() || l.Route(g) != r {
		return 0, false
	}
	return g, true
}
