package httpapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// namingPolicy is an Authorizer that allows everything and gives each
// peer the identity "peer-N", N counting the sessions it authorized.
type namingPolicy struct {
	mu sync.Mutex
	n  int
}

type namedPerms string

func (p namedPerms) Identity() string          { return string(p) }
func (namedPerms) MayAnnounce(route.VNI) bool  { return true }
func (namedPerms) MaySubscribe(route.VNI) bool { return true }

func (a *namingPolicy) Authorize(net.Conn) (metalbond.Permissions, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	return namedPerms(fmt.Sprintf("peer-%d", a.n)), nil
}

// TestPeerNamesAndHeldRoutes checks that the API, the page and the route
// listings name peers by their HELLO name and identity, and say until when
// the routes of a peer that stopped for a restart are held.
func TestPeerNamesAndHeldRoutes(t *testing.T) {
	e := newTestbedWith(t, metalbond.ServerConfig{Authorizer: &namingPolicy{}})
	named := func(c *metalbond.ClientConfig) { c.Name = "hv-named" }
	a := e.clientWith(named, nil, rt(t, "23#10.0.1.0/24#2001:db8::1"), rt(t, "23#10.0.2.0/24#2001:db8::1"))
	e.waitRoutes(2)
	h := New(Options{Server: e.Server})

	var peers PeersJSON
	getJSON(t, h, "/api/v1/peers", &peers)
	if len(peers.Peers) != 1 || peers.Peers[0].Name != "hv-named" || peers.Peers[0].Identity != "peer-1" {
		t.Fatalf("peers: %+v, want one named hv-named with identity peer-1", peers.Peers)
	}
	var routes RoutesJSON
	getJSON(t, h, "/api/v1/routes", &routes)
	if p := routes.Routes[0].Peers; len(p) != 1 || p[0].Name != "hv-named" || p[0].HeldUntil != nil {
		t.Errorf("route from: %+v, want hv-named, not held", p)
	}

	// The client stops for a restart: its routes are held, and everything
	// says until when.
	before := time.Now()
	if err := a.StopForRestart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		getJSON(t, h, "/api/v1/peers", &peers)
		if len(peers.Peers) != 1 || peers.Peers[0].State != "STALE" {
			return fmt.Errorf("peers: %+v, want one STALE", peers.Peers)
		}
		return nil
	})
	p := peers.Peers[0]
	if p.Name != "hv-named" || p.Identity != "peer-1" || p.Routes != 2 || p.HeldRoutes != 2 || p.StaleUntil == nil || !p.StaleUntil.After(before) {
		t.Errorf("stale peer %+v (until %v), want hv-named, peer-1, 2 routes held until after %v", p, p.StaleUntil, before)
	}
	getJSON(t, h, "/api/v1/routes", &routes)
	for _, r := range routes.Routes {
		if len(r.Peers) != 1 || r.Peers[0].HeldUntil == nil || !r.Peers[0].HeldUntil.Equal(*p.StaleUntil) || r.Peers[0].Name != "hv-named" {
			t.Errorf("route %s from %+v, want hv-named held until %v", r.Prefix, r.Peers, p.StaleUntil)
		}
	}
	resp := get(t, h, "/")
	body, _ := io.ReadAll(resp.Body)
	until := p.StaleUntil.Local().Format("15:04:05")
	for _, want := range []string{">hv-named<", "held until " + until, "hv-named (" + p.Remote + ") held until " + until} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// TestClientShowsHeldRoutes checks that a client whose server went away
// lists the routes it keeps from the ended session with their end, per
// server and per route, instead of "(disconnected)".
func TestClientShowsHeldRoutes(t *testing.T) {
	e := newTestbed(t)
	e.client(nil, rt(t, "23#10.0.1.0/24#2001:db8::1"))
	e.waitRoutes(1)

	// A second server, which the subscriber uses and which then stops.
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := metalbond.NewServer(metalbond.ServerConfig{Keepalive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ctx, ln)
	}()
	defer func() { cancel(); <-served }()
	other := &testbed{tb: t, ctx: e.ctx, Server: srv, Addr: ln.Addr().String()}
	other.client(nil, rt(t, "23#10.0.9.0/24#2001:db8::9"))
	sub := other.client([]route.VNI{23})
	waitFor(t, 10*time.Second, func() error {
		if n := len(sub.Routes(23)); n != 1 {
			return fmt.Errorf("subscriber has %d routes, want 1", n)
		}
		return nil
	})
	h := New(Options{Client: sub})
	before := time.Now()
	cancel()
	<-served

	var peers PeersJSON
	waitFor(t, 10*time.Second, func() error {
		getJSON(t, h, "/api/v1/peers", &peers)
		if len(peers.Peers) != 1 || len(peers.Peers[0].Held) != 1 {
			return fmt.Errorf("client peers: %+v, want one with one held session", peers.Peers)
		}
		return nil
	})
	p := peers.Peers[0]
	if p.HeldRoutes != 1 || p.StaleUntil == nil || !p.StaleUntil.After(before) || !p.Held[0].Until.Equal(*p.StaleUntil) {
		t.Errorf("server peer %+v, want 1 route held until after %v", p, before)
	}
	var routes RoutesJSON
	getJSON(t, h, "/api/v1/routes", &routes)
	if len(routes.Routes) != 1 || len(routes.Routes[0].Peers) != 1 {
		t.Fatalf("client routes: %+v", routes)
	}
	ref := routes.Routes[0].Peers[0]
	if ref.Remote != other.Addr || ref.HeldUntil == nil || !ref.HeldUntil.Equal(p.Held[0].Until) {
		t.Errorf("route from %+v, want %s held until %v", ref, other.Addr, p.Held[0].Until)
	}
	resp := get(t, h, "/")
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "(disconnected)") || !strings.Contains(string(body), "held until "+p.StaleUntil.Local().Format("15:04:05")) {
		t.Errorf("client page does not say until when the route is held")
	}
}
