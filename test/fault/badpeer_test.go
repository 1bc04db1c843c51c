package faulttest

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// badEnv is a server with well-behaved peers around which a test lets a
// misbehaving one loose: a client k subscribed to VNIs 100 and 200, a client
// a announcing into both, and optionally a raw bulk announcer.
type badEnv struct {
	srv     *server
	k, a    *client
	aRoutes []route.Route
	bulk    []route.Route
	b       *rawPeer
	probes  int
}

func newBadEnv(t *testing.T, name string, keepalive, bulk int) *badEnv {
	t.Helper()
	e := &badEnv{srv: startServer(t, serverOpts{keepalive: keepalive})}
	servers := []string{e.srv.addr}
	e.aRoutes = append(hostRoutes(100, "10.4.0.1", 30, "2001:db8::4"), hostRoutes(200, "10.4.1.1", 30, "2001:db8::4")...)
	e.k = startClient(t, clientOpts{name: "fault-" + name + "-k", servers: servers, subs: []route.VNI{100, 200}})
	e.a = startClient(t, clientOpts{name: "fault-" + name + "-a", servers: servers, subs: []route.VNI{100}, routes: e.aRoutes})
	if bulk > 0 {
		e.bulk = hostRoutes(100, "10.160.0.0", bulk, "2001:db8::b1")
		e.b = bulkAnnouncer(t, e.srv.addr, "fault-"+name+"-bulk", e.bulk, 10*time.Second)
	}
	e.converge(t, nil)
	return e
}

// converge waits until k and a hold exactly the routes of a, the bulk
// announcer and extra.
func (e *badEnv) converge(t testing.TB, extra []route.Route) time.Duration {
	t.Helper()
	d := waitRoutes(t, "k", e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, e.bulk, extra), time.Minute)
	waitRoutes(t, "a", e.a.http, expect(e.a.opts.subs, e.aRoutes, e.bulk, extra), time.Minute)
	return d
}

// probe shows that the server still does its work: a new plain v1 peer
// announces a route, and the time until k has it is returned. The probe
// peer then leaves and its route goes. extra are the other routes k has
// meanwhile.
func (e *badEnv) probe(t testing.TB, extra []route.Route) time.Duration {
	t.Helper()
	e.probes++
	p, err := dialRaw(e.srv.addr, v1Hello())
	if err != nil {
		t.Fatalf("probe: the server does not take a new peer: %v", err)
	}
	p.read()
	p.keepalive(500 * time.Millisecond)
	r := hostRoutes(200, fmt.Sprintf("10.5.%d.1", e.probes%250), 1, "2001:db8::5")
	start := time.Now()
	if err := p.update(wire.ActionAdd, r); err != nil {
		t.Fatalf("probe: %v", err)
	}
	waitRoutes(t, "k (probe)", e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, e.bulk, extra, r), 30*time.Second)
	lat := time.Since(start)
	p.close()
	waitRoutes(t, "k (probe gone)", e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, e.bulk, extra), 30*time.Second)
	return lat
}

// serverCounter returns a counter of the server.
func (e *badEnv) counter(t testing.TB, series string) float64 {
	t.Helper()
	return mustScrape(t, e.srv.http)[series]
}

