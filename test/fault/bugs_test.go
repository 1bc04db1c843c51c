package faulttest

// Tests written for bugs the fault tests found, each reduced to its core.
// They fail while the bug is there; docs/fault-testing.md describes each
// bug, its cause and the fix (made or proposed).

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// inProcessServer runs a server on a loopback port until the test ends.
func inProcessServer(t *testing.T, cfg metalbond.ServerConfig) (*metalbond.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metalbond.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// TestRestartedClientLosesItsWithdrawnRoutes: a client that comes back
// after a crash (graceful restart) and no longer announces a route it
// announced before must not keep that route itself. The server sends the
// returning client, on SUBSCRIBE, the routes its former session still holds
// as stale; when the client's END_OF_SYNC released them, the server
// withdrew them from everyone but the returning client (graceful.go,
// releaseStale passed p as the peer to leave out), so the client kept, and
// would have installed, a route to itself that nobody announced. Fixed in
// 1b92c50.
func TestRestartedClientLosesItsWithdrawnRoutes(t *testing.T) {
	t.Parallel()
	srv, addr := inProcessServer(t, metalbond.ServerConfig{Keepalive: time.Second, SyncDelay: -1})
	rs := hostRoutes(9, "10.9.0.1", 2, "2001:db8::9")
	before, err := dialRaw(addr, ourHello("fault-bug-host"))
	if err != nil {
		t.Fatal(err)
	}
	before.read()
	before.send(wire.Subscribe{VNI: 9})
	before.update(wire.ActionAdd, rs)
	before.send(wire.EndOfSync{Announcements: true})
	handled(t, before, 90)
	before.close() // the server keeps its routes as stale
	waitFor(t, "the first session's routes kept as stale", func() bool {
		ps := srv.Peers() // the ended session is listed as STALE
		return len(ps) == 1 && ps[0].State == "STALE" && srv.Stats().StaleRoutes == len(rs)
	})

	after, err := dialRaw(addr, ourHello("fault-bug-host"))
	if err != nil {
		t.Fatal(err)
	}
	defer after.close()
	after.read()
	after.send(wire.Subscribe{VNI: 9})
	after.update(wire.ActionAdd, rs[:1]) // no longer rs[1]
	after.send(wire.EndOfSync{Announcements: true})
	waitFor(t, "the table and END_OF_SYNC, and the stale routes released", func() bool {
		return after.eosCount(9) > 0 && srv.Stats().StaleRoutes == 0
	})
	if got := srv.Routes(9); len(got) != 1 || got[0].Route != rs[0] {
		t.Fatalf("server table: %v, want only %s", got, rs[0])
	}
	// A REMOVE for rs[1] would have been queued to after while the server
	// handled its END_OF_SYNC, before what after sends next.
	handled(t, after, 90)
	got, _, _ := after.snapshot()
	if _, ok := got[rs[1]]; ok {
		t.Fatalf("the returning client still has %s, which it no longer announces and the server has withdrawn", rs[1])
	}
}

// handled waits until the server has handled everything p sent so far,
// and sent p what that made it send: it subscribes p to the otherwise
// unused marker VNI and waits for its END_OF_SYNC (the server handles a
// peer's messages in order and queues to it in order; p must be reading,
// have negotiated END_OF_SYNC, and the server run with SyncDelay -1).
func handled(t testing.TB, p *rawPeer, marker route.VNI) {
	t.Helper()
	n := p.eosCount(marker)
	if err := p.send(wire.Subscribe{VNI: marker}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("END_OF_SYNC of marker VNI %d", marker), func() bool { return p.eosCount(marker) > n })
	if err := p.send(wire.Unsubscribe{VNI: marker}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestVNIStateFreed: a peer that subscribes to and unsubscribes from many
// VNIs (valid v1, within any subscription limit since it holds one at a
// time) must not leave the server holding memory for every VNI it named
// once it is gone. Server.vni created a vniState per VNI and nothing
// deleted it from Server.vnis: 380 bytes per VNI for ever. Fixed in
// 1b92c50 (Server.dropIfEmpty).
func TestVNIStateFreed(t *testing.T) {
	// Not parallel: it measures this process's heap.
	srv, addr := inProcessServer(t, metalbond.ServerConfig{Keepalive: time.Second, SyncDelay: -1})
	n := 30_000
	if long() {
		n = 300_000
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	p, err := dialRaw(addr, v1Hello())
	if err != nil {
		t.Fatal(err)
	}
	p.read()
	p.keepalive(300 * time.Millisecond)
	var b []byte
	for i := range n {
		vni := route.VNI(100_000 + i)
		b, _ = wire.AppendFrame(b, wire.Subscribe{VNI: vni})
		b, _ = wire.AppendFrame(b, wire.Unsubscribe{VNI: vni})
	}
	start := time.Now()
	if err := p.write(b); err != nil {
		t.Fatal(err)
	}
	// A marker: once the sentinel route is in, everything before it was
	// handled.
	marker := hostRoutes(1, "10.1.1.1", 1, "2001:db8::1")
	p.update(wire.ActionAdd, marker)
	for len(srv.Routes(1)) == 0 {
		if time.Since(start) > time.Minute {
			t.Fatal("the server did not get through the subscriptions")
		}
		time.Sleep(10 * time.Millisecond)
	}
	during := heap()
	p.close()
	for len(srv.Peers()) > 0 || len(srv.Routes(1)) > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	after := heap()
	logf(t, "%d SUBSCRIBE/UNSUBSCRIBE pairs (%d bytes) in %v: heap in use %.1f MiB before, %.1f MiB with the peer, %.1f MiB after it left",
		n, len(b), time.Since(start).Round(time.Millisecond), mib(before), mib(during), mib(after))
	if after > before+4<<20 {
		t.Errorf("the server keeps %.1f MiB (%d bytes per VNI) after the peer that named %d VNIs left",
			mib(after-before), (after-before)/uint64(n), n)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// TestClientStartupWithManyAnnouncements: the command must start quickly
// with a large number of --announce routes. cmd/metalbond/client.go
// (*clientFlags).parse removes duplicates with slices.Contains over the
// routes parsed so far, which is quadratic: 50,000 routes take 10 to 20 s
// to parse (7 minutes in a -race build), 60,000 more than 7 s; linear
// parsing takes a fraction of a second.
func TestClientStartupWithManyAnnouncements(t *testing.T) {
	t.Parallel()
	const n = 60_000
	routes := hostRoutes(23, "10.64.0.0", n, "2001:db8::64")
	var b strings.Builder
	b.WriteString("server: [\"127.0.0.1:1\"]\nannounce:\n")
	for _, r := range routes {
		fmt.Fprintf(&b, "  - %q\n", r.String())
	}
	http := freePort(t, "127.0.0.1")
	fmt.Fprintf(&b, "http: %q\n", http)
	cfg := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	mustBinary(t)
	start := time.Now()
	p := startProc(t, procSpec{name: "many", args: []string{"client", "--config", cfg}, http: http})
	// A liveness bound, not a speed check: linear parsing starts in well
	// under a second on a quiet machine, the quadratic one needed minutes
	// in a -race build. CI machines are loaded, so the bound is generous.
	deadline := start.Add(60 * time.Second)
	for !strings.Contains(p.logText(), "client started") {
		if time.Now().After(deadline) {
			t.Fatalf("a client with %d announcements did not start within 60 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	logf(t, "a client with %d announcements started in %v", n, time.Since(start).Round(time.Millisecond))
}

// TestStuckPeerDropped: a subscriber that stops reading but keeps its
// session alive with keepalives must be dropped once nothing it was sent
// has been written for the write timeout (ServerConfig.WriteTimeout), or
// its queue grows until the memory bound while it holds a session slot
// and its subscriptions. A peer of ours (not paced) is dropped; a plain v1
// peer, whose writes are paced, is not: the writer counts the keepalive it
// answers (written into a socket buffer that pacing never lets fill) as
// progress, and pace() starts its stall deadline afresh on every call,
// which ends whenever such a keepalive waits to be sent
// (internal/session/pacing.go, pace: stallAt is a local variable;
// internal/session/session.go, write: any byte written is progress).
func TestStuckPeerDropped(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"ours", "v1"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			srv, addr := inProcessServer(t, metalbond.ServerConfig{Keepalive: time.Second, SyncDelay: -1,
				WriteTimeout: time.Second})
			b, err := dialRaw(addr, v1Hello())
			if err != nil {
				t.Fatal(err)
			}
			defer b.close()
			b.read()
			b.keepalive(300 * time.Millisecond)
			b.update(wire.ActionAdd, hostRoutes(5, "10.55.0.0", 10_000, "2001:db8::55"))
			waitFor(t, "the table", func() bool { return len(srv.Routes(5)) == 10_000 })

			d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
				})
				return cmp.Or(err, serr)
			}}
			hello := ourHello("fault-stuck")
			if kind == "v1" {
				hello = v1Hello()
			}
			s, err := dialRawWith(d, addr, hello)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			s.keepalive(300 * time.Millisecond)
			for range 16 { // 16 copies of the table: megabytes it will not read
				s.send(wire.Subscribe{VNI: 5}, wire.Unsubscribe{VNI: 5})
			}
			s.send(wire.Subscribe{VNI: 5})
			start := time.Now()
			for srv.Stats().SlowPeersDropped == 0 {
				if time.Since(start) > 10*time.Second {
					var q int
					for _, p := range srv.Peers() {
						q = max(q, p.QueueBytes)
					}
					t.Fatalf("a subscriber of kind %s that reads nothing is still connected %v later (write timeout 1 s), with %d bytes queued",
						kind, time.Since(start).Round(time.Millisecond), q)
				}
				time.Sleep(50 * time.Millisecond)
			}
			logf(t, "a stuck subscriber of kind %s was dropped %v after it stopped reading", kind, time.Since(start).Round(time.Millisecond))
		})
	}
}
