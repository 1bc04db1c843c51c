package faulttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// The fuzz input is a little program: a sequence of operations, each an
// opcode byte followed by its argument bytes, that produces the frames a
// peer sends (valid and invalid ones, split across writes at will). A model
// of the server's session rules, independent of the session code, says
// whether the server must close the connection and how many KEEPALIVEs it
// must answer.
const (
	opHello       = iota // arg: flags → keepalive 1-3 s, features, name, graceful-restart time
	opKeepalive          // no arg
	opSubscribe          // arg: VNI
	opUnsubscribe        // arg: VNI
	opAdd                // args: route, see fuzzRoute
	opRemove             // args: route
	opEndOfSync          // arg: VNI and announcements bit
	opRawFrame           // args: version, type, length, then that many body bytes
	opOversized          // args: type, length above MaxBodyLen (header only)
	opSplit              // arg: where to split the next frame across two writes
	numOps
)

// Fuzzed peers use VNIs 1 to 4; the sentinels use sentinelVNI.
const sentinelVNI = 4242

// fuzzInput reads the program's bytes; past the end it reads zeros.
type fuzzInput struct {
	b []byte
	i int
}

func (in *fuzzInput) more() bool { return in.i < len(in.b) }

func (in *fuzzInput) next() byte {
	if in.i >= len(in.b) {
		in.i++
		return 0
	}
	in.i++
	return in.b[in.i-1]
}

// fuzzFrame is one frame of the program and where to split it.
type fuzzFrame struct {
	data  []byte
	split int // write data[:split] and data[split:] separately; 0: whole
}

// fuzzRoute decodes a route from the program: few VNIs, prefixes and
// nexthops, so that removes meet earlier adds.
func fuzzRoute(in *fuzzInput) route.Route {
	a, b := in.next(), in.next()
	r := route.Route{VNI: route.VNI(1 + a%4)}
	if a&4 != 0 {
		r.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xf, 15: b % 8}), 128)
	} else {
		r.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, b % 8}), 32)
	}
	r.NextHop.Address = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: b >> 3 % 4})
	r.NextHop.Type = route.NextHopType(a >> 3 % 3)
	if r.NextHop.Type == route.NextHopNAT {
		from := uint16(in.next()) * 16
		r.NextHop.NATPortFrom, r.NextHop.NATPortTo = from, from+15
	}
	return r
}

// decodeProgram turns fuzz bytes into frames.
// maxFuzzKeepalives bounds the KEEPALIVEs of a program: the server closes a
// peer that has 64 answers waiting, however valid the frames.
const maxFuzzKeepalives = 48

func decodeProgram(data []byte) []fuzzFrame {
	in := &fuzzInput{b: data}
	var frames []fuzzFrame
	split, keepalives := 0, 0
	add := func(b []byte) {
		f := fuzzFrame{data: b}
		if split > 0 && len(b) > 1 {
			f.split = 1 + split%(len(b)-1)
		}
		split = 0
		frames = append(frames, f)
	}
	for in.more() {
		switch in.next() % numOps {
		case opHello:
			f := in.next()
			h := wire.Hello{Keepalive: 1 + uint32(f%3), Features: uint32(f>>2) & 3}
			if f&0x10 != 0 {
				h.Name = fmt.Sprintf("fuzz%d", f>>5)
				if h.Features&wire.FeatureGracefulRestart != 0 {
					h.GracefulRestart = 1
				}
			}
			b, _ := wire.AppendFrame(nil, h)
			add(b)
		case opKeepalive:
			// A peer with more than 64 answers to its KEEPALIVEs
			// waiting is closed (session.ErrKeepaliveFlood, tested in
			// internal/session); whether that happens depends on how
			// fast the server writes, which the model cannot know.
			if keepalives++; keepalives > maxFuzzKeepalives {
				continue
			}
			b, _ := wire.AppendFrame(nil, wire.Keepalive{})
			add(b)
		case opSubscribe:
			b, _ := wire.AppendFrame(nil, wire.Subscribe{VNI: route.VNI(1 + in.next()%4)})
			add(b)
		case opUnsubscribe:
			b, _ := wire.AppendFrame(nil, wire.Unsubscribe{VNI: route.VNI(1 + in.next()%4)})
			add(b)
		case opAdd:
			add(wire.AppendUpdate(nil, wire.ActionAdd, fuzzRoute(in)))
		case opRemove:
			add(wire.AppendUpdate(nil, wire.ActionRemove, fuzzRoute(in)))
		case opEndOfSync:
			a := in.next()
			b, _ := wire.AppendFrame(nil, wire.EndOfSync{VNI: route.VNI(a % 5), Announcements: a&8 != 0})
			add(b)
		case opRawFrame:
			v, t, n := in.next(), in.next(), int(in.next())
			if v >= 32 {
				v = wire.Version
			}
			b := []byte{v, byte(n >> 8), byte(n), t % 8}
			for range n {
				b = append(b, in.next())
			}
			add(b)
		case opOversized:
			t := in.next()%6 + 1
			n := wire.MaxBodyLen + 1 + int(in.next())*16
			add([]byte{wire.Version, byte(n >> 8), byte(n), t})
		case opSplit:
			split = int(in.next()) + 1
		}
	}
	return frames
}