// TestSilentPeers opens many connections that send nothing, that stop after
// HELLO, and that fall silent after the handshake (having announced a route
// and kept the session alive until every connection was open). The server
// must close every one of them on its own (handshake timeout, hold timer),
// withdraw the routes of the last kind, keep serving the others meanwhile,
// and return to its baseline.
func TestSilentPeers(t *testing.T) {
	t.Parallel()
	n := sizes().silentPeers
	e := newBadEnv(t, "silent", 1, 0) // keepalive 1 s: handshake timeout and hold time 2.5 s
	base := baseline(t, e.srv.http)
	logf(t, "server baseline: %s", base)
	failures0 := e.counter(t, "metalbond_handshake_failures_total")

	var conns []net.Conn
	var silentRoutes []route.Route
	var mute []func()
	for i := range n {
		c, err := net.Dial("tcp", e.srv.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		switch i % 3 {
		case 1: // HELLO, then nothing
			frame, _ := wire.AppendFrame(nil, v1Hello())
			c.Write(frame)
		case 2: // established, announces, keeps alive until told to stop
			p := &rawPeer{conn: c, r: wire.NewReader(c), stop: make(chan struct{})}
			if err := p.handshake(v1Hello()); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			mute = append(mute, p.keepalive(300*time.Millisecond))
			t.Cleanup(p.close)
			r := hostRoutes(100, fmt.Sprintf("10.6.%d.%d", i/250, i%250+1), 1, "2001:db8::6")
			p.update(wire.ActionAdd, r)
			silentRoutes = append(silentRoutes, r...)
		}
		conns = append(conns, c)
	}
	peak := usageOf(mustScrape(t, e.srv.http))
	logf(t, "%d silent connections open: %s", n, peak)
	waitRoutes(t, "k", e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, silentRoutes), 10*time.Second)
	lat := e.probe(t, silentRoutes)
	logf(t, "probe route reached k in %v while they hang", lat.Round(time.Millisecond))
	for _, m := range mute {
		m()
	}
	opened := time.Now() // every connection is silent from here on

	// The server closes every connection by itself.
	var wg sync.WaitGroup
	closedAfter := make([]time.Duration, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if err != nil && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					closedAfter[i] = -1
					return
				}
			}
			closedAfter[i] = time.Since(opened)
		}()
	}
	wg.Wait()
	var longest time.Duration
	for i, d := range closedAfter {
		if d < 0 {
			t.Fatalf("connection %d (kind %d) still open after 30 s", i, i%3)
		}
		longest = max(longest, d)
	}
	logf(t, "the server closed all %d connections within %v", n, longest.Round(time.Millisecond))
	d := e.converge(t, nil)
	logf(t, "routes of the silent established peers withdrawn; k converged %v later", d.Round(time.Millisecond))
	failures := e.counter(t, "metalbond_handshake_failures_total") - failures0
	if want := n - len(silentRoutes); int(failures) != want {
		t.Errorf("handshake failures counted: %v, want %d", failures, want)
	}
	u, dur := waitBaseline(t, e.srv.http, base, 30*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)
}

// garbage returns n bytes of garbage of a kind.
func garbage(kind string, n int, seed [32]byte) []byte {
	b := make([]byte, n)
	src := rand.NewChaCha8(seed)
	src.Read(b)
	rng := rand.New(src)
	switch kind {
	case "random", "random after handshake":
		b[0] = 0x42 // not version 1: the first header is already bad
	case "framed":
		// Frames with good headers (version 1, UPDATE, a legal length)
		// and random bodies.
		for i := 0; i+wire.HeaderLen < len(b); {
			l := rng.IntN(wire.MaxBodyLen + 1)
			b[i], b[i+1], b[i+2], b[i+3] = wire.Version, byte(l>>8), byte(l), byte(wire.TypeUpdate)
			i += wire.HeaderLen + l
		}
	case "oversized":
		// A header announcing a body of 65535 bytes: refused before the
		// body is read or allocated.
		b[0], b[1], b[2], b[3] = wire.Version, 0xff, 0xff, byte(wire.TypeUpdate)
	}
	return b
}

