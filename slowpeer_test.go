package metalbond_test

// A deployed-style v1 subscriber (internal/deployedv1) beside a fast one of
// ours: the slow reader converges, and the fast one is not held back to its
// pace (docs/pacing.md, back-pressure). "Not held back" is tested by order,
// not by timing: while the fast subscriber gets the table, the slow reader
// takes crawlDelay per message, and the fast one must be done long before
// the slow one could be. How long each takes is measured by
// BenchmarkSlowReader.
//
//	go test -run SlowV1 -v
//	go test -run '^$' -bench SlowReader

import (
	"slices"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/route"
)

// crawlDelay is the slow reader's time per message while the fast
// subscriber gets the table: 100,000 routes would take it 50 s, while the
// fast one takes well under a second alone (a few seconds on a loaded
// machine). It reads about 60 KB/s, above the rate at which the server
// closes a peer that reads a trickle.
const crawlDelay = 500 * time.Microsecond

// slowSubscriber connects a deployed-style v1 client over loopback to addr
// and subscribes it to vni; it reports on the returned channel when it has
// exactly want, or its failure.
func slowSubscriber(t testing.TB, addr string, vni route.VNI, want []route.Route, delay time.Duration) (*deployedv1.Peer, <-chan error) {
	t.Helper()
	// The deployed default keepalive (5 s): a crawling reader reads what
	// is ahead of a KEEPALIVE only as fast as it processes, so the gaps
	// between the KEEPALIVEs it sees grow with its processing time.
	peer, failed := deployedSubscriberCfg(t, paths()[0], addr, vni, deployedv1.Config{Delay: delay, Keepalive: 5 * time.Second})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case err := <-failed:
				done <- err
				return
			case <-peer.Changed():
			case <-time.After(10 * time.Millisecond):
			}
			if peer.Len() == len(want) && sameRoutes(peer.Routes(), want) {
				done <- nil
				return
			}
		}
	}()
	return peer, done
}

func wait1(t testing.TB, ch <-chan error, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(timeout):
		t.Fatalf("no result after %v", timeout)
		return nil
	}
}

// TestSlowV1SubscriberConverges: a deployed-style v1 client subscribes to a
// VNI of 100,000 routes and gets all of them without a single read filling
// its buffer; while it crawls, a fast subscriber of our own on the same
// server gets the whole table.
func TestSlowV1SubscriberConverges(t *testing.T) {
	n, delay := slowScale()
	const vni = 100
	srv, addr := startServer(t, metalbond.ServerConfig{})
	want := loadTable(t, srv, vni, n)

	start := time.Now()
	slow, done := slowSubscriber(t, addr, vni, want, delay)
	waitFor(t, func() bool { return slow.Stats.Updates.Load() >= int64(n/20) })
	slow.SetDelay(crawlDelay)
	withSlow := timeFast(t, addr, vni, want)
	had := slow.Stats.Updates.Load()
	slow.SetDelay(delay)
	if had >= int64(n) {
		t.Fatalf("the fast subscriber finished after the slow one had all %d routes: it was held back to the slow one's pace", n)
	}

	if err := wait1(t, done, 2*time.Minute); err != nil {
		t.Fatalf("slow v1 subscriber: %v (largest read %d bytes)", err, slow.Stats.MaxRead.Load())
	}
	took := time.Since(start)
	t.Logf("slow v1 subscriber (%v per message): %d routes in %v, %d reads, largest %d bytes, longest keepalive gap %v",
		delay, n, took.Round(time.Millisecond), slow.Stats.Reads.Load(), slow.Stats.MaxRead.Load(), time.Duration(slow.Stats.MaxKeepaliveGap.Load()).Round(time.Millisecond))
	t.Logf("fast subscriber: the table in %v while the slow one crawled to %d of %d routes", withSlow.Round(time.Millisecond), had, n)
	if floor := time.Duration(n) * delay; took < floor {
		t.Errorf("slow reader finished in %v, faster than its own processing time %v: the delay is not applied", took, floor)
	}
}

