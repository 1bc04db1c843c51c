package metalbond_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSubscribeBeforeAndAfterAnnounce(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	early := startClient(t, []string{addr})
	early.subscribe(t, 23)
	early.mustReady(t)

	announcer := startClient(t, []string{addr})
	r1 := mustRoute(t, "23#10.0.23.0/24#2001:db8::1")
	r2 := mustRoute(t, "23#10.0.24.0/24#2001:db8::1")
	announcer.announce(t, r1, r2)
	early.inst.WaitRoutes(t, []route.Route{r1, r2})

	late := startClient(t, []string{addr})
	late.subscribe(t, 23)
	late.inst.WaitRoutes(t, []route.Route{r1, r2})

	announcer.withdraw(t, r1)
	early.inst.WaitRoutes(t, []route.Route{r2})
	late.inst.WaitRoutes(t, []route.Route{r2})

	// A different VNI sees nothing.
	other := startClient(t, []string{addr})
	other.subscribe(t, 24)
	other.mustReady(t)
	announcer.announce(t, mustRoute(t, "24#10.1.0.0/16#2001:db8::2"))
	other.inst.WaitRoutes(t, []route.Route{mustRoute(t, "24#10.1.0.0/16#2001:db8::2")})
	early.inst.WaitRoutes(t, []route.Route{r2})
}

func TestNextHopTypesAndECMP(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 7)
	sub.mustReady(t)

	a := startClient(t, []string{addr})
	b := startClient(t, []string{addr})
	routes := []route.Route{
		mustRoute(t, "7#10.0.0.0/24#2001:db8::1"),
		mustRoute(t, "7#10.0.0.0/24#2001:db8::2"), // ECMP: same prefix, second nexthop
		mustRoute(t, "7#192.0.2.1/32#2001:db8::3#NAT#1000#1999"),
		mustRoute(t, "7#192.0.2.1/32#2001:db8::3#NAT#2000#2999"), // another port slice
		mustRoute(t, "7#198.51.100.0/24#2001:db8::4#LB"),
		mustRoute(t, "7#2001:db8:77::/64#2001:db8::5"),
	}
	a.announce(t, routes[0], routes[2], routes[4])
	b.announce(t, routes[1], routes[3], routes[5])
	sub.inst.WaitRoutes(t, routes)

	b.withdraw(t, routes[1])
	sub.inst.WaitRoutes(t, []route.Route{routes[0], routes[2], routes[3], routes[4], routes[5]})
}

func TestNATRoutesNotEchoedToAnnouncer(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	// A raw v1 peer announces a NAT and an LB route, then subscribes: it
	// gets its LB route back, not its NAT route.
	p := dialRaw(t, addr)
	nat := mustRoute(t, "9#10.9.0.0/24#2001:db8::2#NAT#1000#2000")
	lb := mustRoute(t, "9#10.9.1.0/24#2001:db8::3#LB")
	p.send(wire.Update{Action: wire.ActionAdd, Route: nat})
	p.send(wire.Update{Action: wire.ActionAdd, Route: lb})
	waitFor(t, func() bool { return len(srv.Routes(9)) == 2 })
	p.send(wire.Subscribe{VNI: 9})
	got := p.expectUpdate(t)
	if got.Route != lb || got.Action != wire.ActionAdd {
		t.Fatalf("got %v %v, want ADD %v", got.Action, got.Route, lb)
	}
	p.expectSilence(t, 200*time.Millisecond)
}

func TestClientDeathWithdrawsItsRoutes(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 5)
	a := startClient(t, []string{addr}, plainV1)
	rs := manyRoutes(5, 100, "2001:db8::a")
	a.announce(t, rs...)
	sub.inst.WaitRoutes(t, rs)
	a.stop()
	sub.inst.WaitRoutes(t, nil)
}

func TestSubscribeTwiceIsHarmless(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	a := startClient(t, []string{addr})
	r := mustRoute(t, "3#10.3.0.0/16#2001:db8::1")
	a.announce(t, r)
	p := dialRaw(t, addr)
	p.send(wire.Subscribe{VNI: 3})
	p.send(wire.Subscribe{VNI: 3})
	if u := p.expectUpdate(t); u.Route != r {
		t.Fatalf("got %v, want %v", u.Route, r)
	}
	p.expectSilence(t, 200*time.Millisecond)
}