// TestGarbagePeers has peers send 10 MB of garbage each, several kinds at
// once: random bytes from the first byte, random bytes after a correct
// handshake, well-formed headers with random bodies, and a header announcing
// an oversized body. The server must close each such connection at the first
// bad frame (reading little of the garbage), count it as a protocol error of
// the right kind, keep serving the others, and return to its baseline.
func TestGarbagePeers(t *testing.T) {
	t.Parallel()
	sz := sizes()
	e := newBadEnv(t, "garbage", 2, 0)
	base := baseline(t, e.srv.http)
	logf(t, "server baseline: %s", base)
	kinds := map[string]string{ // garbage kind: the protocol error it must cause
		"random":                 "bad_version",
		"random after handshake": "bad_version",
		"framed":                 "", // malformed or invalid, depending on the bytes
		"oversized":              "too_large",
	}
	before := mustScrape(t, e.srv.http)
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	logf(t, "seed %x", seed[:8])
	results := make(chan garbageResult, len(kinds)*sz.garbagePeers)
	var wg sync.WaitGroup
	for kind := range kinds {
		data := garbage(kind, sz.garbageBytes, seed) // the same garbage for every peer of a kind
		for range sz.garbagePeers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- sendGarbage(e.srv.addr, kind, data)
			}()
		}
	}
	lat := e.probe(t, nil)
	logf(t, "probe route reached k in %v during the garbage", lat.Round(time.Millisecond))
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.kind, r.err)
			continue
		}
		logf(t, "%s: the server closed the connection after we had written %d of %d bytes, in %v",
			r.kind, r.written, sz.garbageBytes, r.took.Round(time.Millisecond))
	}
	after := mustScrape(t, e.srv.http)
	counted := 0.0
	for _, kind := range []string{"bad_version", "unknown_type", "too_large", "malformed", "invalid", "unexpected_message"} {
		series := fmt.Sprintf("metalbond_protocol_errors_total{kind=%q}", kind)
		n := after[series] - before[series]
		counted += n
		want := 0
		for _, k := range kinds {
			if k == kind {
				want += sz.garbagePeers
			}
		}
		if want > 0 && int(n) != want {
			t.Errorf("protocol errors of kind %s: %v, want %d", kind, n, want)
		}
	}
	if want := len(kinds) * sz.garbagePeers; int(counted) != want {
		t.Errorf("protocol errors counted: %v, want %d", counted, want)
	}
	e.converge(t, nil)
	u, dur := waitBaseline(t, e.srv.http, base, 30*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)
}

type garbageResult struct {
	kind    string
	written int // bytes written before the server closed
	took    time.Duration
	err     error
}

// sendGarbage connects and writes data; the server must close the
// connection before all of it is written, or right after.
func sendGarbage(addr, kind string, data []byte) (res garbageResult) {
	res.kind = kind
	c, err := net.Dial("tcp", addr)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Close()
	if kind == "random after handshake" {
		p := &rawPeer{conn: c, r: wire.NewReader(c)}
		if res.err = p.handshake(v1Hello()); res.err != nil {
			return res
		}
	}
	start := time.Now()
	c.SetDeadline(start.Add(30 * time.Second))
	// Write in pieces so that we see how much the server took.
	for res.written < len(data) {
		n, err := c.Write(data[res.written:min(res.written+64<<10, len(data))])
		res.written += n
		if err != nil {
			break
		}
	}
	// Whether or not all was written, the server must close.
	_, err = io.Copy(io.Discard, c)
	res.took = time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		res.err = fmt.Errorf("the server did not close the connection within 30 s (%d bytes written)", res.written)
	}
	return res
}

// TestStuckReader subscribes a peer to a large VNI and lets it stop
// reading while it keeps its session alive with keepalives. The server must
// go on serving everyone else (the stuck peer's queue must not hold up
// announcers for long), drop the peer once it has made no progress for the
// write timeout (30 s by default, not settable on the command line; only the
// long run waits for that) or once its queue passes the memory bound
// (64 MiB), and its memory must come back when the peer is gone. Three
// kinds of stuck peer: one of ours with a small receive buffer, so that the
// server's queue for it fills; a plain v1 peer, whose writes the server
// paces; and one of ours that asks for the table again and again until its
// queue overflows. Each has a server of its own.
func TestStuckReader(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"ours", "overflow", "v1"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newBadEnv(t, "stuck-"+kind, 2, sizes().stuckVNI)
			base := baseline(t, e.srv.http)
			logf(t, "server baseline: %s", base)
			testStuckReader(t, e, base, kind)
		})
	}
}

