package metalbond_test

// Tests against peers that read like the deployed v1 implementation
// (internal/deployedv1, docs/pacing.md): every read must hold whole messages
// and fewer than 65,535 bytes. Each runs over loopback and over a veth path
// with a 1500-byte MTU and segmentation offloads off, where TCP cuts the
// byte stream as a datacenter network does.
//
//	go test -run DeployedV1 -v
//	go test -run '^$' -bench SlowReader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/internal/testnet"
	"github.com/metalbond/metalbond/route"
)

// deployedDelay is the deployed reader's processing time per UPDATE in
// these tests (a log line and a netlink call).
const deployedDelay = 20 * time.Microsecond

// path is how a test's peers reach each other.
type path struct {
	name   string
	listen func(t testing.TB) net.Listener
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
}

// paths returns loopback and, where the machine allows (root, ethtool), a
// 1500-byte-MTU veth path between two network namespaces.
func paths() []path {
	var d net.Dialer
	return []path{
		{name: "loopback", listen: func(t testing.TB) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}, dial: d.DialContext},
		{name: "mtu1500"},
	}
}

// setUp fills in a veth path's functions (they need the test).
func (p path) setUp(t testing.TB) path {
	if p.listen != nil {
		return p
	}
	n := testnet.New(t)
	p.listen = func(t testing.TB) net.Listener { return n.Listen(t, 0) }
	p.dial = n.Dialer()
	return p
}

// deployedSubscriber connects a deployed-style v1 client over p to addr and
// subscribes it to vni. Its result arrives on the returned channel when it
// fails or the test ends.
func deployedSubscriber(t testing.TB, p path, addr string, vni route.VNI, delay time.Duration) (*deployedv1.Peer, <-chan error) {
	t.Helper()
	return deployedSubscriberCfg(t, p, addr, vni, deployedv1.Config{Delay: delay, Keepalive: 2 * time.Second})
}

// deployedSubscriberCfg is deployedSubscriber with the peer's whole Config.
func deployedSubscriberCfg(t testing.TB, p path, addr string, vni route.VNI, cfg deployedv1.Config) (*deployedv1.Peer, <-chan error) {
	t.Helper()
	conn, err := p.dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	peer := deployedv1.New(conn, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		done <- peer.RunClient(ctx, vni)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	return peer, done
}

// waitTable waits until peer holds exactly want, failing on the peer's
// first failure.
func waitTable(t testing.TB, peer *deployedv1.Peer, failed <-chan error, want []route.Route, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for peer.Len() != len(want) || !sameRoutes(peer.Routes(), want) {
		select {
		case err := <-failed:
			t.Fatalf("deployed-style peer failed with %d routes: %v (largest read %d bytes)", peer.Len(), err, peer.Stats.MaxRead.Load())
		case <-peer.Changed():
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("deployed-style peer: %d routes after %v, want %d exactly", peer.Len(), timeout, len(want))
		}
	}
	if a := peer.Stats.Anomalies.Load(); a != 0 {
		t.Errorf("%d duplicate ADDs or REMOVEs of routes not held", a)
	}
}

func sameRoutes(got map[route.Route]bool, want []route.Route) bool {
	if len(got) != len(want) {
		return false
	}
	for _, r := range want {
		if !got[r] {
			return false
		}
	}
	return true
}

// TestDeployedV1SubscriberConverges: a deployed-style client subscribes to
// a VNI of 2,000, 10,000 and 100,000 routes and gets each table exactly,
// every read whole messages below 65,535 bytes.
func TestDeployedV1SubscriberConverges(t *testing.T) {
	sizes := []int{2_000, 10_000, 100_000}
	if testing.Short() {
		sizes = []int{2_000, 10_000, 20_000}
	}
	for _, p := range paths() {
		t.Run(p.name, func(t *testing.T) {
			p := p.setUp(t)
			ln := p.listen(t)
			srv := serveOn(t, ln, metalbond.ServerConfig{})
			for i, n := range sizes {
				vni := route.VNI(100 + i)
				want := loadTable(t, srv, vni, n)
				start := time.Now()
				peer, failed := deployedSubscriber(t, p, ln.Addr().String(), vni, deployedDelay)
				waitTable(t, peer, failed, want, 2*time.Minute)
				t.Logf("%d routes in %v (floor %v), %d reads, largest %d bytes", n, time.Since(start).Round(time.Millisecond),
					time.Duration(n)*deployedDelay, peer.Stats.Reads.Load(), peer.Stats.MaxRead.Load())
			}
		})
	}
}

// TestDeployedV1SubscriberLiveUpdates: while a deployed-style client
// receives a table of 10,000 routes, an announcer adds 5,000 and withdraws
// 2,000; after it has converged, a burst of 5,000 more and 1,000
// withdrawals. It ends with the exact table.
func TestDeployedV1SubscriberLiveUpdates(t *testing.T) {
	const vni = 9
	for _, p := range paths() {
		t.Run(p.name, func(t *testing.T) {
			p := p.setUp(t)
			ln := p.listen(t)
			addr := ln.Addr().String()
			srv := serveOn(t, ln, metalbond.ServerConfig{})
			table := loadTable(t, srv, vni, 10_000)
			a := startClient(t, []string{addr}, func(c *metalbond.ClientConfig) { c.Dial = p.dial })
			a.mustReady(t)
			peer, failed := deployedSubscriber(t, p, addr, vni, deployedDelay)
			waitFor(t, func() bool { return peer.Len() >= 1_000 })

			during := manyRoutes(vni, 5_000, "2001:db8::2")
			after := manyRoutes(vni, 10_000, "2001:db8::3")[5_000:]
			a.announce(t, during...)
			a.withdraw(t, during[:2_000]...)
			want := append(slices.Clone(table), during[2_000:]...)
			waitTable(t, peer, failed, want, time.Minute)

			a.announce(t, after...)
			a.withdraw(t, during[2_000:3_000]...)
			want = append(append(slices.Clone(table), during[3_000:]...), after...)
			waitTable(t, peer, failed, want, time.Minute)
			t.Logf("%d updates, %d reads, largest %d bytes", peer.Stats.Updates.Load(), peer.Stats.Reads.Load(), peer.Stats.MaxRead.Load())
		})
	}
}

// deployedServer accepts one connection on ln and runs a deployed-style v1
// server on it. established is closed when the handshake is done.
func deployedServer(t testing.TB, ln net.Listener, delay time.Duration) (peer chan *deployedv1.Peer, established chan struct{}, failed chan error) {
	t.Helper()
	peer, established, failed = make(chan *deployedv1.Peer, 1), make(chan struct{}), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		conn, err := ln.Accept()
		if err != nil {
			failed <- err
			return
		}
		p := deployedv1.New(conn, deployedv1.Config{Delay: delay, Keepalive: 5 * time.Second})
		peer <- p
		failed <- p.RunServer(ctx, established)
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-exited
	})
	return peer, established, failed
}

