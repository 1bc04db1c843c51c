package metalbond_test

import (
	"context"
	"errors"
	"net"
	"strings"
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

// TestIPv4NexthopRefused: the underlay is IPv6, so the server refuses an
// UPDATE whose nexthop is an IPv4 (or IPv4-mapped) address, as it refuses
// an update over a limit: ignored, counted, session kept. The client
// library refuses to announce one.
func TestIPv4NexthopRefused(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	p := dialRaw(t, addr)
	bad := []route.Route{mustRoute(t, "23#10.0.90.0/24#10.1.1.1"), mustRoute(t, "23#10.0.91.0/24#::ffff:10.1.1.1")}
	good := mustRoute(t, "23#10.0.92.0/24#2001:db8::1")
	for _, r := range bad {
		p.send(wire.Update{Action: wire.ActionAdd, Route: r})
	}
	p.send(wire.Update{Action: wire.ActionRemove, Route: bad[0]})
	p.send(wire.Update{Action: wire.ActionAdd, Route: good})
	// Updates of a session are handled in order: once the good one is
	// held, the bad ones were handled.
	waitFor(t, func() bool { return len(srv.Routes(23)) == 1 })
	if got := srv.Routes(23)[0].Route; got != good {
		t.Errorf("server holds %s, want only %s", got, good)
	}
	if n := srv.Stats().Refused["nexthop_not_ipv6"]; n != 3 {
		t.Errorf("refused nexthop_not_ipv6 = %d, want 3", n)
	}
	if n := srv.Stats().ProtocolErrors["invalid"]; n != 0 {
		t.Errorf("protocol errors invalid = %d, want 0", n)
	}
	if len(srv.Peers()) != 1 {
		t.Error("the refusal closed the session")
	}

	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range bad {
		err := c.Announce(context.Background(), r)
		if !errors.Is(err, metalbond.ErrInvalidRoute) || !strings.Contains(err.Error(), "the underlay is IPv6") {
			t.Errorf("Announce(%s) = %v, want ErrInvalidRoute: the underlay is IPv6", r, err)
		}
	}
}