func testStuckReader(t *testing.T, e *badEnv, base usage, kind string) {
	dropped0 := e.counter(t, "metalbond_slow_peers_dropped_total")
	// Churn in the VNI the stuck peer will subscribe to: the bulk
	// announcer withdraws 20 of its routes and announces them again, one
	// UPDATE at a time, 20 ms apart, as a client does when its routes
	// change (a burst would be read and fanned out in a few batches, which
	// hides a cost per batch). First without a stuck peer, for comparison.
	churn := e.bulk[:20]
	trickle := func(a wire.Action) { // in a goroutine: an error shows as no convergence
		for _, r := range churn {
			if e.b.update(a, []route.Route{r}) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	doChurn := func(limit time.Duration) (time.Duration, error) {
		start := time.Now()
		received0 := e.counter(t, "metalbond_updates_received_total")
		go trickle(wire.ActionRemove)
		if _, err := awaitRoutes(e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, without(e.bulk, churn)), limit); err != nil {
			n := e.counter(t, "metalbond_updates_received_total") - received0
			return time.Since(start), fmt.Errorf("%v: the server took only %v of the %d UPDATEs of the announcer in %v",
				err, n, len(churn), time.Since(start).Round(time.Millisecond))
		}
		go trickle(wire.ActionAdd)
		_, err := awaitRoutes(e.k.http, expect(e.k.opts.subs, nil, e.aRoutes, e.bulk), limit)
		return time.Since(start), err
	}
	free, err := doChurn(time.Minute)
	if err != nil {
		t.Fatalf("k: %v", err)
	}
	logf(t, "churn of 2 x %d updates reached k in %v without a stuck peer", len(churn), free.Round(time.Millisecond))

	var s *rawPeer
	if kind == "v1" {
		s, err = dialRaw(e.srv.addr, v1Hello())
	} else {
		d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
			})
			return cmp.Or(err, serr)
		}}
		s, err = dialRawWith(d, e.srv.addr, ourHello("fault-stuck-s"))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	s.keepalive(500 * time.Millisecond)
	// Each SUBSCRIBE after an UNSUBSCRIBE queues the whole table again.
	tables := 16
	if kind == "overflow" {
		tables = 96 << 20 / (len(e.bulk) * 40) // past the 64 MiB bound (an UPDATE takes about 40 bytes)
	}
	for i := range tables {
		if i > 0 {
			s.send(wire.Unsubscribe{VNI: 100})
		}
		if err := s.send(wire.Subscribe{VNI: 100}); err != nil {
			break // dropped already
		}
	}
	time.Sleep(time.Second)
	m := mustScrape(t, e.srv.http)
	logf(t, "stuck peer asked for the table %d times: the server's fullest send queue holds %.1f MiB; %s",
		tables, m["metalbond_send_queue_max_bytes"]/(1<<20), usageOf(m))
	if kind == "overflow" {
		start := time.Now()
		for e.counter(t, "metalbond_slow_peers_dropped_total") == dropped0 {
			if time.Since(start) > 30*time.Second {
				t.Fatal("the server did not drop the peer whose queue passed the bound")
			}
			time.Sleep(100 * time.Millisecond)
		}
		logf(t, "the server dropped the stuck peer when its queue passed the bound")
		lat := e.probe(t, nil)
		logf(t, "probe route reached k in %v", lat.Round(time.Millisecond))
		s.close()
		u, dur := waitBaseline(t, e.srv.http, base, 30*time.Second)
		logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)
		return
	}

	// The same churn with the stuck peer subscribed: it may cost a little
	// (the server waits up to a second for a congested peer that still
	// makes progress), not more.
	limit := 3*free + 3*time.Second
	stuck, err := doChurn(limit)
	if err != nil {
		t.Fatalf("k: %v (%v without the stuck peer): the stuck peer holds the announcer back", err, free.Round(time.Millisecond))
	}
	logf(t, "churn of 2 x %d updates reached k in %v with the stuck peer subscribed", len(churn), stuck.Round(time.Millisecond))
	lat := e.probe(t, nil)
	logf(t, "probe route reached k in %v", lat.Round(time.Millisecond))
	m = mustScrape(t, e.srv.http)
	logf(t, "after the churn: fullest send queue %.1f MiB; %s", m["metalbond_send_queue_max_bytes"]/(1<<20), usageOf(m))

	if long() {
		start := time.Now()
		for e.counter(t, "metalbond_slow_peers_dropped_total") == dropped0 {
			if time.Since(start) > 2*time.Minute {
				t.Fatal("the server did not drop the stuck peer within 2 minutes")
			}
			time.Sleep(time.Second)
		}
		logf(t, "the server dropped the stuck peer by itself after %v", time.Since(start).Round(time.Second))
	}
	s.close()
	u, dur := waitBaseline(t, e.srv.http, base, 30*time.Second)
	logf(t, "server back to baseline after %v: %s", dur.Round(time.Millisecond), u)
}
