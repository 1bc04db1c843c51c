package bench

import (
	"fmt"
	"time"
)

// runMemory: C announcers load N routes (N/C each, in V VNIs) into a server
// with no subscribers; the server's memory growth divided by N is its cost
// per stored route (target: at most 200 bytes at 1,000,000 routes). Both
// the growth of the resident set and, where the server reports it, of the
// live Go heap after a collection are given; the first includes buffers
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
	ps, err := e.dial(c)
	if err != nil {
		return err
	}
	for _, p := range ps {
		p.Start(nil)
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
	e.res.Metrics["rss_bytes_per_route"] = float64(after.RSS-before.RSS) / float64(n)
	e.res.Metrics["rss_after_bytes"] = float64(after.RSS)
	if after.Heap >= 0 && before.Heap >= 0 {
		e.res.Metrics["heap_bytes_per_route"] = float64(after.Heap-before.Heap) / float64(n)
		e.res.Metrics["heap_after_bytes"] = float64(after.Heap)
	}
	e.res.Notes = append(e.res.Notes, fmt.Sprintf("%d routes from %d announcers in %d VNIs, no subscribers", n, c, v))
	return nil
}