// TestSlowV1SubscriberDoesNotHoldBackLiveUpdates: an announcer sends
// 100,000 routes into a VNI with a fast subscriber of ours and a
// deployed-style v1 subscriber that crawls: the fast one gets them all
// long before the slow one could (the paced peer's queue takes the burst
// instead of slowing the announcer to its pace), and the slow one gets
// every route without a full read.
func TestSlowV1SubscriberDoesNotHoldBackLiveUpdates(t *testing.T) {
	n, delay := slowScale()
	want := manyRoutes(7, n, "2001:db8::1")
	srv, addr := startServer(t, metalbond.ServerConfig{})
	f := startClient(t, []string{addr})
	f.mustReady(t)
	f.subscribe(t, 7)
	slow, done := slowSubscriber(t, addr, 7, want, delay)
	a := startClient(t, []string{addr})
	a.mustReady(t)
	waitFor(t, func() bool { return subscribers(srv, 7) == 2 })
	slow.SetDelay(crawlDelay)

	start := time.Now()
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		a.announce(t, want...)
	}()
	waitCount(t, f.inst, n, time.Minute)
	fast := time.Since(start)
	f.inst.WaitRoutes(t, want)
	<-announced
	had := slow.Stats.Updates.Load()
	slow.SetDelay(delay)
	if had >= int64(n) {
		t.Fatalf("the fast subscriber finished after the slow one had all %d routes: it was held back to the slow one's pace", n)
	}
	if err := wait1(t, done, 2*time.Minute); err != nil {
		t.Fatalf("slow v1 subscriber: %v (largest read %d bytes)", err, slow.Stats.MaxRead.Load())
	}
	t.Logf("fast subscriber: %d routes in %v while the slow one crawled to %d; slow one: %v in all, largest read %d bytes, longest keepalive gap %v",
		n, fast.Round(time.Millisecond), had, time.Since(start).Round(time.Millisecond), slow.Stats.MaxRead.Load(),
		time.Duration(slow.Stats.MaxKeepaliveGap.Load()).Round(time.Millisecond))
}

// subscribers returns how many peers of srv subscribe to vni.
func subscribers(srv *metalbond.Server, vni route.VNI) int {
	n := 0
	for _, p := range srv.Peers() {
		if slices.Contains(p.Subscriptions, vni) {
			n++
		}
	}
	return n
}

// BenchmarkSlowReader measures, on a table of 100,000 routes, how long a
// deployed-style v1 subscriber takes to converge, and how long a fast
// subscriber of our own takes alone and while the slow one converges. It
// also times a fast subscriber that speaks plain v1 (and is paced).
//
//	go test -run '^$' -bench SlowReader -benchtime 3x
func BenchmarkSlowReader(b *testing.B) {
	const n, vni = 100_000, 100
	const delay = 20 * time.Microsecond
	srv, addr := startServer(b, metalbond.ServerConfig{})
	want := loadTable(b, srv, vni, n)
	plainV1 := func(cfg *metalbond.ClientConfig) { cfg.GracefulRestart = -1 }
	var alone, aloneV1, slowAlone, withSlow, slowWith time.Duration
	var maxRead int64
	iters := 0
	for b.Loop() {
		iters++
		alone += timeFast(b, addr, vni, want)
		aloneV1 += timeFast(b, addr, vni, want, plainV1)

		start := time.Now()
		slow, done := slowSubscriber(b, addr, vni, want, delay)
		if err := wait1(b, done, 2*time.Minute); err != nil {
			b.Fatalf("slow v1 subscriber: %v", err)
		}
		slowAlone += time.Since(start)
		maxRead = max(maxRead, slow.Stats.MaxRead.Load())
		slow.Close()

		start = time.Now()
		slow, done = slowSubscriber(b, addr, vni, want, delay)
		for slow.Stats.Updates.Load() < n/20 {
			time.Sleep(time.Millisecond)
		}
		withSlow += timeFast(b, addr, vni, want)
		if err := wait1(b, done, 2*time.Minute); err != nil {
			b.Fatalf("slow v1 subscriber: %v", err)
		}
		slowWith += time.Since(start)
		maxRead = max(maxRead, slow.Stats.MaxRead.Load())
		slow.Close()
	}
	per := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(iters) }
	b.ReportMetric(per(slowAlone), "slow-ms")
	b.ReportMetric(per(slowWith), "slow+fast-ms")
	b.ReportMetric(per(alone), "fast-ms")
	b.ReportMetric(per(withSlow), "fast+slow-ms")
	b.ReportMetric(per(aloneV1), "fastv1-ms")
	b.ReportMetric(float64(maxRead), "max-read-B")
	b.ReportMetric(0, "ns/op")
}
