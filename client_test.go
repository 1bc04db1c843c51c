package metalbond_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/route"
)

func TestClientReconnectResyncs(t *testing.T) {
	// The server restarts on the same port: one below the ephemeral range.
	ln, err := net.Listen("tcp", testport.Free(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := serveOn(t, ln, metalbond.ServerConfig{})

	// Subscriptions and announcements made before any server is up are
	// kept and sent once one is. These clients speak plain v1: without
	// graceful restart they drop a vanished server's routes at once.
	a := startClient(t, []string{addr}, plainV1)
	b := startClient(t, []string{addr}, plainV1)
	ra := mustRoute(t, "8#10.8.0.0/16#2001:db8::a")
	rb := mustRoute(t, "8#10.9.0.0/16#2001:db8::b")
	a.subscribe(t, 8)
	b.subscribe(t, 8)
	a.announce(t, ra)
	b.announce(t, rb)
	a.inst.WaitRoutes(t, []route.Route{rb})
	b.inst.WaitRoutes(t, []route.Route{ra})

	// Restart the server on the same address: both clients reconnect,
	// re-send everything, and converge again.
	stopServer(srv)
	a.inst.WaitRoutes(t, nil)
	ln = relisten(t, addr)
	srv = serveOn(t, ln, metalbond.ServerConfig{})
	a.inst.WaitRoutes(t, []route.Route{rb})
	b.inst.WaitRoutes(t, []route.Route{ra})
	if got := len(srv.Routes(8)); got != 2 {
		t.Fatalf("server holds %d routes after resync, want 2", got)
	}
}

func TestTwoServersRouteInstalledOnce(t *testing.T) {
	srv1, addr1 := startServer(t, metalbond.ServerConfig{})
	_, addr2 := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr1, addr2}, plainV1)
	sub.subscribe(t, 12)
	a := startClient(t, []string{addr1, addr2})
	r := mustRoute(t, "12#10.12.0.0/16#2001:db8::c")
	a.announce(t, r)
	sub.inst.WaitRoutes(t, []route.Route{r})
	waitFor(t, func() bool { return len(sub.Routes(12)) == 1 && len(sub.Routes(12)[0].Peers) == 2 })

	// One server going away keeps the route (the other still has it).
	stopServer(srv1)
	waitFor(t, func() bool { return len(sub.Routes(12)) == 1 && len(sub.Routes(12)[0].Peers) == 1 })
	sub.inst.WaitRoutes(t, []route.Route{r})

	a.withdraw(t, r)
	sub.inst.WaitRoutes(t, nil)
	adds, removes, problems := sub.inst.Counts()
	if adds != 1 || removes != 1 || len(problems) > 0 {
		t.Fatalf("installer saw %d adds, %d removes, problems %v; want exactly one of each", adds, removes, problems)
	}
}

func TestLoopPrevention(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	a := startClient(t, []string{addr})
	b := startClient(t, []string{addr})
	a.subscribe(t, 2)
	b.subscribe(t, 2)
	// Both announce the same prefix (an anycast address); each installs only
	// the other's nexthop, never a route for a prefix it announces itself.
	ra := mustRoute(t, "2#10.2.0.1/32#2001:db8::a")
	rb := mustRoute(t, "2#10.2.0.1/32#2001:db8::b")
	other := mustRoute(t, "2#10.2.0.2/32#2001:db8::b")
	a.announce(t, ra)
	b.announce(t, rb, other)
	a.inst.WaitRoutes(t, []route.Route{other})
	b.inst.WaitRoutes(t, nil)
	// A raw subscription echoes a's own route back (only NAT routes are
	// not); the client ignores it.
	waitFor(t, func() bool { return a.Stats().LoopsPrevented > 0 || len(a.inst.Routes()) == 1 })
}

// plainV1 turns a client's protocol extensions off.
func plainV1(c *metalbond.ClientConfig) { c.GracefulRestart = -1 }

func TestGracePeriodKeepsRoutesAcrossServerRestart(t *testing.T) {
	// The server restarts on the same port: one below the ephemeral range.
	ln, err := net.Listen("tcp", testport.Free(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := serveOn(t, ln, metalbond.ServerConfig{})
	withGrace := func(c *metalbond.ClientConfig) { c.GracePeriod = 3 * time.Second; plainV1(c) }
	sub := startClient(t, []string{addr}, withGrace)
	sub.subscribe(t, 6)
	a := startClient(t, []string{addr}, plainV1)
	kept := mustRoute(t, "6#10.6.0.0/16#2001:db8::1")
	gone := mustRoute(t, "6#10.7.0.0/16#2001:db8::1")
	a.announce(t, kept, gone)
	sub.inst.WaitRoutes(t, []route.Route{kept, gone})

	// Restart the server; meanwhile the announcer drops one route. The
	// subscriber keeps both through the outage, re-learns the first from
	// the new server without a flap, and drops the second at the end of
	// the grace period.
	stopServer(srv)
	a.withdraw(t, gone)
	ln = relisten(t, addr)
	serveOn(t, ln, metalbond.ServerConfig{})
	sub.inst.WaitRoutes(t, []route.Route{kept})
	adds, removes, _ := sub.inst.Counts()
	if adds != 2 || removes != 1 {
		t.Fatalf("installer saw %d adds and %d removes, want 2 and 1 (no flap)", adds, removes)
	}
}

func TestClientValidatesInput(t *testing.T) {
	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Subscribe(ctx, 1<<24); !errors.Is(err, metalbond.ErrInvalidVNI) {
		t.Errorf("Subscribe(1<<24) = %v, want ErrInvalidVNI", err)
	}
	bad := route.Route{VNI: 1, Prefix: netipPrefix(10<<24|1, 8)}
	if err := c.Announce(ctx, bad); !errors.Is(err, metalbond.ErrInvalidRoute) {
		t.Errorf("Announce(%v) = %v, want ErrInvalidRoute", bad, err)
	}
	if _, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{"nocolon"}}); err == nil {
		t.Error("NewClient accepted a server address without a port")
	}
	if _, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{"127.0.0.1:1", "127.0.0.1:1"}}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("NewClient with a server listed twice = %v, want an error naming it", err)
	}
}
