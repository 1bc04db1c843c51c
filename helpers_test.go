package metalbond_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/route"
)

// startServer runs a server on a loopback port until the test ends.
func startServer(t testing.TB, cfg metalbond.ServerConfig) (*metalbond.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, cfg), ln.Addr().String()
}

// relisten listens on addr again after a server there stopped. The kernel
// has been seen to refuse the port for a moment after the old listener
// closed (once in many CI runs), so it retries for a few seconds.
func relisten(t testing.TB, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveOn runs a server on ln and returns it; the server stops when the
// test ends or when stop is called through stopServer.
func serveOn(t testing.TB, ln net.Listener, cfg metalbond.ServerConfig) *metalbond.Server {
	t.Helper()
	srv, err := metalbond.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stopsMu.Lock()
	stops[srv] = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	stopsMu.Unlock()
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

// waitSubscribers waits until srv has handled n subscriptions to vni:
// a client is ready once its session is up, before its SUBSCRIBE arrives.
func waitSubscribers(t testing.TB, srv *metalbond.Server, vni route.VNI, n int) {
	t.Helper()
	waitFor(t, func() bool {
		for _, v := range srv.VNIs() {
			if v.VNI == vni {
				return v.Subscribers == n
			}
		}
		return n == 0
	})
}

var clientSeq atomic.Int64

var (
	stopsMu sync.Mutex
	stops   = map[*metalbond.Server]func(){}
)

func stopServer(srv *metalbond.Server) {
	stopsMu.Lock()
	stop := stops[srv]
	delete(stops, srv)
	stopsMu.Unlock()
	if stop != nil {
		stop()
	}
}

// testClient is a client with a recording installer, run until the test
// ends or stop is called.
type testClient struct {
	*metalbond.Client
	inst *testinstall.Recorder
	stop func()
}

func startClient(t testing.TB, servers []string, mod ...func(*metalbond.ClientConfig)) *testClient {
	t.Helper()
	return startSubscribed(t, servers, nil, mod...)
}

// startSubscribed starts a client subscribed to vnis before it runs, so that
// its first session asks for all of them at once. Subscribing after the
// start lets a session come up, and its first table arrive, between two
// subscriptions.
func startSubscribed(t testing.TB, servers []string, vnis []route.VNI, mod ...func(*metalbond.ClientConfig)) *testClient {
	t.Helper()
	rec := testinstall.New()
	cfg := metalbond.ClientConfig{
		Servers:   servers,
		Installer: rec,
		RetryMin:  20 * time.Millisecond,
		RetryMax:  100 * time.Millisecond,
		// Test clients share a host: give each its own name, as separate
		// hypervisors have.
		Name: fmt.Sprintf("%s-%d", t.Name(), clientSeq.Add(1)),
	}
	for _, f := range mod {
		f(&cfg)
	}
	c, err := metalbond.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, vni := range vnis {
		if err := c.Subscribe(context.Background(), vni); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	tc := &testClient{Client: c, inst: rec, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(tc.stop)
	return tc
}

// restart stops the client as for a restart: its routes stay on the
// servers (StopForRestart).
func (c *testClient) stopForRestart(t testing.TB) {
	t.Helper()
	if err := c.StopForRestart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.stop()
}

func (c *testClient) mustReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("client not ready: %v", err)
	}
}

func (c *testClient) subscribe(t testing.TB, vni route.VNI) {
	t.Helper()
	if err := c.Subscribe(context.Background(), vni); err != nil {
		t.Fatal(err)
	}
}

func (c *testClient) announce(t testing.TB, rs ...route.Route) {
	t.Helper()
	for _, r := range rs {
		if err := c.Announce(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *testClient) withdraw(t testing.TB, rs ...route.Route) {
	t.Helper()
	for _, r := range rs {
		if err := c.Withdraw(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRoute(t testing.TB, s string) route.Route {
	t.Helper()
	r, err := route.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// manyRoutes returns n distinct /32 routes in vni through nexthop.
func manyRoutes(vni route.VNI, n int, nexthop string) []route.Route {
	out := make([]route.Route, n)
	for i := range out {
		out[i] = route.Route{
			VNI:     vni,
			Prefix:  netipPrefix(10<<24|uint32(i), 32),
			NextHop: route.NextHop{Address: netipMustAddr(nexthop)},
		}
	}
	return out
}

// connected returns how many peers of srv have a session (Peers also lists
// the peers whose routes are held for graceful restart, as STALE).
func connected(srv *metalbond.Server) int {
	n := 0
	for _, p := range srv.Peers() {
		if p.State != "STALE" {
			n++
		}
	}
	return n
}
