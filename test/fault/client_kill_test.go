package faulttest

import (
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// updatesReceived is a client's count of UPDATE messages received from
// servers, over all its sessions.
func updatesReceived(t testing.TB, c *client) int {
	t.Helper()
	return int(mustScrape(t, c.http)["metalbond_session_updates_received_total"])
}

// holdSteady checks for d that the table of c stays exactly want and that
// c receives no UPDATE at all: what the graceful restart promises to
// survivors while a peer is away.
func holdSteady(t testing.TB, c *client, want routeSet, d time.Duration) {
	t.Helper()
	before := updatesReceived(t, c)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n := routeCount(mustScrape(t, c.http)); n != len(want) {
			t.Fatalf("%s: %d routes while the peer is away, want %d", c.spec.name, n, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkRoutes(t, c.spec.name, c.http, want)
	if n := updatesReceived(t, c) - before; n != 0 {
		t.Fatalf("%s received %d UPDATEs while the peer was away, want none", c.spec.name, n)
	}
}

// TestClientKill kills clients with SIGKILL: an announcer that comes back
// announcing a little less and a little more, a subscriber, and finally an
// announcer for good. Survivors must keep every route without a flap
// (graceful restart), see exactly the changed routes once the restarted
// client has re-announced, lose the routes of the dead one when the
// server's graceful-restart time runs out, and the server must return to
// its baseline.
func TestClientKill(t *testing.T) {
	t.Parallel()
	// The server keeps a vanished client's routes for 5 s in the short
	// run, for the default 60 s in the long one.
	gr := 5 * time.Second
	if long() {
		gr = 0
	}
	srv := startServer(t, serverOpts{keepalive: 2, gracefulRestart: gr})
	servers := []string{srv.addr}
	kOwn := hostRoutes(100, "10.1.0.1", 1, "2001:db8::1")
	dRoutes := append(hostRoutes(100, "10.2.0.1", 100, "2001:db8::2"), hostRoutes(200, "10.2.1.1", 20, "2001:db8::2")...)
	eRoutes := hostRoutes(100, "10.3.0.1", 50, "2001:db8::3")
	k := startClient(t, clientOpts{name: "fault-ck-k", servers: servers, subs: []route.VNI{100, 200}, routes: kOwn})
	d := startClient(t, clientOpts{name: "fault-ck-d", servers: servers, subs: []route.VNI{100}, routes: dRoutes})
	e := startClient(t, clientOpts{name: "fault-ck-e", servers: servers, subs: []route.VNI{100}, routes: eRoutes})
	converge := func(dNow []route.Route) {
		t.Helper()
		for _, c := range []*client{k, d, e} {
			want := expect(c.opts.subs, c.opts.routes, kOwn, dNow, eRoutes)
			dur, err := awaitRoutes(c.http, want, 3*time.Second)
			if err != nil {
				// Not fatal, so that the survivors are checked too: the
				// restarted client keeps routes of its former self (see
				// TestRestartedClientLosesItsWithdrawnRoutes).
				t.Errorf("%s: %v", c.spec.name, err)
				continue
			}
			logf(t, "%s converged to %d routes in %v", c.spec.name, len(want), dur.Round(time.Millisecond))
		}
	}
	converge(dRoutes)
	base := baseline(t, srv.http)
	logf(t, "server baseline: %s", base)

	// An announcer dies and comes back with 10 routes fewer and 5 new.
	kBefore, eBefore := updatesReceived(t, k), updatesReceived(t, e)
	d.kill9()
	logf(t, "killed %s", d.spec.name)
	holdSteady(t, k, expect(k.opts.subs, kOwn, kOwn, dRoutes, eRoutes), time.Second)
	dropped := dRoutes[:10]
	added := hostRoutes(100, "10.2.2.1", 5, "2001:db8::2")
	dNew := append(without(dRoutes, dropped), added...)
	d.announce(t, dNew)
	restarted := time.Now()
	d.restart()
	converge(dNew)
	logf(t, "survivors converged %v after the restart of %s", time.Since(restarted).Round(time.Millisecond), d.spec.name)
	for _, c := range []struct {
		c      *client
		before int
	}{{k, kBefore}, {e, eBefore}} {
		// Exactly the 10 REMOVEs and 5 ADDs: nothing else flapped.
		if n := updatesReceived(t, c.c) - c.before; n != len(dropped)+len(added) {
			t.Errorf("%s received %d UPDATEs over the restart of %s, want %d", c.c.spec.name, n, d.spec.name, len(dropped)+len(added))
		}
	}
	u, dur := waitBaseline(t, srv.http, base, 20*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)

	// A subscriber dies: the others keep its route, and it gets the whole
	// table again when it is back.
	dBefore := updatesReceived(t, d)
	k.kill9()
	logf(t, "killed %s", k.spec.name)
	holdSteady(t, e, expect(e.opts.subs, eRoutes, kOwn, dNew, eRoutes), time.Second)
	k.restart()
	converge(dNew)
	if n := updatesReceived(t, d) - dBefore; n != 0 {
		t.Errorf("%s received %d UPDATEs over the restart of %s, want none", d.spec.name, n, k.spec.name)
	}
	u, dur = waitBaseline(t, srv.http, base, 20*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)

	// An announcer dies for good: its routes go when the server's graceful
	// restart time runs out, and its session's goroutines are gone.
	d.kill9()
	killed := time.Now()
	for _, c := range []*client{k, e} {
		want := expect(c.opts.subs, c.opts.routes, kOwn, eRoutes)
		waitRoutes(t, c.spec.name, c.http, want, 90*time.Second)
		logf(t, "%s dropped the routes of the dead %s %v after the kill", c.spec.name, d.spec.name, time.Since(killed).Round(time.Millisecond))
	}
	gone := base
	gone.Goroutines -= 2 // reader and writer of the dead session
	gone.FDs--
	u, dur = waitBaseline(t, srv.http, gone, 20*time.Second)
	logf(t, "server back to baseline minus one session after %v: %s", dur.Round(time.Millisecond), u)
}
