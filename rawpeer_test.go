package metalbond_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

// rawPeer speaks v1 frame by frame, as an independent implementation would,
// to check what our server puts on the wire.
type rawPeer struct {
	conn net.Conn
	r    *wire.Reader
}

// dialRaw connects to addr and completes the client handshake.
func dialRaw(t testing.TB, addr string) *rawPeer {
	t.Helper()
	p := testpeer.DialV1(t, addr, 5)
	return &rawPeer{conn: p.Conn, r: p.R}
}

func (p *rawPeer) send(m wire.Message) {
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	p.conn.Write(frame)
}

func (p *rawPeer) read(t testing.TB) wire.Message {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := p.r.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// expectUpdate returns the next UPDATE, skipping keepalives.
func (p *rawPeer) expectUpdate(t testing.TB) wire.Update {
	t.Helper()
	for {
		m := p.read(t)
		if u, ok := m.(wire.Update); ok {
			return u
		}
		if m.Type() != wire.TypeKeepalive {
			t.Fatalf("got %#v, want UPDATE", m)
		}
	}
}

// expectSilence checks that no UPDATE arrives for d.
func (p *rawPeer) expectSilence(t testing.TB, d time.Duration) {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(d))
	for {
		m, err := p.r.ReadMessage()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if m.Type() != wire.TypeKeepalive {
			t.Fatalf("got unexpected %#v", m)
		}
	}
}

// expectClosed checks that the server closes the connection.
func (p *rawPeer) expectClosed(t testing.TB) {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := p.r.ReadFrame()
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("connection still open after 5s")
		}
		return
	}
}