// sessionModel is the server side of a v1 session with our extensions, as
// PROTOCOL.md and docs/protocol-extensions.md describe it.
type sessionModel struct {
	state        int    // 0 connecting, 1 HELLO received, 2 established
	peerFeatures uint32 // advertised by the peer
	features     uint32 // negotiated
	keepalives   int    // KEEPALIVEs the server must send
	hellos       int    // HELLOs the server must send
	errAt        int    // index of the first frame that must close the session, or -1
	err          string
}

const serverFeatures = wire.FeatureEndOfSync | wire.FeatureGracefulRestart

// run applies the frames and stops at the first protocol error.
func (m *sessionModel) run(frames []fuzzFrame) {
	m.errAt = -1
	for i, f := range frames {
		if err := m.frame(f.data); err != "" {
			m.errAt, m.err = i, err
			return
		}
	}
}

func (m *sessionModel) frame(b []byte) string {
	v, n, t := b[0], int(b[1])<<8|int(b[2]), wire.Type(b[3])
	switch {
	case v != wire.Version:
		return "bad version"
	case !t.Valid():
		return "unknown type"
	case n > wire.MaxBodyLen:
		return "too large"
	}
	body := b[wire.HeaderLen:]
	switch {
	case m.state == 0 && t == wire.TypeHello:
		msg, err := wire.Decode(t, body)
		if err != nil {
			return "bad HELLO: " + err.Error()
		}
		m.peerFeatures = msg.(wire.Hello).Features
		m.features = m.peerFeatures & serverFeatures
		m.state = 1
		m.hellos++
	case m.state >= 1 && t == wire.TypeKeepalive:
		if _, err := wire.Decode(t, body); err != nil {
			return "bad KEEPALIVE: " + err.Error()
		}
		m.state = 2
		m.keepalives++
	case m.state == 2 && (t == wire.TypeSubscribe || t == wire.TypeUnsubscribe || t == wire.TypeUpdate):
		if _, err := wire.Decode(t, body); err != nil {
			return fmt.Sprintf("bad %s: %v", t, err)
		}
	case m.state == 2 && t == wire.TypeEndOfSync:
		if m.features&wire.FeatureEndOfSync == 0 {
			return "END_OF_SYNC not negotiated"
		}
		if _, err := wire.Decode(t, body); err != nil {
			return "bad END_OF_SYNC: " + err.Error()
		}
	default:
		return fmt.Sprintf("%s in state %d", t, m.state)
	}
	return ""
}

// fuzzServer is the in-process server of FuzzSession with two sentinel
// peers: a subscriber to sentinelVNI and an announcer into it.
type fuzzServer struct {
	srv       *metalbond.Server
	addr      string
	sub, ann  *rawPeer
	sentinel  route.Route
	announced bool
	base      int // goroutines before the fuzzed session
}

func newFuzzServer(f *testing.F) *fuzzServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	// Keepalive 5 s: the sentinels' sessions must survive a loaded
	// machine (hold time 12.5 s); the fuzzed peer agrees to 1 to 3 s.
	srv, err := metalbond.NewServer(metalbond.ServerConfig{
		Keepalive:       5 * time.Second,
		GracefulRestart: 50 * time.Millisecond,
		SyncDelay:       -1,
		Limits:          metalbond.Limits{HandshakeTimeout: 2 * time.Second},
	})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	fs := &fuzzServer{srv: srv, addr: ln.Addr().String(),
		sentinel: route.Route{VNI: sentinelVNI, Prefix: netip.MustParsePrefix("192.0.2.1/32"),
			NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::42")}}}
	f.Cleanup(func() {
		fs.sub.close()
		fs.ann.close()
		cancel()
		if err := <-done; err != nil {
			f.Errorf("Serve: %v", err)
		}
	})
	subHello := ourHello("sentinel-sub")
	subHello.Keepalive = 5
	if fs.sub, err = dialRaw(fs.addr, subHello); err != nil {
		f.Fatal(err)
	}
	fs.sub.read()
	fs.sub.keepalive(300 * time.Millisecond)
	fs.sub.send(wire.Subscribe{VNI: sentinelVNI})
	if fs.ann, err = dialRaw(fs.addr, wire.Hello{Keepalive: 5}); err != nil {
		f.Fatal(err)
	}
	fs.ann.read()
	fs.ann.keepalive(300 * time.Millisecond)
	return fs
}

// roundTrip shows that the established sentinels still work: the announcer
// adds or removes its route and the subscriber sees it.
func (fs *fuzzServer) roundTrip(t *testing.T) {
	t.Helper()
	a := wire.ActionAdd
	want := newRouteSet([]route.Route{fs.sentinel})
	if fs.announced {
		a, want = wire.ActionRemove, routeSet{}
	}
	if err := fs.ann.update(a, []route.Route{fs.sentinel}); err != nil {
		t.Fatalf("sentinel announcer: %v", err)
	}
	fs.announced = !fs.announced
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _, _ := fs.sub.snapshot()
		if got.equal(want) {
			return
		}
		if err := fs.sub.err(); err != nil {
			t.Fatalf("sentinel subscriber lost its session: %v", err)
		}
		if err := fs.ann.err(); err != nil {
			t.Fatalf("sentinel announcer lost its session: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel update did not go through: %s", got.describeDiff(want))
		}
		time.Sleep(time.Millisecond)
	}
}