// TestDeployedV1ServerGetsAnnouncements: our client announces 20,000 routes
// to a deployed-style v1 server as soon as the session is up, then bursts of
// announcements and withdrawals; the server ends with the exact table and
// never misses a keepalive (its timer ends the session after 2.5 s of
// silence, which fails the test).
func TestDeployedV1ServerGetsAnnouncements(t *testing.T) {
	const vni = 200
	for _, p := range paths() {
		t.Run(p.name, func(t *testing.T) {
			p := p.setUp(t)
			ln := p.listen(t)
			peers, established, failed := deployedServer(t, ln, deployedDelay)
			first := manyRoutes(vni, 20_000, "2001:db8::2")
			c := startClient(t, []string{ln.Addr().String()}, func(cfg *metalbond.ClientConfig) {
				cfg.Keepalive = time.Second
				cfg.Dial = p.dial
			})
			c.announce(t, first...)
			var peer *deployedv1.Peer
			select {
			case peer = <-peers:
			case err := <-failed:
				t.Fatal(err)
			}
			select {
			case <-established:
			case err := <-failed:
				t.Fatalf("deployed-style server: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no handshake")
			}
			start := time.Now()
			waitTable(t, peer, failed, first, time.Minute)
			t.Logf("20,000 announcements on connect in %v (floor %v)", time.Since(start).Round(time.Millisecond), 20_000*deployedDelay)

			want := slices.Clone(first)
			for i := range 3 {
				burst := manyRoutes(vni, 5_000*(i+1), fmt.Sprintf("2001:db8::%d", 10+i))[5_000*i:]
				c.announce(t, burst...)
				c.withdraw(t, want[:1_000]...)
				want = append(want[1_000:], burst...)
			}
			waitTable(t, peer, failed, want, time.Minute)
			t.Logf("%d updates, %d reads, largest %d bytes, longest keepalive gap %v", peer.Stats.Updates.Load(),
				peer.Stats.Reads.Load(), peer.Stats.MaxRead.Load(), time.Duration(peer.Stats.MaxKeepaliveGap.Load()).Round(time.Millisecond))
		})
	}
}

// TestDeployedV1SubscriberBreaksWithoutPacing checks the emulation against
// the writer it guards against: a server that does not pace (-no-pace-v1)
// breaks a deployed-style client on a table of 100,000 routes.
func TestDeployedV1SubscriberBreaksWithoutPacing(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{NoPaceV1: true})
	loadTable(t, srv, 1, 100_000)
	_, failed := deployedSubscriber(t, paths()[0], addr, 1, deployedDelay)
	select {
	case err := <-failed:
		if !errors.Is(err, deployedv1.ErrFullRead) && !errors.Is(err, deployedv1.ErrSplitMessage) {
			t.Fatalf("err = %v, want a full read or a split message", err)
		}
		t.Logf("as expected: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the deployed-style client survived an unpaced table of 100,000 routes")
	}
}

// slowScale returns the table size and per-message delay of the back-pressure
// tests: 100,000 routes at 20 µs per message, which takes the deployed
// reader about two seconds; a fifth of the routes under -short.
func slowScale() (routes int, delay time.Duration) {
	if testing.Short() {
		return 20_000, deployedDelay
	}
	return 100_000, deployedDelay
}

// loadTable gives srv n routes in vni, as if another server of a cluster
// had them.
func loadTable(t testing.TB, srv *metalbond.Server, vni route.VNI, n int) []route.Route {
	t.Helper()
	rs := manyRoutes(vni, n, "2001:db8::1")
	ext := srv.NewExternalSource(fmt.Sprintf("table-%d", vni))
	for _, r := range rs {
		if err := ext.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// timeFast subscribes a client library subscriber to vni and returns how
// long it took to get all of want.
func timeFast(t testing.TB, addr string, vni route.VNI, want []route.Route, mod ...func(*metalbond.ClientConfig)) time.Duration {
	t.Helper()
	c := startClient(t, []string{addr}, mod...)
	c.mustReady(t)
	start := time.Now()
	c.subscribe(t, vni)
	waitCount(t, c.inst, len(want), 60*time.Second)
	d := time.Since(start)
	c.inst.WaitRoutes(t, want)
	c.stop()
	return d
}

// waitCount waits until the recorder holds n routes.
func waitCount(t testing.TB, r *testinstall.Recorder, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got := r.Len()
		if got == n {
			return
		}
		select {
		case <-r.Changed():
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatalf("%d routes after %v, want %d", got, timeout, n)
		}
	}
}
