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
// plain v1 client proposing keepalive seconds. The connection closes when
// the test ends; every read and write must finish within 10 s.
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
	p.Expect(wire.TypeHello)
	p.Send(wire.Keepalive{})
	p.Expect(wire.TypeKeepalive)
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