// settle waits until the fuzzed peer left no trace: no goroutine above the
// baseline and no route in the fuzzed VNIs (graceful restart keeps a named
// peer's routes for 50 ms).
func (fs *fuzzServer) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := runtime.NumGoroutine()
		routes := 0
		for _, v := range fs.srv.VNIs() {
			if v.VNI != sentinelVNI {
				routes += v.Routes
			}
		}
		if g <= fs.base && routes == 0 && len(fs.srv.Peers()) == 2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("after the session: %d goroutines (baseline %d), %d routes left in fuzzed VNIs, %d peers (want 2)\n%s",
				g, fs.base, routes, len(fs.srv.Peers()), buf)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// FuzzSession sends random sequences of valid and invalid frames to a live
// server. The server must never crash, must close the connection exactly
// when the model says a frame is a protocol error (and keep it open and
// answer every KEEPALIVE otherwise), must go on serving an established
// subscriber and announcer, and must return to its baseline of goroutines
// with nothing left of the fuzzed peer. The seed corpus is in
// testdata/fuzz/FuzzSession.
func FuzzSession(f *testing.F) {
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzing engine has goroutines of its own: the baseline is
		// taken afresh for each input, after the previous one settled.
		fs.base = runtime.NumGoroutine()
		frames := decodeProgram(data)
		var m sessionModel
		m.run(frames)
		conn, err := net.Dial("tcp", fs.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).SetNoDelay(true)
		conn.SetDeadline(time.Now().Add(10 * time.Second))

		// Write, frame by frame; a split frame in two writes with a pause.
		var writeErr error
		var buf []byte
		flush := func() {
			if len(buf) > 0 && writeErr == nil {
				_, writeErr = conn.Write(buf)
			}
			buf = buf[:0]
		}
		for i, f := range frames {
			if m.errAt >= 0 && i > m.errAt+8 {
				break // the server is gone; enough garbage after the error
			}
			if f.split > 0 {
				buf = append(buf, f.data[:f.split]...)
				flush()
				time.Sleep(100 * time.Microsecond)
				buf = append(buf, f.data[f.split:]...)
				continue
			}
			buf = append(buf, f.data...)
		}
		flush()

		r := wire.NewReader(conn)
		if m.errAt >= 0 {
			// The server must close the connection (reading what it sent).
			for {
				_, _, err := r.ReadFrame()
				if err == nil {
					continue
				}
				var ne net.Error
				switch {
				case errors.As(err, &ne) && ne.Timeout():
					t.Fatalf("frame %d (%s) must close the session; the server kept it open", m.errAt, m.err)
				case errors.Is(err, wire.ErrBadVersion), errors.Is(err, wire.ErrTooLarge), errors.Is(err, wire.ErrUnknownType):
					t.Fatalf("bad frame from the server: %v", err)
				}
				break // closed (EOF) or reset
			}
		} else {
			if writeErr != nil {
				t.Fatalf("write to the server failed although every frame was valid: %v", writeErr)
			}
			if m.state == 2 {
				// One more KEEPALIVE: the server must answer it and all
				// the earlier ones, and send nothing it should not.
				k, _ := wire.AppendFrame(nil, wire.Keepalive{})
				if _, err := conn.Write(k); err != nil {
					t.Fatalf("write: %v", err)
				}
				m.keepalives++
			}
			hellos, keepalives := 0, 0
			for m.state == 2 && (hellos < m.hellos || keepalives < m.keepalives) {
				t2, body, err := r.ReadFrame()
				if err != nil {
					t.Fatalf("the server closed a session that sent only valid frames (got %d of %d HELLOs, %d of %d KEEPALIVEs): %v",
						hellos, m.hellos, keepalives, m.keepalives, err)
				}
				msg, err := wire.Decode(t2, body)
				if err != nil {
					t.Fatalf("bad message from the server: %v", err)
				}
				switch msg := msg.(type) {
				case wire.Hello:
					hellos++
					if !msg.IsServer {
						t.Fatal("server HELLO without isServer")
					}
					if (msg.Features == 0) != (m.peerFeatures == 0) {
						t.Fatalf("server HELLO advertises features %#x to a peer advertising %#x", msg.Features, m.peerFeatures)
					}
				case wire.Keepalive:
					keepalives++
				case wire.Update:
				case wire.EndOfSync:
					if m.features&wire.FeatureEndOfSync == 0 {
						t.Fatal("END_OF_SYNC to a peer that did not negotiate it")
					}
				default:
					t.Fatalf("the server sent %s", msg.Type())
				}
			}
		}
		conn.Close()
		fs.roundTrip(t)
		fs.settle(t)
	})
}
