package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// testbed is a real route server on loopback with clients connected to it.
type testbed struct {
	tb     testing.TB
	ctx    context.Context
	Server *metalbond.Server
	Addr   string
	wg     sync.WaitGroup
}

// newTestbed starts a server; everything stops at the end of the test.
func newTestbed(tb testing.TB) *testbed {
	tb.Helper()
	return newTestbedWith(tb, metalbond.ServerConfig{})
}

// newTestbedWith starts a server with cfg (Keepalive 1 s if unset).
func newTestbedWith(tb testing.TB, cfg metalbond.ServerConfig) *testbed {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.Keepalive == 0 {
		cfg.Keepalive = time.Second
	}
	srv, err := metalbond.NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e := &testbed{tb: tb, ctx: ctx, Server: srv, Addr: ln.Addr().String()}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		srv.Serve(ctx, ln)
	}()
	tb.Cleanup(func() {
		cancel()
		e.wg.Wait()
	})
	return e
}

// client starts a client that subscribes to subs and announces routes, and
// waits until it is established.
func (e *testbed) client(subs []route.VNI, routes ...route.Route) *metalbond.Client {
	e.tb.Helper()
	return e.clientWith(nil, subs, routes...)
}

// clientWith is client with a configuration changed by mod, if not nil.
func (e *testbed) clientWith(mod func(*metalbond.ClientConfig), subs []route.VNI, routes ...route.Route) *metalbond.Client {
	e.tb.Helper()
	cfg := metalbond.ClientConfig{Servers: []string{e.Addr}, Keepalive: time.Second, RetryMin: 10 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := metalbond.NewClient(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	for _, v := range subs {
		if err := c.Subscribe(e.ctx, v); err != nil {
			e.tb.Fatal(err)
		}
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		c.Run(e.ctx)
	}()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		e.tb.Fatalf("client not ready: %v", err)
	}
	for _, r := range routes {
		if err := c.Announce(ctx, r); err != nil {
			e.tb.Fatal(err)
		}
	}
	return c
}

// waitRoutes waits until the server holds n routes in total.
func (e *testbed) waitRoutes(n int) {
	e.tb.Helper()
	waitFor(e.tb, 60*time.Second, func() error {
		total := 0
		for _, v := range e.Server.VNIs() {
			total += v.Routes
		}
		if total != n {
			return fmt.Errorf("server has %d routes, want %d", total, n)
		}
		return nil
	})
}

// waitFor retries check until it returns nil or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rt builds a route from command-line syntax.
func rt(tb testing.TB, s string) route.Route {
	tb.Helper()
	r, err := route.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// manyRoutes returns n routes of vni, /32s from 10.0.0.0 upwards, spread
// over four nexthops.
func manyRoutes(vni route.VNI, n int) []route.Route {
	out := make([]route.Route, n)
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range out {
		a := base
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + uint32(i)
		addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		nh := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(1 + i%4)})
		out[i] = route.Route{VNI: vni, Prefix: netip.PrefixFrom(addr, 32), NextHop: route.NextHop{Address: nh}}
	}
	return out
}

// get performs a GET on h and returns the response.
func get(tb testing.TB, h http.Handler, target string) *http.Response {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Result()
}

// getJSON performs a GET on h, checks for 200 and JSON, and decodes the
// body into v.
func getJSON(tb testing.TB, h http.Handler, target string, v any) {
	tb.Helper()
	resp := get(tb, h, target)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s: %s", target, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("GET %s: Content-Type %q", target, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		tb.Fatalf("GET %s: %v\n%s", target, err, body)
	}
}
