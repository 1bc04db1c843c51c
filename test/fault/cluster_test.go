package faulttest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// server is a metalbond server process.
type server struct {
	*proc
	addr string // MetalBond address
	http string // its --http address
}

// serverOpts configure a server process; zero fields take the command's
// defaults.
type serverOpts struct {
	addr            string        // MetalBond address; default a free loopback port
	keepalive       int           // --keepalive in seconds: the handshake timeout and hold time are 2.5 times that
	syncDelay       time.Duration // --sync-delay
	gracefulRestart time.Duration // --graceful-restart
}

// startServer starts a server and waits until its HTTP endpoint answers.
func startServer(t testing.TB, o serverOpts) *server {
	t.Helper()
	if o.addr == "" {
		o.addr = freePort(t, "127.0.0.1")
	}
	host, _, _ := net.SplitHostPort(o.addr)
	http := freePort(t, host)
	args := []string{"server", "--listen", o.addr, "--http", http}
	if o.keepalive > 0 {
		args = append(args, "--keepalive", strconv.Itoa(o.keepalive))
	}
	if o.syncDelay > 0 {
		args = append(args, "--sync-delay", o.syncDelay.String())
	}
	if o.gracefulRestart > 0 {
		args = append(args, "--graceful-restart", o.gracefulRestart.String())
	}
	p := startProc(t, procSpec{name: "server", args: args, http: http})
	p.waitHTTP(30 * time.Second)
	return &server{proc: p, addr: o.addr, http: http}
}

// syncDelay is the --sync-delay of the servers that tests restart: shorter
// than the command's 10 s in the short run, to keep it short, but long
// enough for every client to be back (they retry after 0.25 to 1.5 s).
// The long run uses the default.
func syncDelay() time.Duration {
	if long() {
		return 0
	}
	return 5 * time.Second
}

// client is a metalbond client process, configured through a file so that
// it can be restarted with other announcements.
type client struct {
	*proc
	opts   clientOpts
	config string // path of its --config file
	http   string // its --http address
}

type clientOpts struct {
	name     string // --name, which identifies it to servers
	unnamed  bool   // give no --name (name is then only used in logs)
	servers  []string
	subs     []route.VNI
	routes   []route.Route // announced
	httpHost string        // host of its --http address; default 127.0.0.1
	netns    string        // network namespace to run in
	extra    []string      // more arguments
}

// startClient starts a client and waits until its HTTP endpoint answers.
func startClient(t testing.TB, o clientOpts) *client {
	t.Helper()
	if o.httpHost == "" {
		o.httpHost = "127.0.0.1"
	}
	c := &client{opts: o, config: filepath.Join(t.TempDir(), o.name+".yaml")}
	if o.netns != "" {
		// Every port is free in a namespace of the test's own.
		c.http = net.JoinHostPort(o.httpHost, strconv.Itoa(20000+rand.IntN(30000)))
	} else {
		c.http = freePort(t, o.httpHost)
	}
	c.writeConfig(t)
	c.proc = startProc(t, procSpec{
		name:  o.name,
		netns: o.netns,
		args:  append([]string{"client", "--config", c.config}, o.extra...),
		http:  c.http,
	})
	c.waitHTTP(30 * time.Second)
	return c
}

// writeConfig writes the client's configuration file.
func (c *client) writeConfig(t testing.TB) {
	t.Helper()
	var b strings.Builder
	list := func(key string, vals []string) {
		if len(vals) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s:\n", key)
		for _, v := range vals {
			fmt.Fprintf(&b, "  - %q\n", v)
		}
	}
	list("server", c.opts.servers)
	var subs []string
	for _, v := range c.opts.subs {
		subs = append(subs, v.String())
	}
	list("subscribe", subs)
	var routes []string
	for _, r := range c.opts.routes {
		routes = append(routes, r.String())
	}
	list("announce", routes)
	if !c.opts.unnamed {
		fmt.Fprintf(&b, "name: %q\n", c.opts.name)
	}
	fmt.Fprintf(&b, "http: %q\n", c.http)
	if err := os.WriteFile(c.config, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// announce changes what the client announces from its next start on.
func (c *client) announce(t testing.TB, routes []route.Route) {
	t.Helper()
	c.opts.routes = routes
	c.writeConfig(t)
}

// hostRoutes returns n host routes in vni, from first upwards, all through
// nexthop.
func hostRoutes(vni route.VNI, first string, n int, nexthop string) []route.Route {
	a := netip.MustParseAddr(first)
	nh := route.NextHop{Address: netip.MustParseAddr(nexthop)}
	out := make([]route.Route, 0, n)
	for range n {
		out = append(out, route.Route{VNI: vni, Prefix: netip.PrefixFrom(a, a.BitLen()), NextHop: nh})
		a = a.Next()
	}
	return out
}

// expect returns the table a client subscribed to subs and announcing own
// should have when the server holds the routes of held: every held route
// of a subscribed VNI, except those for a (VNI, prefix) the client
// announces itself (loop prevention).
func expect(subs []route.VNI, own []route.Route, held ...[]route.Route) routeSet {
	type key struct {
		vni    route.VNI
		prefix netip.Prefix
	}
	mine := make(map[key]bool)
	for _, r := range own {
		mine[key{r.VNI, r.Prefix}] = true
	}
	s := make(routeSet)
	for _, l := range held {
		for _, r := range l {
			if slices.Contains(subs, r.VNI) && !mine[key{r.VNI, r.Prefix}] {
				s[r] = struct{}{}
			}
		}
	}
	return s
}

// without returns rs without the routes of drop.
func without(rs []route.Route, drop ...[]route.Route) []route.Route {
	d := newRouteSet(drop...)
	var out []route.Route
	for _, r := range rs {
		if _, ok := d[r]; !ok {
			out = append(out, r)
		}
	}
	return out
}

// dialRawRetry dials like dialRaw, retrying for up to timeout while the
// server is not (yet) there.
func dialRawRetry(t testing.TB, addr string, hello wire.Hello, timeout time.Duration) *rawPeer {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := dialRaw(addr, hello)
		if err == nil {
			t.Cleanup(p.close)
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logf logs a line stamped with the time of day, for the figures of
// docs/fault-testing.md.
func logf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("[%s] "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
