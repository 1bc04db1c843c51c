package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runMany: C clients in V VNIs (client c in VNI c mod V) each subscribe to
// their VNI and announce R routes, as a fleet of hypervisors does after a
// restart; then half of every VNI's clients die (their connections reset)
// and the survivors must lose exactly the routes of the dead.
//
// Phases: "connect" (TCP and v1 handshake of all clients, at most 128 at a
// time), "announce" (every client sends SUBSCRIBE and its R routes in one
// write, all clients at once; ends when every client holds every other
// client's routes of its VNI), and "die". The headline is "converge", the
// sum of connect and announce: what a fleet restart costs.
//
// With every client subscribed the work grows with the square of the VNI
// size: a VNI of m clients needs m·(m-1)·R deliveries. With Observers > 0
// the clients only announce, and that many subscribe-only peers per VNI
// receive instead.
func runMany(e *env) error {
	c, v, r := e.cfg.C, e.cfg.V, e.cfg.R
	l := NewLayout(c, r, v, vniBase)
	obs := e.cfg.Observers
	clientsSubscribe := obs == 0

	type client struct {
		rcv  *Receiver // nil unless it subscribes
		send announcer
		kill func()
		vi   int
	}
	clients := make([]client, c)
	var observers []sub
	var dur time.Duration
	connect, err := e.phase("connect", 0, 0, func() (time.Duration, error) {
		start := time.Now()
		if e.cfg.Lib {
			if err := e.manyLibClients(l, clientsSubscribe, func(i int, rcv *Receiver, lp *libPeer) {
				clients[i] = client{rcv: rcv, send: libAnnouncer{lp: lp, l: l, ctx: e.ctx}, kill: lp.Close, vi: i % v}
			}); err != nil {
				return 0, err
			}
		} else {
			ps, err := e.dial(c)
			if err != nil {
				return 0, err
			}
			for i, p := range ps {
				var rcv *Receiver
				if clientsSubscribe {
					rcv = NewReceiver(l, i%v, i)
				}
				p.Start(rcv)
				clients[i] = client{rcv: rcv, send: rawAnnouncer{p: p, l: l}, kill: p.Close, vi: i % v}
			}
		}
		dur = time.Since(start)
		return dur, nil
	})
	if err != nil {
		return err
	}
	if !clientsSubscribe {
		for vi := range v {
			s, err := e.subscribers(l, vi, obs)
			if err != nil {
				return err
			}
			if err := subscribeAll(s); err != nil {
				return err
			}
			observers = append(observers, s...)
		}
	}
	// A fence peer, subscribed to nothing, closes every phase.
	fence, err := e.announcer(l)
	if err != nil {
		return err
	}
	var rcvs []*Receiver
	for _, cl := range clients {
		if cl.rcv != nil {
			rcvs = append(rcvs, cl.rcv)
		}
	}
	rcvs = append(rcvs, receivers(observers)...)
	e.logf("many: %d clients connected in %v", c, dur.Round(time.Millisecond))

	// Expected deliveries: each receiver gets the routes of its VNI but
	// its own.
	var deliveries int64
	for _, rcv := range rcvs {
		deliveries += int64(l.VNISize(rcv.vi))
		if rcv.self >= 0 {
			deliveries -= int64(r)
		}
	}
	wantCount := func(alive func(owner int) bool) func(*Receiver) bool {
		// Each receiver waits for the routes of the live owners of its
		// VNI, its own excepted.
		counts := make([]int, v)
		for owner := range c {
			if alive(owner) {
				counts[owner%v] += r
			}
		}
		return func(rc *Receiver) bool {
			want := counts[rc.vi]
			if rc.self >= 0 && alive(rc.self) {
				want -= r
			}
			return rc.present == want
		}
	}

	p, err := e.phase("announce", int64(c*r), deliveries, func() (time.Duration, error) {
		start := time.Now()
		if err := e.parallel(c, func(i int) error {
			cl := clients[i]
			lo, hi := l.OwnerRoutes(i)
			if rp, ok := cl.send.(rawAnnouncer); ok && cl.rcv != nil {
				// SUBSCRIBE and the routes in one write.
				sf := subscribeFrame(l.VNIOf(i))
				return rp.p.writev(sf, l.AddFrames(lo, hi))
			}
			if cl.rcv != nil {
				if err := cl.send.(libAnnouncer).lp.c.Subscribe(e.ctx, l.VNIOf(i)); err != nil {
					return err
				}
			}
			return cl.send.send(true, lo, hi)
		}); err != nil {
			return 0, err
		}
		return e.waitAll(rcvs, wantCount(func(int) bool { return true }), start)
	})
	if err != nil {
		return err
	}
	// Headline: connect + announce.
	conv := Phase{Name: "converge", Seconds: connect.Seconds + p.Seconds, Routes: p.Routes, Deliveries: p.Deliveries,
		ServerCPUSeconds: connect.ServerCPUSeconds + p.ServerCPUSeconds, LoadCPUSeconds: connect.LoadCPUSeconds + p.LoadCPUSeconds}
	conv.RoutesPerSec = float64(conv.Routes) / conv.Seconds
	conv.DeliveriesPerSec = float64(conv.Deliveries) / conv.Seconds
	if err := e.fences(fence, l, rcvs, 1, true); err != nil {
		return err
	}
	e.check(p, rcvs, func(int) bool { return true })
	e.checkServerRoutes(int64(c*r) + int64(v))
	if u := e.srv.Usage(false); u.Known {
		e.res.Metrics["converged_server_hwm_bytes"] = float64(u.HWM)
	}
	e.res.Phases = append(e.res.Phases, &conv)
	e.res.Headline = "converge"

	// Half of every VNI's clients die: those with an odd rank in it.
	dead := func(owner int) bool { return (owner/v)%2 == 1 }
	var survivors []*Receiver
	var removes int64
	deadPer := make([]int, v)
	for owner := range c {
		if dead(owner) {
			deadPer[owner%v]++
		}
	}
	for _, rcv := range rcvs {
		if rcv.self >= 0 && dead(rcv.self) {
			continue
		}
		survivors = append(survivors, rcv)
		removes += int64(deadPer[rcv.vi] * r)
	}
	var killed int
	for owner := range c {
		if dead(owner) {
			killed++
		}
	}
	p, err = e.phase("die", int64(killed*r), removes, func() (time.Duration, error) {
		start := time.Now()
		if err := e.parallel(c, func(i int) error {
			if dead(i) {
				clients[i].kill()
			}
			return nil
		}); err != nil {
			return 0, err
		}
		return e.waitAll(survivors, wantCount(func(o int) bool { return !dead(o) }), start)
	})
	if err != nil {
		return err
	}
	if err := e.fences(fence, l, survivors, 1, false); err != nil {
		return err
	}
	e.check(p, survivors, func(g int) bool { return !dead(g / r) })
	e.checkServerRoutes(int64((c - killed) * r))
	if clientsSubscribe {
		e.res.Notes = append(e.res.Notes, fmt.Sprintf("every client subscribes to its VNI: %d deliveries to converge", deliveries))
	} else {
		e.res.Notes = append(e.res.Notes, fmt.Sprintf("clients only announce; %d observers per VNI subscribe", obs))
	}
	return nil
}

// fences adds (or removes) fence k in every VNI of l through a and waits
// until every receiver has seen it.
func (e *env) fences(a announcer, l *Layout, rcvs []*Receiver, k int, add bool) error {
	ops := make([]fenceOp, l.VNIs())
	for i := range ops {
		ops[i] = fenceOp{l.VNIOf(i), k, add}
	}
	if err := a.send(true, 0, 0, ops...); err != nil {
		return err
	}
	_, err := e.waitAll(rcvs, hasFence(k, add), time.Now())
	return err
}

// parallel runs fn(0..n-1) on 64 goroutines and returns the first error.
func (e *env) parallel(n int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(n, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// manyLibClients starts C library clients, 64 at a time.
func (e *env) manyLibClients(l *Layout, subscribe bool, got func(i int, rcv *Receiver, lp *libPeer)) error {
	return e.parallel(l.Owners(), func(i int) error {
		var rcv *Receiver
		if subscribe {
			rcv = NewReceiver(l, i%l.VNIs(), i)
		}
		lp, err := e.startLib(rcv, l)
		if err != nil {
			return err
		}
		got(i, rcv, lp)
		return nil
	})
}
