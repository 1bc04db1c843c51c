// Package testpeer is a raw MetalBond peer for tests: it speaks the wire
// protocol directly, so a test can act as a plain v1 peer (no extensions in
// its HELLO) and choose when, and whether, it reads.
package testpeer

import (
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
)

// Peer is a raw client connection to a server.
type Peer struct {
	tb   testing.TB
	Conn net.Conn
	R    *wire.Reader
}

// DialV1 connects to the server at addr and completes the handshake as a
// plain v1 client proposing keepalive seconds; the server must answer with a
// server HELLO. The handshake must finish within 10 s; the connection closes
// when the test ends.
func DialV1(tb testing.TB, addr string, keepalive uint32) *Peer {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	p := &Peer{tb: tb, Conn: conn, R: wire.NewReader(conn)}
	p.Send(wire.Hello{Keepalive: keepalive})
	if m, err := p.R.ReadMessage(); err != nil || m.Type() != wire.TypeHello || !m.(wire.Hello).IsServer {
		tb.Fatalf("got %#v, %v; want a server HELLO", m, err)
	}
	p.Send(wire.Keepalive{})
	p.Expect(wire.TypeKeepalive)
	conn.SetDeadline(time.Time{})
	return p
}

// Send writes one message.
func (p *Peer) Send(m wire.Message) {
	p.tb.Helper()
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		p.tb.Fatal(err)
	}
	if _, err := p.Conn.Write(frame); err != nil {
		p.tb.Fatalf("send %T: %v", m, err)
	}
}

// Expect reads one message and fails the test unless it has type t.
func (p *Peer) Expect(t wire.Type) {
	p.tb.Helper()
	if got, _, err := p.R.ReadFrame(); err != nil || got != t {
		p.tb.Fatalf("read %v, %v; want %v", got, err, t)
	}
}

// TCPPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func TCPPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}
