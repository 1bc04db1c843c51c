package faulttest

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// TestClientFlapping restarts clients in a loop, killed (SIGKILL) or stopped
// (SIGTERM) at random moments, often before their session is established
// or their announcements are through, some of them announcing fewer routes
// every other time. Afterwards every client and the server hold exactly
// the expected routes (no stale route survives on the server) and the
// server is back to its baseline.
func TestClientFlapping(t *testing.T) {
	t.Parallel()
	sz := sizes()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	logf(t, "seed %d", seed)

	srv := startServer(t, serverOpts{keepalive: 2})
	servers := []string{srv.addr}
	sRoutes := append(hostRoutes(100, "10.10.0.1", 40, "2001:db8::10"), hostRoutes(200, "10.10.1.1", 40, "2001:db8::10")...)
	k := startClient(t, clientOpts{name: "fault-fl-k", servers: servers, subs: []route.VNI{100, 200}})
	s := startClient(t, clientOpts{name: "fault-fl-s", servers: servers, subs: []route.VNI{100}, routes: sRoutes})
	var flappers []*client
	var full [][]route.Route
	for i := range sz.flappers {
		rs := hostRoutes(100, fmt.Sprintf("10.20.%d.1", i), 30, fmt.Sprintf("2001:db8::20:%d", i))
		full = append(full, rs)
		flappers = append(flappers, startClient(t, clientOpts{
			name: fmt.Sprintf("fault-fl-f%d", i), servers: servers, subs: []route.VNI{100}, routes: rs}))
	}
	all := func() [][]route.Route {
		held := [][]route.Route{sRoutes}
		for _, f := range flappers {
			held = append(held, f.opts.routes)
		}
		return held
	}
	converge := func() {
		t.Helper()
		start := time.Now()
		for _, c := range append([]*client{k, s}, flappers...) {
			waitRoutes(t, c.spec.name, c.http, expect(c.opts.subs, c.opts.routes, all()...), 30*time.Second)
		}
		waitRoutes(t, "server", srv.http, newRouteSet(all()...), 30*time.Second)
		logf(t, "every peer converged in %v", time.Since(start).Round(time.Millisecond))
	}
	converge()
	base := baseline(t, srv.http)
	logf(t, "server baseline: %s", base)

	kills, stops := 0, 0
	start := time.Now()
	for cycle := range sz.flapCycles {
		last := cycle == sz.flapCycles-1
		for i, f := range flappers {
			if rng.IntN(2) == 0 {
				f.kill9()
				kills++
			} else {
				// A clean stop; it may still be announcing.
				f.signal(syscall.SIGTERM, 15*time.Second)
				stops++
			}
			// Odd flappers announce a third less every other cycle;
			// everyone is back to the full set on the last one.
			rs := full[i]
			if i%2 == 1 && cycle%2 == 0 && !last {
				rs = rs[:20]
			}
			f.announce(t, rs)
			time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
			f.restart()
			// Up for 0 to 400 ms: sometimes not even established.
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		}
	}
	logf(t, "%d flaps (%d SIGKILL, %d SIGTERM) of %d clients in %v", kills+stops, kills, stops, len(flappers),
		time.Since(start).Round(time.Millisecond))
	converge()
	u, dur := waitBaseline(t, srv.http, base, 30*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)
}
