package bench

import (
	"time"
)

// runFanout: one announcer adds N routes to a VNI with S subscribers, then
// removes them. The add phase is the headline (the target of issue 5:
// 100,000 routes to 10 subscribers in 0.2 s); each phase ends when the last
// subscriber holds the exact table, which a fence then confirms.
func runFanout(e *env) error {
	n, s := e.cfg.N, e.cfg.S
	l := NewLayout(1, n, 1, vniBase)
	vni := l.VNIOf(0)
	subs, err := e.subscribers(l, 0, s)
	if err != nil {
		return err
	}
	rcvs := receivers(subs)
	ann, err := e.announcer(l)
	if err != nil {
		return err
	}
	if err := subscribeAll(subs); err != nil {
		return err
	}
	// Fence 0 shows every subscription is in place.
	if err := ann.send(true, 0, 0, fenceOp{vni, 0, true}); err != nil {
		return err
	}
	if _, err := e.waitAll(rcvs, hasFence(0, true), time.Now()); err != nil {
		return err
	}
	e.logf("fanout: %d subscribers ready", s)

	deliveries := int64(n) * int64(s)
	p, err := e.phase("add", int64(n), deliveries, func() (time.Duration, error) {
		start := time.Now()
		if err := ann.send(true, 0, n, fenceOp{vni, 1, true}); err != nil {
			return 0, err
		}
		return e.waitAll(rcvs, hasCount(n), start)
	})
	if err != nil {
		return err
	}
	if _, err := e.waitAll(rcvs, hasFence(1, true), time.Now()); err != nil {
		return err
	}
	e.check(p, rcvs, func(int) bool { return true })
	e.res.Headline = "add"

	p, err = e.phase("remove", int64(n), deliveries, func() (time.Duration, error) {
		start := time.Now()
		if err := ann.send(false, 0, n, fenceOp{vni, 1, false}); err != nil {
			return 0, err
		}
		return e.waitAll(rcvs, hasCount(0), start)
	})
	if err != nil {
		return err
	}
	if _, err := e.waitAll(rcvs, hasFence(1, false), time.Now()); err != nil {
		return err
	}
	e.check(p, rcvs, func(int) bool { return false })
	return ann.send(false, 0, 0, fenceOp{vni, 0, false})
}
