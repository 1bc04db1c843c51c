package deployedv1

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testRoute(i int) route.Route {
	return route.Route{
		VNI:     7,
		Prefix:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")},
	}
}

func frame(t *testing.T, m wire.Message) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serverUp starts the emulation as a server on one end of a TCP pair and
// completes the handshake from the other, which it returns.
func serverUp(t *testing.T, cfg Config) (*Peer, net.Conn, <-chan error) {
	t.Helper()
	client, conn := testpeer.TCPPair(t)
	p := New(conn, cfg)
	established := make(chan struct{})
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		done <- p.RunServer(context.Background(), established)
	}()
	t.Cleanup(func() {
		p.Close()
		<-exited
	})
	client.Write(append(frame(t, wire.Hello{Keepalive: 1}), frame(t, wire.Keepalive{})...))
	r := wire.NewReader(client)
	for _, want := range []wire.Type{wire.TypeHello, wire.TypeKeepalive} {
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, _, err := r.ReadFrame(); err != nil || got != want {
			t.Fatalf("read %v, %v; want %v", got, err, want)
		}
	}
	<-established
	return p, client, done
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the emulation did not fail")
		return nil
	}
}

// TestSplitMessageFails: a message written in two parts, the reader reading
// in between, is the failure the deployed reader suffers.
func TestSplitMessageFails(t *testing.T) {
	p, client, done := serverUp(t, Config{})
	u := wire.AppendUpdate(nil, wire.ActionAdd, testRoute(1))
	client.Write(u[:10])
	err := waitErr(t, done)
	if !errors.Is(err, ErrSplitMessage) {
		t.Fatalf("err = %v, want ErrSplitMessage", err)
	}
	if p.Len() != 0 {
		t.Errorf("%d routes held after the failure", p.Len())
	}
}

// TestReadStartingInsideAMessageFails: the bytes after a cut do not start
// with the version.
func TestReadStartingInsideAMessageFails(t *testing.T) {
	_, client, done := serverUp(t, Config{})
	u := wire.AppendUpdate(nil, wire.ActionAdd, testRoute(1))
	client.Write(u[4:])
	if err := waitErr(t, done); !errors.Is(err, ErrVersion) {
		t.Fatalf("err = %v, want ErrVersion", err)
	}
}

// TestFullReadFails: with the processing goroutine behind, unread bytes pile
// up and a read fills the buffer.
func TestFullReadFails(t *testing.T) {
	p, client, done := serverUp(t, Config{Delay: time.Millisecond})
	var first, rest []byte
	for i := range 200 {
		first = wire.AppendUpdate(first, wire.ActionAdd, testRoute(i))
	}
	for i := 200; i < 20_000; i++ {
		rest = wire.AppendUpdate(rest, wire.ActionAdd, testRoute(i))
	}
	client.Write(first)
	// The reader blocks once the queue is full: what comes now piles up.
	for p.Stats.Messages.Load() < QueueSlots+10 {
		time.Sleep(time.Millisecond)
	}
	go client.Write(rest)
	if err := waitErr(t, done); !errors.Is(err, ErrFullRead) {
		t.Fatalf("err = %v, want ErrFullRead", err)
	}
}

// TestUnknownTypeStopsReading: after a message of an unknown type the peer
// reads nothing more, and its keepalive timer ends the session.
func TestUnknownTypeStopsReading(t *testing.T) {
	p, client, done := serverUp(t, Config{})
	client.Write([]byte{wire.Version, 0, 0, 9})
	client.Write(wire.AppendUpdate(nil, wire.ActionAdd, testRoute(1)))
	err := waitErr(t, done)
	if !errors.Is(err, ErrUnknownType) || !errors.Is(err, ErrHold) {
		t.Fatalf("err = %v, want ErrUnknownType and ErrHold", err)
	}
	if p.Len() != 0 {
		t.Errorf("the UPDATE after the unknown type was processed")
	}
}

// TestWholeMessagesConverge: whole messages, a read at a time, reach the
// table, and a server answers every KEEPALIVE.
func TestWholeMessagesConverge(t *testing.T) {
	p, client, _ := serverUp(t, Config{Delay: 10 * time.Microsecond})
	const n = 1000
	for i := range n {
		client.Write(wire.AppendUpdate(nil, wire.ActionAdd, testRoute(i)))
	}
	client.Write(frame(t, wire.Keepalive{}))
	r := wire.NewReader(client)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, _, err := r.ReadFrame(); err != nil || got != wire.TypeKeepalive {
		t.Fatalf("read %v, %v; want the KEEPALIVE answer", got, err)
	}
	// The answer may overtake UPDATEs still queued for processing.
	deadline := time.After(10 * time.Second)
	for p.Len() != n {
		select {
		case <-p.Changed():
		case <-deadline:
			t.Fatalf("%d routes, want %d", p.Len(), n)
		}
	}
	if a := p.Stats.Anomalies.Load(); a != 0 {
		t.Errorf("%d anomalies", a)
	}
}
