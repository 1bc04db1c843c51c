package metalbond_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

func TestGracefulRestartOfServer(t *testing.T) {
	// The server restarts on the same port: one below the ephemeral range.
	ln, err := net.Listen("tcp", testport.Free(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	cfg := metalbond.ServerConfig{SyncDelay: 2 * time.Second}
	srv := serveOn(t, ln, cfg)
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 40)
	a := startClient(t, []string{addr})
	kept := mustRoute(t, "40#10.40.0.0/16#2001:db8::1")
	gone := mustRoute(t, "40#10.41.0.0/16#2001:db8::1")
	a.announce(t, kept, gone)
	sub.inst.WaitRoutes(t, []route.Route{kept, gone})

	// The server goes away and comes back empty; meanwhile one route is
	// withdrawn. The subscriber keeps both routes through the outage, and
	// drops the withdrawn one as soon as the new server's table is complete
	// (END_OF_SYNC) — long before the 60 s graceful restart time.
	stopServer(srv)
	a.withdraw(t, gone)
	start := time.Now()
	ln = relisten(t, addr)
	serveOn(t, ln, cfg)
	// WaitRoutes gives up after 10 s, long before the end of the graceful
	// restart time would remove the route: it goes with the resync.
	sub.inst.WaitRoutes(t, []route.Route{kept})
	t.Logf("stale route removed %v after the restart", time.Since(start))
	adds, removes, problems := sub.inst.Counts()
	if adds != 2 || removes != 1 || len(problems) > 0 {
		t.Fatalf("installer saw %d adds, %d removes (%v), want 2 and 1: no flap", adds, removes, problems)
	}
}

func TestGracefulRestartOfClient(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 41)
	named := func(c *metalbond.ClientConfig) { c.Name = "hv-restarting" }
	a := startClient(t, []string{addr}, named)
	kept := mustRoute(t, "41#10.40.0.0/16#2001:db8::1")
	gone := mustRoute(t, "41#10.41.0.0/16#2001:db8::1")
	a.announce(t, kept, gone)
	sub.inst.WaitRoutes(t, []route.Route{kept, gone})

	// The client restarts and announces only one of its routes: the
	// server kept its routes meanwhile, and withdraws the other once the
	// client says it has re-announced everything.
	a.stopForRestart(t)
	waitFor(t, func() bool { return srv.Stats().StaleRoutes == 2 })
	stale := 0
	for _, p := range srv.Peers() {
		if p.State == "STALE" {
			stale++
			if p.Name != "hv-restarting" || p.Routes != 2 || !p.StaleUntil.After(time.Now()) {
				t.Errorf("stale peer listed as %q with %d routes until %v, want hv-restarting, 2, in the future", p.Name, p.Routes, p.StaleUntil)
			}
		}
	}
	if stale != 1 {
		t.Errorf("Peers lists %d stale peers, want 1", stale)
	}
	a2 := startClient(t, []string{addr}, named)
	a2.announce(t, kept)
	sub.inst.WaitRoutes(t, []route.Route{kept})
	waitFor(t, func() bool { return srv.Stats().StaleRoutes == 0 })
	for _, p := range srv.Peers() {
		if p.State == "STALE" {
			t.Errorf("Peers still lists a stale peer after the restart: %+v", p)
		}
	}
	adds, removes, problems := sub.inst.Counts()
	if adds != 2 || removes != 1 || len(problems) > 0 {
		t.Fatalf("installer saw %d adds, %d removes (%v), want 2 and 1: no flap", adds, removes, problems)
	}
}

func TestGracefulRestartTimeExpires(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{GracefulRestart: time.Second})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 42)
	a := startClient(t, []string{addr})
	r := mustRoute(t, "42#10.42.0.0/16#2001:db8::1")
	a.announce(t, r)
	sub.inst.WaitRoutes(t, []route.Route{r})
	a.stopForRestart(t)
	waitFor(t, func() bool { return srv.Stats().StaleRoutes == 1 })
	// The client does not come back: its routes go after the server's
	// graceful restart time (1 s here, shorter than the client's 60 s ask).
	sub.inst.WaitRoutes(t, nil)
	if srv.Stats().StaleRoutes != 0 {
		t.Fatal("stale routes left after expiry")
	}
}

// syncRecorder is a recorder that also notes when it was told the client is
// synced, and how many routes it had then.
type syncRecorder struct {
	*testinstall.Recorder
	syncedWith chan int
}

func (s syncRecorder) Synced() { s.syncedWith <- s.Len() }

