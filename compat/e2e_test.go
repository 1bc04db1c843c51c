package compat_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/route"
)

var (
	lb     = hop("2001:db8::10", mbproto.NextHopType_LOADBALANCER_TARGET, 0, 0)
	lb2    = hop("2001:db8::12", mbproto.NextHopType_LOADBALANCER_TARGET, 0, 0)
	nat    = hop("2001:db8::11", mbproto.NextHopType_NAT, 1024, 2047)
	vm     = hop("2001:db8::20", mbproto.NextHopType_STANDARD, 0, 0)
	vip    = dest("192.0.2.10/32")
	natNet = dest("2001:db8:100::/64")
)

// embedders are the two programs that embed the existing library: a
// load-balancer speaker that only announces (NewDummyClient) and a
// hypervisor agent that subscribes and receives through its callback.
type embedders struct {
	speaker, agent *mb.MetalBond
	client         *agentClient
}

// startEmbedders connects both to the route server at addr and runs them
// through subscribe, announce, receive, withdraw, the error texts of a live
// session and AddRoutesForVni. The agent then holds the route vip via lb.
func startEmbedders(t *testing.T, addr string) *embedders {
	t.Helper()
	// Two embedders on one host: each needs a name of its own for
	// graceful restart (on separate hosts, the host name is enough).
	e := &embedders{client: newAgentClient()}
	e.speaker = mb.NewMetalBond(mb.Config{KeepaliveInterval: 1, Name: "speaker"}, mb.NewDummyClient())
	e.agent = mb.NewMetalBond(mb.Config{KeepaliveInterval: 1, Name: "agent"}, e.client)
	e.client.mb.Store(e.agent)

	// The speaker waits for ESTABLISHED before it announces, as it must
	// with the existing library.
	if err := e.speaker.AddPeer(addr, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.speaker, addr, "ESTABLISHED", established)
	for _, err := range []error{e.speaker.AnnounceRoute(100, vip, lb), e.speaker.AnnounceRoute(100, natNet, nat)} {
		if err != nil {
			t.Fatal(err)
		}
	}

	// The agent subscribes at once, before its session is up: accepted.
	if err := e.agent.AddPeer(addr, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Subscribe(100); err != nil {
		t.Fatalf("Subscribe before ESTABLISHED: %v", err)
	}
	e.client.waitRoutes(t, routeKey(100, vip, lb), routeKey(100, natNet, nat))

	// Its own announcement goes to the server, not back to itself.
	if err := e.agent.AnnounceRoute(100, dest("10.100.0.0/24"), vm); err != nil {
		t.Fatal(err)
	}
	// The errors the agent ignores, on a live session.
	for _, c := range []struct {
		err  error
		want string
	}{
		{e.agent.Subscribe(100), "already subscribed to vni"},
		{e.agent.Unsubscribe(101), "already unsubscribed from vni"},
		{e.agent.AnnounceRoute(100, dest("10.100.0.0/24"), vm), "nexthop already exists"},
		{e.speaker.WithdrawRoute(100, dest("10.100.0.0/24"), vm), "destination does not exist"},
	} {
		if !errMatches(c.err, c.want) {
			t.Errorf("got %v, want an error containing %q", c.err, c.want)
		}
	}

	// A withdrawal reaches the callback.
	if err := e.speaker.WithdrawRoute(100, natNet, nat); err != nil {
		t.Fatal(err)
	}
	e.client.waitRoutes(t, routeKey(100, vip, lb))

	// AddRoutesForVni: AddRoute again for what is known in the VNI.
	n := len(e.client.callLog())
	if err := e.agent.AddRoutesForVni(100); err != nil {
		t.Fatal(err)
	}
	if got := e.client.waitCalls(t, n+1)[n:]; !slices.Equal(got, []string{"add " + routeKey(100, vip, lb)}) {
		t.Fatalf("calls after AddRoutesForVni: %q, want one add of the route held", got)
	}

	// The agent calls into MetalBond from inside AddRoute: a replay is
	// queued behind the add being made, and errors come back as usual.
	n = len(e.client.callLog())
	var inner error
	hook := func() {
		inner = e.agent.Subscribe(100)
		if err := e.agent.AddRoutesForVni(100); err != nil {
			t.Errorf("AddRoutesForVni inside AddRoute: %v", err)
		}
	}
	e.client.onAdd.Store(&hook)
	lb3 := hop("2001:db8::13", mbproto.NextHopType_LOADBALANCER_TARGET, 0, 0)
	if err := e.speaker.AnnounceRoute(100, vip, lb3); err != nil {
		t.Fatal(err)
	}
	got := e.client.waitCalls(t, n+3)[n:]
	if want := []string{"add " + routeKey(100, vip, lb3)}; len(got) != 3 || got[0] != want[0] ||
		!slices.Contains(got[1:], "add "+routeKey(100, vip, lb)) || !slices.Contains(got[1:], want[0]) {
		t.Errorf("calls after AddRoutesForVni inside AddRoute: %q, want the add, then the replay of both routes", got)
	}
	if !errMatches(inner, "already subscribed to vni") {
		t.Errorf("Subscribe inside AddRoute = %v, want already subscribed", inner)
	}
	if err := e.speaker.WithdrawRoute(100, vip, lb3); err != nil {
		t.Fatal(err)
	}
	e.client.waitRoutes(t, routeKey(100, vip, lb))
	return e
}

// shutdown shuts both down and checks that Cleanup was the agent's last
// callback.
func (e *embedders) shutdown(t *testing.T) {
	t.Helper()
	e.agent.Shutdown()
	e.speaker.Shutdown()
	calls := e.client.callLog()
	if calls[len(calls)-1] != "cleanup" || slices.Index(calls, "cleanup") != len(calls)-1 {
		t.Errorf("calls end with %q, want one cleanup, last", calls[max(0, len(calls)-3):])
	}
}

func notEstablished(s mb.ConnectionState) bool { return s != mb.ESTABLISHED }

// TestEndToEnd runs the embedders against a StartServer route server over
// loopback, restarts the server, and checks that Shutdown leaves no
// goroutine behind.
func TestEndToEnd(t *testing.T) {
	before := goleak.IgnoreCurrent()
	// The server restarts on the same port: one below the ephemeral range.
	addr := testport.Free(t, "127.0.0.1")
	server := mb.NewMetalBond(mb.Config{KeepaliveInterval: 1}, nil)
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	if err := server.StartHTTPServer("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	e := startEmbedders(t, addr)

	// The server restarts: both peers go out of ESTABLISHED and come back,
	// the speaker re-announces on its own, and the agent keeps its route
	// throughout (graceful restart: no RemoveRoute, no second AddRoute).
	n := len(e.client.callLog())
	server.Shutdown()
	waitState(t, e.agent, addr, "out of ESTABLISHED", notEstablished)
	waitState(t, e.speaker, addr, "out of ESTABLISHED", notEstablished)
	server = mb.NewMetalBond(mb.Config{KeepaliveInterval: 1}, nil)
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.agent, addr, "ESTABLISHED", established)
	waitState(t, e.speaker, addr, "ESTABLISHED", established)
	// A route announced after the restart arrives, after the one kept.
	if err := e.speaker.AnnounceRoute(100, vip, lb2); err != nil {
		t.Fatal(err)
	}
	e.client.waitRoutes(t, routeKey(100, vip, lb), routeKey(100, vip, lb2))
	if got := e.client.callLog()[n:]; !slices.Equal(got, []string{"add " + routeKey(100, vip, lb2)}) {
		t.Errorf("calls across the server restart: %q, want only the new route's add", got)
	}

	// RemovePeer withdraws what only that server sent.
	if err := e.agent.RemovePeer(addr); err != nil {
		t.Fatal(err)
	}
	e.client.waitRoutes(t)

	e.shutdown(t)
	server.Shutdown()
	goleak.VerifyNone(t, before)
}

// TestAgainstV1Server runs the embedders against a server with the
// existing implementation's wire behaviour (plain v1: no END_OF_SYNC, no
// graceful restart), through a restart of it.
func TestAgainstV1Server(t *testing.T) {
	before := goleak.IgnoreCurrent()
	addr := testport.Free(t, "127.0.0.1")
	server := startV1Server(t, addr)
	e := startEmbedders(t, addr)

	// A table larger than the deployed reader's buffer: the speaker's
	// writes must be paced so that no read of the server fills it, here
	// and when the speaker re-sends everything after the restart.
	const many = 2000
	for i := range many {
		d := dest(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}).String() + "/32")
		if err := e.speaker.AnnounceRoute(200, d, lb); err != nil {
			t.Fatal(err)
		}
	}
	waitCount(t, server, 200, many)

	// Without graceful restart the agent's route goes with the server and
	// comes back when the speaker has re-announced it to the new one.
	server.stop()
	waitState(t, e.agent, addr, "out of ESTABLISHED", notEstablished)
	waitState(t, e.speaker, addr, "out of ESTABLISHED", notEstablished)
	e.client.waitRoutes(t)
	server = startV1Server(t, addr)
	waitState(t, e.agent, addr, "ESTABLISHED", established)
	waitState(t, e.speaker, addr, "ESTABLISHED", established)
	e.client.waitRoutes(t, routeKey(100, vip, lb))
	waitCount(t, server, 200, many)
	if n := server.overruns.Load(); n != 0 {
		t.Errorf("%d reads would have broken the deployed reader", n)
	}

	e.shutdown(t)
	server.stop()
	goleak.VerifyNone(t, before)
}

// waitCount waits up to 30 s until the v1 server holds n routes in vni.
func waitCount(t *testing.T, s *v1Server, vni route.VNI, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.count(vni) != n {
		if time.Now().After(deadline) {
			t.Fatalf("v1 server holds %d routes in VNI %d, want %d (%d overruns)", s.count(vni), vni, n, s.overruns.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