func TestProtocolErrorClosesOnlyThatConnection(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 1)
	sub.mustReady(t)

	bad := []struct {
		name  string
		bytes []byte
		kind  string
	}{
		{"bad version", []byte{2, 0, 0, 2}, "bad_version"},
		{"unknown type", []byte{1, 0, 0, 9}, "unknown_type"},
		{"too large", []byte{1, 0x10, 0, 5}, "too_large"},
		{"malformed body", []byte{1, 0, 2, 5, 0xff, 0xff}, "malformed"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := dialRaw(t, addr)
			before := srv.Stats().ProtocolErrors[tc.kind]
			if _, err := p.conn.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			p.expectClosed(t)
			waitFor(t, func() bool { return srv.Stats().ProtocolErrors[tc.kind] == before+1 })
		})
	}
	t.Run("message before handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		frame, _ := wire.AppendFrame(nil, wire.Subscribe{VNI: 1})
		conn.Write(frame)
		(&rawPeer{conn: conn, r: wire.NewReader(conn)}).expectClosed(t)
	})
	// The server still serves everyone else.
	a := startClient(t, []string{addr})
	r := mustRoute(t, "1#10.0.0.0/8#2001:db8::1")
	a.announce(t, r)
	sub.inst.WaitRoutes(t, []route.Route{r})
}

func TestStuckSubscriberDoesNotDelayOthers(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{WriteTimeout: 2 * time.Second})
	// A peer that subscribes and then never reads.
	stuck := dialRaw(t, addr)
	stuck.send(wire.Subscribe{VNI: 4})
	fast := startClient(t, []string{addr})
	fast.subscribe(t, 4)
	fast.mustReady(t)

	a := startClient(t, []string{addr})
	rs := manyRoutes(4, 50000, "2001:db8::4")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range rs {
		if err := a.Announce(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	fast.inst.WaitRoutes(t, rs)
	t.Logf("50,000 routes reached the reading subscriber in %v despite a stuck one", time.Since(start))
}

func TestServerShutdownClosesSessions(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	c := startClient(t, []string{addr})
	c.mustReady(t)
	stopServer(srv)
	waitFor(t, func() bool { return !c.Ready() })
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestObserveFanout(t *testing.T) {
	var mu sync.Mutex
	var seen []time.Duration
	srv, addr := startServer(t, metalbond.ServerConfig{ObserveFanout: func(d time.Duration) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
	}})
	subs := []*testClient{startClient(t, []string{addr}), startClient(t, []string{addr})}
	for _, s := range subs {
		s.subscribe(t, 60)
	}
	// Only updates that reach subscribers are sampled: routes that arrive
	// before a SUBSCRIBE is handled go out as its initial table.
	waitSubscribers(t, srv, 60, 2)
	a := startClient(t, []string{addr})
	rs := manyRoutes(60, 640, "2001:db8::1") // 10 samples of 64
	a.announce(t, rs...)
	for _, s := range subs {
		s.inst.WaitRoutes(t, rs)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 10 })
	for _, d := range seen {
		if d <= 0 || d > 10*time.Second {
			t.Fatalf("implausible fan-out time %v", d)
		}
	}
}

func TestMessageCountersSurviveSessions(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	p := dialRaw(t, addr)
	p.send(wire.Subscribe{VNI: 1})
	p.send(wire.Update{Action: wire.ActionAdd, Route: mustRoute(t, "1#10.0.0.0/8#2001:db8::1")})
	waitFor(t, func() bool { return srv.Stats().MessagesReceived["UPDATE"] == 1 })
	p.conn.Close()
	waitFor(t, func() bool { return len(srv.Peers()) == 0 })
	st := srv.Stats()
	if st.MessagesReceived["UPDATE"] != 1 || st.MessagesReceived["SUBSCRIBE"] != 1 || st.MessagesReceived["HELLO"] != 1 {
		t.Fatalf("after the session ended: %v", st.MessagesReceived)
	}
}

// TestSharedTableFollowsChanges: subscribers share the VNI's encoded table
// and fan-out batches by reference; a subscriber that comes after changes
// gets the table as it is then, and everyone ends exact.
func TestSharedTableFollowsChanges(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	announcer := startClient(t, []string{addr})
	first := manyRoutes(30, 3000, "2001:db8::1")
	announcer.announce(t, first...)

	var subs []*testClient
	for range 3 { // the first builds the shared table, the others reuse it
		c := startClient(t, []string{addr})
		c.subscribe(t, 30)
		c.inst.WaitRoutes(t, first)
		subs = append(subs, c)
	}

	// Changes in batches large enough to be shared among the subscribers.
	announcer.withdraw(t, first[:1000]...)
	more := manyRoutes(30, 2000, "2001:db8::2")
	announcer.announce(t, more...)
	want := append(slices.Clone(first[1000:]), more...)
	for _, c := range subs {
		c.inst.WaitRoutes(t, want)
	}
	late := startClient(t, []string{addr})
	late.subscribe(t, 30)
	late.inst.WaitRoutes(t, want)
	for _, c := range append(subs, late) {
		if _, removes, problems := c.inst.Counts(); len(problems) > 0 {
			t.Errorf("removes %d, problems %v", removes, problems)
		}
	}
}