func TestSyncNotifier(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{SyncDelay: -1})
	a := startClient(t, []string{addr})
	rs := manyRoutes(43, 500, "2001:db8::1")
	a.announce(t, rs...)
	a.announce(t, manyRoutes(44, 20, "2001:db8::1")...)
	waitFor(t, func() bool { return len(srv.Routes(43))+len(srv.Routes(44)) == 520 })

	sr := syncRecorder{Recorder: testinstall.New(), syncedWith: make(chan int, 2)}
	// Subscribed to both before it connects: subscribing after the start
	// would let the session come up, and VNI 43 sync, before it asks for 44.
	startSubscribed(t, []string{addr}, []route.VNI{43, 44}, func(c *metalbond.ClientConfig) { c.Installer = sr })
	select {
	case n := <-sr.syncedWith:
		if n != 520 {
			t.Fatalf("Synced called with %d routes installed, want all 520", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Synced not called")
	}
	select {
	case <-sr.syncedWith:
		t.Fatal("Synced called twice")
	case <-time.After(100 * time.Millisecond):
	}
}

// With two servers, losing one does not leave its routes stale: the other,
// synced server's view is complete. (In a cluster, withdrawals of the lost
// server's own clients then arrive through the others within the lease.)
func TestLostServerRoutesDropWhenAnotherIsSynced(t *testing.T) {
	srv1, addr1 := startServer(t, metalbond.ServerConfig{SyncDelay: -1})
	_, addr2 := startServer(t, metalbond.ServerConfig{SyncDelay: -1})
	sub := startClient(t, []string{addr1, addr2})
	sub.subscribe(t, 45)
	// Only server 1 has this route (its announcer talks to server 1 only).
	a := startClient(t, []string{addr1})
	r := mustRoute(t, "45#10.45.0.0/16#2001:db8::1")
	a.announce(t, r)
	sub.inst.WaitRoutes(t, []route.Route{r})
	waitFor(t, func() bool {
		for _, p := range sub.Peers() {
			if p.State != "ESTABLISHED" {
				return false
			}
		}
		return true
	})
	stopServer(srv1)
	// Server 2 is established and synced and does not have the route: it
	// goes at once, not after the 60 s graceful restart time.
	sub.inst.WaitRoutes(t, nil)
}

// TestGracefulRestartZeroIsDefault: in ClientConfig, GracefulRestart 0
// means DefaultGracefulRestart (the HELLO asks for 60 s), and only
// GracefulRestartOff turns the extensions off (a plain v1 HELLO). The
// command line's --graceful-restart 0 maps to GracefulRestartOff.
func TestGracefulRestartZeroIsDefault(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gr       time.Duration
		features bool
		seconds  uint32
	}{
		{"zero", 0, true, uint32(metalbond.DefaultGracefulRestart / time.Second)},
		{"off", metalbond.GracefulRestartOff, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{ln.Addr().String()}, GracefulRestart: tc.gr, Name: "hv"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			conn, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			m, err := wire.NewReader(conn).ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			h, ok := m.(wire.Hello)
			if !ok {
				t.Fatalf("first message %T, want HELLO", m)
			}
			if (h.Features != 0) != tc.features || h.GracefulRestart != tc.seconds {
				t.Errorf("HELLO %+v: want features %v, graceful restart %d s", h, tc.features, tc.seconds)
			}
		})
	}
}

// TestPeerRoutesAcrossServerRestart: a client counts, per server, the
// routes it holds from it (PeerInfo.Routes: /api/v1/peers, the page,
// metalbond_peer_routes), across two restarts of the server: while the
// routes are kept from the ended session, while both the kept session and
// the new one hold them (each route counted once), and after the resync.
func TestPeerRoutesAcrossServerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", testport.Free(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := serveOn(t, ln, metalbond.ServerConfig{SyncDelay: metalbond.NoSyncDelay})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 40)
	a := startClient(t, []string{addr})
	routes := manyRoutes(40, 3, "2001:db8::1")
	a.announce(t, routes...)
	sub.inst.WaitRoutes(t, routes)
	peerRoutes := func() int { return sub.Peers()[0].Routes }
	if n := peerRoutes(); n != 3 {
		t.Fatalf("before the restart: peer routes = %d, want 3", n)
	}

	// Down: the routes are kept from the ended session.
	stopServer(srv)
	waitFor(t, func() bool { return sub.Peers()[0].State != "ESTABLISHED" })
	if n := peerRoutes(); n != 3 {
		t.Errorf("server down, routes kept: peer routes = %d, want 3", n)
	}

	// Back, holding END_OF_SYNC: the kept session and the new one both
	// hold every route.
	srv = serveOn(t, relisten(t, addr), metalbond.ServerConfig{SyncDelay: time.Hour})
	heldBy := func(n int) bool {
		rs := sub.Routes(40)
		for _, r := range rs {
			if len(r.Peers) != n {
				return false
			}
		}
		return len(rs) == 3
	}
	waitFor(t, func() bool { return heldBy(2) })
	if n := peerRoutes(); n != 3 {
		t.Errorf("routes held by the kept and the new session: peer routes = %d, want 3", n)
	}

	// Again, now without holding END_OF_SYNC: the client resyncs and the
	// routes are held by the new session alone.
	stopServer(srv)
	serveOn(t, relisten(t, addr), metalbond.ServerConfig{SyncDelay: metalbond.NoSyncDelay})
	waitFor(t, func() bool {
		p := sub.Peers()[0]
		rs := sub.Routes(40)
		return heldBy(1) && rs[0].Peers[0] == p.ID && p.State == "ESTABLISHED"
	})
	if n := peerRoutes(); n != 3 {
		t.Errorf("after the resync: peer routes = %d, want 3", n)
	}
}
