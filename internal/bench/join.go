package bench

import (
	"time"
)

// runJoin: an announcer loads N routes into a VNI (phase "load", measured
// for the record), then S connected peers subscribe at once (phase "join",
// the headline: 10 subscribers × 100,000 routes in 0.3 s). The join phase
// ends when the last subscriber holds all N routes; a fence then confirms
// nothing else arrives.
func runJoin(e *env) error {
	n, s := e.cfg.N, e.cfg.S
	l := NewLayout(1, n, 1, vniBase)
	vni := l.VNIOf(0)
	obs, err := e.observer()
	if err != nil {
		return err
	}
	subs, err := e.subscribers(l, 0, s)
	if err != nil {
		return err
	}
	rcvs := receivers(subs)
	ann, err := e.announcer(l)
	if err != nil {
		return err
	}
	e.logf("join: %d subscribers connected", s)

	_, err = e.phase("load", int64(n), 0, func() (time.Duration, error) {
		start := time.Now()
		if err := ann.send(true, 0, n, fenceOp{fenceVNI, 1, true}); err != nil {
			return 0, err
		}
		return e.waitAll([]*Receiver{obs}, hasFence(1, true), start)
	})
	if err != nil {
		return err
	}
	e.checkServerRoutes(int64(n) + 1)

	p, err := e.phase("join", int64(n), int64(n)*int64(s), func() (time.Duration, error) {
		start := time.Now()
		if err := subscribeAll(subs); err != nil {
			return 0, err
		}
		return e.waitAll(rcvs, hasCount(n), start)
	})
	if err != nil {
		return err
	}
	e.res.Headline = "join"
	if err := ann.send(true, 0, 0, fenceOp{vni, 2, true}); err != nil {
		return err
	}
	if _, err := e.waitAll(rcvs, hasFence(2, true), time.Now()); err != nil {
		return err
	}
	e.check(p, rcvs, func(int) bool { return true })
	return nil
}
