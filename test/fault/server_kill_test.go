package faulttest

import (
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// bulkAnnouncer connects a raw peer that announces routes (and speaks our
// extensions, so the server keeps its routes over a restart of the peer).
// The large table comes from a raw peer rather than a client process: the
// command takes time quadratic in the number of --announce routes to start
// (see TestClientStartupWithManyAnnouncements).
func bulkAnnouncer(t testing.TB, addr, name string, routes []route.Route, timeout time.Duration) *rawPeer {
	t.Helper()
	b := dialRawRetry(t, addr, ourHello(name), timeout)
	b.read()
	b.keepalive(time.Second)
	if err := b.update(wire.ActionAdd, routes); err != nil {
		t.Fatalf("%s: announce: %v", name, err)
	}
	if err := b.send(wire.EndOfSync{Announcements: true}); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// countWatch samples the number of routes of a process every 50 ms and
// remembers the smallest, to show that a restart removed nothing that was
// still wanted.
type countWatch struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	min  int
	n    int // samples
}

func watchCount(addr string) *countWatch {
	w := &countWatch{stop: make(chan struct{}), min: -1}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			m, err := scrape(addr)
			if err != nil {
				continue
			}
			n := routeCount(m)
			w.mu.Lock()
			if w.min < 0 || n < w.min {
				w.min = n
			}
			w.n++
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *countWatch) done() (min, samples int) {
	close(w.stop)
	w.wg.Wait()
	return w.min, w.n
}

// TestServerKill kills the server with SIGKILL while it sends the full
// table of a large VNI to subscribers, restarts it on the same port, and
// checks that every peer converges to the exact table, that clients kept
// their routes meanwhile (the table only shrank by what was withdrawn while
// the server was down), and that the new server's usage matches the old
// one's baseline.
func TestServerKill(t *testing.T) {
	t.Parallel()
	sz := sizes()
	srv := startServer(t, serverOpts{keepalive: 2, syncDelay: syncDelay()})
	servers := []string{srv.addr}

	big := hostRoutes(100, "10.128.0.0", sz.bigVNI, "2001:db8::b0")
	b := bulkAnnouncer(t, srv.addr, "fault-sk-bulk", big, 10*time.Second)
	aRoutes := append(hostRoutes(100, "10.1.0.1", 50, "2001:db8::a"), hostRoutes(200, "10.1.1.1", 20, "2001:db8::a")...)
	a := startClient(t, clientOpts{name: "fault-sk-a", servers: servers, subs: []route.VNI{100}, routes: aRoutes})
	k1 := startClient(t, clientOpts{name: "fault-sk-k1", servers: servers, subs: []route.VNI{100, 200}})
	initial := waitRoutes(t, "k1", k1.http, expect(k1.opts.subs, nil, big, aRoutes), 2*time.Minute)
	logf(t, "initial sync of %d routes took %v", len(big)+len(aRoutes), initial.Round(time.Millisecond))
	// What a resync after a restart may take follows from what the initial
	// sync took on this machine just now, however loaded it is: the server
	// takes the table again and sends it to twice as many subscribers, after
	// the sync delay. A fixed minute failed on a busy machine whose initial
	// sync took 35 s.
	resync := syncDelay() + max(time.Minute, 4*initial)
	base := baseline(t, srv.http)
	logf(t, "server baseline: %s", base)

	bNow, aNow := big, aRoutes
	cycles := []string{"subscriber sync"}
	if long() {
		cycles = append(cycles, "announcer upload", "subscriber sync")
	}
	for i, phase := range cycles {
		// Something to withdraw while the server is down, each time.
		bNext := bNow[len(bNow)/50:]
		aNext := aNow[:len(aNow)-5]
		if i == 0 {
			aNext = hostRoutes(100, "10.1.0.1", 45, "2001:db8::a") // and all of VNI 200
		}
		var k2 *client
		var r *rawPeer
		var received0 int
		switch phase {
		case "subscriber sync":
			// A raw subscriber reads a fifth of the table and stops: the
			// server is certainly in the middle of its sync when it dies.
			r = dialRawRetry(t, srv.addr, ourHello("fault-sk-r"), 10*time.Second)
			r.keepalive(time.Second)
			if err := r.send(wire.Subscribe{VNI: 100}); err != nil {
				t.Fatal(err)
			}
			if err := r.readUpdates(len(bNow)/5, 30*time.Second); err != nil {
				t.Fatalf("raw subscriber: %v", err)
			}
			// And a client starting now is probably in the middle of
			// its own.
			k2 = startClient(t, clientOpts{name: "fault-sk-k2", servers: servers, subs: []route.VNI{100}})
			deadline := time.Now().Add(30 * time.Second)
			for routeCount(mustScrape(t, k2.http)) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("k2 received nothing")
				}
				time.Sleep(5 * time.Millisecond)
			}
		case "announcer upload":
			// Kill while the bulk announcer re-announces everything
			// (to a server that already has it all).
			b.close()
			b = dialRawRetry(t, srv.addr, ourHello("fault-sk-bulk"), 10*time.Second)
			b.read()
			received0 = int(mustScrape(t, srv.http)["metalbond_updates_received_total"])
			go b.update(wire.ActionAdd, bNow) // fails when the server dies
			deadline := time.Now().Add(30 * time.Second)
			for int(mustScrape(t, srv.http)["metalbond_updates_received_total"]) == received0 {
				if time.Now().After(deadline) {
					t.Fatal("the server received nothing")
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		watch := watchCount(k1.http)
		received := int(mustScrape(t, srv.http)["metalbond_updates_received_total"])
		srv.kill9()
		killed := time.Now()
		if k2 != nil {
			logf(t, "cycle %d (%s): killed the server; k2 had received %d of %d routes, the raw subscriber read %d",
				i, phase, routeCount(mustScrape(t, k2.http)), len(expect(k2.opts.subs, nil, bNow, aNow)), len(bNow)/5)
		} else {
			logf(t, "cycle %d (%s): killed the server after it had received %d of the %d UPDATEs", i, phase, received-received0, len(bNow))
		}
		if r != nil {
			r.close()
		}
		b.close()

		// While it is down, the small announcer restarts with fewer routes;
		// the bulk announcer will come back with fewer too.
		a.stop()
		a.announce(t, aNext)
		a.restart()
		time.Sleep(200 * time.Millisecond)
		srv.restart()
		restarted := time.Now()
		logf(t, "server restarted %v after the kill", restarted.Sub(killed).Round(time.Millisecond))
		b = bulkAnnouncer(t, srv.addr, "fault-sk-bulk", bNext, 10*time.Second)
		bNow, aNow = bNext, aNext

		// Until END_OF_SYNC (10 s after the server's start) the clients
		// keep every route they had; then they drop those withdrawn
		// meanwhile. All are watched at once, to time each.
		k1Want := expect(k1.opts.subs, nil, bNow, aNow)
		targets := []struct {
			c    *client
			want routeSet
		}{{k1, k1Want}, {a, expect(a.opts.subs, aNow, bNow)}}
		if k2 != nil {
			targets = append(targets, struct {
				c    *client
				want routeSet
			}{k2, expect(k2.opts.subs, nil, bNow, aNow)})
		}
		errs := make([]error, len(targets))
		took := make([]time.Duration, len(targets))
		var wg sync.WaitGroup
		for j, tg := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = awaitRoutes(tg.c.http, tg.want, resync)
				took[j] = time.Since(restarted)
			}()
		}
		wg.Wait()
		min, samples := watch.done()
		for j, tg := range targets {
			if errs[j] != nil {
				t.Fatalf("%s: %v", tg.c.spec.name, errs[j])
			}
			logf(t, "%s converged to %d routes %v after the restart (%v after the kill)", tg.c.spec.name, len(tg.want),
				took[j].Round(time.Millisecond), (took[j] + restarted.Sub(killed)).Round(time.Millisecond))
		}
		logf(t, "smallest table of k1 in %d samples during the restart: %d routes, final %d", samples, min, len(k1Want))
		if min < len(k1Want) {
			t.Errorf("k1's table shrank to %d routes during the restart, below the %d it ends with: routes flapped", min, len(k1Want))
		}
		if k2 != nil {
			k2.stop()
		}
		if r != nil {
			// The raw subscriber comes back and gets exactly the table.
			r2 := dialRawRetry(t, srv.addr, ourHello("fault-sk-r"), 10*time.Second)
			r2.read()
			r2.keepalive(time.Second)
			r2.send(wire.Subscribe{VNI: 100})
			r2.waitTable(t, "raw subscriber", expect([]route.VNI{100}, nil, bNow, aNow), resync)
			r2.close()
		}
		u, dur := waitBaseline(t, srv.http, base, 30*time.Second)
		logf(t, "cycle %d: new server at the old one's baseline after %v: %s", i, dur.Round(time.Millisecond), u)
	}
}
