package metalbond_test

import (
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

func TestConnectionLimits(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{Limits: metalbond.Limits{MaxConnectionsPerIP: 2}})
	dialRaw(t, addr)
	dialRaw(t, addr)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	(&rawPeer{conn: conn, r: wire.NewReader(conn)}).expectClosed(t)
	if n := srv.Stats().Refused["connections_per_ip"]; n != 1 {
		t.Fatalf("refused connections_per_ip = %d, want 1", n)
	}
}

func TestRouteAndSubscriptionLimits(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{Limits: metalbond.Limits{
		MaxRoutesPerPeer: 3, MaxRoutesPerVNI: 4, MaxSubscriptionsPerPeer: 1,
	}})
	p := dialRaw(t, addr)
	rs := manyRoutes(50, 4, "2001:db8::1")
	for _, r := range rs {
		p.send(wire.Update{Action: wire.ActionAdd, Route: r})
	}
	p.send(wire.Subscribe{VNI: 51})
	p.send(wire.Subscribe{VNI: 50}) // over the subscription limit: ignored
	waitFor(t, func() bool { return srv.Stats().Refused["subscriptions_per_peer"] == 1 })
	if got := len(srv.Routes(50)); got != 3 {
		t.Fatalf("server holds %d routes of the peer, want 3 (its limit)", got)
	}
	if n := srv.Stats().Refused["routes_per_peer"]; n != 1 {
		t.Fatalf("refused routes_per_peer = %d, want 1", n)
	}
	// Withdrawing frees room under the per-peer limit.
	p.send(wire.Update{Action: wire.ActionRemove, Route: rs[0]})
	p.send(wire.Update{Action: wire.ActionAdd, Route: rs[3]})
	waitFor(t, func() bool { return len(srv.Routes(50)) == 3 && srv.Routes(50)[2].Route == rs[3] })

	// A second peer fills the VNI to its limit of 4; the fifth route is refused.
	q := dialRaw(t, addr)
	extra := []route.Route{mustRoute(t, "50#192.0.2.1/32#2001:db8::2"), mustRoute(t, "50#192.0.2.2/32#2001:db8::2")}
	for _, r := range extra {
		q.send(wire.Update{Action: wire.ActionAdd, Route: r})
	}
	waitFor(t, func() bool { return srv.Stats().Refused["routes_per_vni"] == 1 })
	if got := len(srv.Routes(50)); got != 4 {
		t.Fatalf("VNI holds %d routes, want 4 (its limit)", got)
	}
	// The sessions are still up.
	p.send(wire.Subscribe{VNI: 51})
	p.expectSilence(t, 50*time.Millisecond)
	if len(srv.Peers()) != 2 {
		t.Fatal("a limit closed a session")
	}
}
