package bench

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// runChurn: a VNI holds a window of N routes; for Duration an announcer
// replaces the oldest routes with new ones at Rate changes per second (a
// remove and an add per replacement), in 5 ms ticks. S subscribers stay
// all along and sample the delivery delay of every 8th added route;
// meanwhile Joiners subscribers come and go: each connects, subscribes
// (getting the whole window while the churn goes on), stays for about a
// quarter of the run and leaves, and another takes its place.
//
// At the end a fence confirms that the staying subscribers and the
// joiners connected at that moment hold exactly the final window; the
// joiners that left are checked for duplicate and foreign updates.
func runChurn(e *env) error {
	n, s, rate, dur := e.cfg.N, e.cfg.S, e.cfg.Rate, e.cfg.Duration
	replace := int(int64(rate) * int64(dur) / int64(time.Second) / 2)
	l := NewLayout(1, n+replace, 1, vniBase)
	vni := l.VNIOf(0)
	sent := make([]atomic.Int64, l.Len())
	lag := newLagRecorder(1 << 20)

	subs, err := e.subscribers(l, 0, s)
	if err != nil {
		return err
	}
	rcvs := receivers(subs)
	for _, r := range rcvs {
		r.sampleLag(lag, sent)
	}
	ann, err := e.announcer(l)
	if err != nil {
		return err
	}
	if err := subscribeAll(subs); err != nil {
		return err
	}
	if err := ann.send(true, 0, 0, fenceOp{vni, 0, true}); err != nil {
		return err
	}
	if _, err := e.waitAll(rcvs, hasFence(0, true), time.Now()); err != nil {
		return err
	}
	if _, err := e.phase("load", int64(n), int64(n)*int64(s), func() (time.Duration, error) {
		start := time.Now()
		if err := ann.send(true, 0, n); err != nil {
			return 0, err
		}
		return e.waitAll(rcvs, hasCount(n), start)
	}); err != nil {
		return err
	}
	before := int64(0)
	for _, r := range rcvs {
		before += r.counts()
	}

	// Joiners come and go until the churn stops.
	var (
		jmu      sync.Mutex
		live     = map[*sub]bool{}
		departed []*Receiver
		joins    int
		jerr     error
	)
	stopJoin := make(chan struct{})
	var jwg sync.WaitGroup
	for range e.cfg.Joiners {
		jwg.Add(1)
		go func() {
			defer jwg.Done()
			for {
				select {
				case <-stopJoin:
					return
				default:
				}
				js, err := e.subscribers(l, 0, 1)
				if err == nil {
					err = js[0].subscribe()
				}
				if err != nil {
					jmu.Lock()
					jerr = err
					jmu.Unlock()
					return
				}
				j := &js[0]
				jmu.Lock()
				live[j] = true
				joins++
				jmu.Unlock()
				stay := dur/8 + rand.N(dur/4+1)
				select {
				case <-stopJoin:
					return // stays for the final check
				case <-time.After(stay):
				}
				jmu.Lock()
				delete(live, j)
				departed = append(departed, j.rcv)
				jmu.Unlock()
				j.close()
			}
		}()
	}

	replaced := 0
	p, err := e.phase("churn", 0, 0, func() (time.Duration, error) {
		start := time.Now()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			el := time.Since(start)
			if el >= dur {
				break
			}
			due := min(int(int64(rate)*int64(el)/int64(time.Second)/2), replace)
			if k := due - replaced; k > 0 {
				now := time.Now().UnixNano()
				for g := n + replaced; g < n+replaced+k; g++ {
					sent[g].Store(now)
				}
				if err := ann.send(false, replaced, replaced+k); err != nil {
					return 0, err
				}
				if err := ann.send(true, n+replaced, n+replaced+k); err != nil {
					return 0, err
				}
				replaced += k
			}
			select {
			case <-tick.C:
			case <-e.ctx.Done():
				return 0, e.ctx.Err()
			}
		}
		return time.Since(start), nil
	})
	close(stopJoin)
	jwg.Wait()
	if err != nil {
		return err
	}
	if jerr != nil {
		return fmt.Errorf("joiner: %w", jerr)
	}
	jmu.Lock()
	final := slicesOfKeys(live)
	jmu.Unlock()
	e.res.Headline = "churn"
	checked := append(rcvs, final...)
	if err := ann.send(true, 0, 0, fenceOp{vni, 1, true}); err != nil {
		return err
	}
	if _, err := e.waitAll(checked, hasFence(1, true), time.Now()); err != nil {
		return err
	}
	e.check(p, checked, func(g int) bool { return g >= replaced && g < n+replaced })
	for _, r := range departed {
		e.res.Exactness.merge(r.consistency())
		p.Exactness.merge(r.consistency())
	}

	var delivered int64
	for _, r := range rcvs {
		delivered += r.counts()
	}
	delivered -= before
	p.Routes = int64(2 * replaced)
	p.Deliveries = delivered
	if p.Seconds > 0 {
		p.RoutesPerSec = float64(p.Routes) / p.Seconds
		p.DeliveriesPerSec = float64(p.Deliveries) / p.Seconds
	}
	if q, ok := lag.quantiles(0.5, 0.99, 1); ok {
		e.res.Metrics["lag_p50_ms"] = ms(q[0])
		e.res.Metrics["lag_p99_ms"] = ms(q[1])
		e.res.Metrics["lag_max_ms"] = ms(q[2])
	}
	e.res.Metrics["joins"] = float64(joins)
	e.res.Notes = append(e.res.Notes, fmt.Sprintf(
		"deliveries count the %d staying subscribers only; %d joiners synced %d-route tables meanwhile", s, joins, n))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func slicesOfKeys(m map[*sub]bool) []*Receiver {
	out := make([]*Receiver, 0, len(m))
	for s := range m {
		out = append(out, s.rcv)
	}
	return out
}
