package bench

import (
	"fmt"
	"time"
)

// runMemory: C announcers connect to a server with no subscribers (phase
// "connect"), then load N routes (N/C each, in V VNIs; phase "load"). The
// server's memory growth over the connect phase divided by C is its cost
// per idle peer; over the load phase divided by N, its cost per stored
// route (target: at most 200 bytes at 1,000,000 routes). Both the growth
// of the resident set and, where the server reports it, of the live Go
// heap after a collection are given: the first includes buffers, stacks
// and allocator slack, the second is what the table and sessions keep.
func runMemory(e *env) error {
	c, v := e.cfg.C, e.cfg.V
	per := e.cfg.N / c
	n := per * c
	l := NewLayout(c, per, v, vniBase)
	obs, err := e.observer()
	if err != nil {
		return err
	}
	base := e.srv.Usage(true)
	var ps []*Peer
	if _, err := e.phase("connect", 0, 0, func() (time.Duration, error) {
		start := time.Now()
		ps, err = e.dial(c)
		if err != nil {
			return 0, err
		}
		for _, p := range ps {
			p.Start(nil)
		}
		return time.Since(start), nil
	}); err != nil {
		return err
	}
	before := e.srv.Usage(true)

	_, err = e.phase("load", int64(n), 0, func() (time.Duration, error) {
		start := time.Now()
		if err := e.parallel(c, func(i int) error {
			lo, hi := l.OwnerRoutes(i)
			return ps[i].writev(l.AddFrames(lo, hi), fenceFrame(fenceVNI, i, true))
		}); err != nil {
			return 0, err
		}
		return e.waitAll([]*Receiver{obs}, func(r *Receiver) bool { return len(r.fences) == c }, start)
	})
	if err != nil {
		return err
	}
	e.res.Headline = "load"
	after := e.srv.Usage(true)
	e.checkServerRoutes(int64(n + c))
	if !after.Known {
		e.res.Notes = append(e.res.Notes, "server memory unknown: give the PID of an external server")
		return nil
	}
	e.res.Metrics["rss_bytes_per_peer"] = float64(before.RSS-base.RSS) / float64(c)
	e.res.Metrics["rss_bytes_per_route"] = float64(after.RSS-before.RSS) / float64(n)
	e.res.Metrics["rss_after_bytes"] = float64(after.RSS)
	if after.Heap >= 0 && before.Heap >= 0 {
		e.res.Metrics["heap_bytes_per_peer"] = float64(before.Heap-base.Heap) / float64(c)
		e.res.Metrics["heap_bytes_per_route"] = float64(after.Heap-before.Heap) / float64(n)
		e.res.Metrics["heap_after_bytes"] = float64(after.Heap)
	}
	e.res.Notes = append(e.res.Notes, fmt.Sprintf("%d routes from %d announcers in %d VNIs, no subscribers", n, c, v))
	return nil
}
