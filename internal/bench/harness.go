package bench

import (
	"context"
	"fmt"
	"time"
)

// Harness runs the fan-out and join paths against a server at an address,
// for Go benchmarks (see bench_test.go in the module root), which time
// only the calls they are interested in. It uses lean raw peers: one
// announcer, S subscribers of one VNI, and an observer for barriers. The
// peers advertise the END_OF_SYNC extension, as the client library does,
// so that a server's special treatment of plain v1 peers (pacing) is not
// what is measured; the scenario tool measures plain v1 peers by default.
//
// A Harness is not safe for concurrent use.
type Harness struct {
	e    *env
	l    *Layout
	ann  announcer
	raw  *Peer
	obs  *Receiver
	subs []sub
	rcvs []*Receiver
	k    int // next fence number
	// loaded is the number of routes announced (all or none).
	loaded     int
	subscribed bool
}

// NewHarness connects an announcer of n routes, s subscribers (not yet
// subscribed) and an observer to the server at addr. ctx bounds every
// later call.
func NewHarness(ctx context.Context, addr string, n, s int) (*Harness, error) {
	e := &env{
		cfg: Defaults(Config{Scenario: "fanout", N: n, S: s, Ext: true}),
		ctx: ctx,
		srv: &externalServer{addr: addr},
		res: &Result{Metrics: map[string]float64{}},
	}
	e.setSources()
	e.startKeepalives()
	h := &Harness{e: e, l: NewLayout(1, n, 1, vniBase), k: 1}
	var err error
	if h.obs, err = e.observer(); err != nil {
		h.Close()
		return nil, err
	}
	if h.subs, err = e.subscribers(h.l, 0, s); err != nil {
		h.Close()
		return nil, err
	}
	h.rcvs = receivers(h.subs)
	if h.ann, err = e.announcer(h.l); err != nil {
		h.Close()
		return nil, err
	}
	h.raw = h.ann.(rawAnnouncer).p
	return h, nil
}

// Subscribe subscribes every subscriber and waits until each has the
// routes announced so far.
func (h *Harness) Subscribe() error {
	if err := subscribeAll(h.subs); err != nil {
		return err
	}
	h.subscribed = true
	_, err := h.e.waitAll(h.rcvs, hasCount(h.loaded), time.Now())
	return err
}

// Add announces every route and returns once every subscriber holds all
// of them and the server has handled the last one.
func (h *Harness) Add() error { return h.change(true) }

// Remove withdraws every route, likewise.
func (h *Harness) Remove() error { return h.change(false) }

func (h *Harness) change(add bool) error {
	n := h.l.Len()
	k := h.k
	h.k++
	if err := h.ann.send(add, 0, n, fenceOp{fenceVNI, k, true}); err != nil {
		return err
	}
	want := 0
	if add {
		want = n
	}
	h.loaded = want
	if _, err := h.e.waitAll([]*Receiver{h.obs}, hasFence(k, true), time.Now()); err != nil {
		return err
	}
	if !h.subscribed {
		return nil
	}
	_, err := h.e.waitAll(h.rcvs, hasCount(want), time.Now())
	return err
}

// Check confirms with a fence that nothing more arrives and returns what
// the subscribers got wrong: they should hold every route after Add, none
// after Remove.
func (h *Harness) Check() (Exactness, error) {
	k := h.k
	h.k++
	vni := h.l.VNIOf(0)
	if err := h.ann.send(true, 0, 0, fenceOp{vni, k, true}); err != nil {
		return Exactness{}, err
	}
	if _, err := h.e.waitAll(h.rcvs, hasFence(k, true), time.Now()); err != nil {
		return Exactness{}, err
	}
	full := h.loaded == h.l.Len()
	var ex Exactness
	for _, r := range h.rcvs {
		ex.merge(r.check(func(int) bool { return full }))
	}
	return ex, nil
}

// Close disconnects every peer.
func (h *Harness) Close() { h.e.closePeers() }

// String describes the harness.
func (h *Harness) String() string {
	return fmt.Sprintf("%d routes, %d subscribers", h.l.Len(), len(h.rcvs))
}
