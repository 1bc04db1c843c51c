//go:build linux

package session

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/internal/testnet"
	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

// checkedConn is a TCP connection that checks every write against the
// rules a writer to a deployed v1 reader keeps: whole frames, no larger
// than the MSS in force, made only when the socket holds no unsent bytes.
type checkedConn struct {
	*net.TCPConn

	mu         sync.Mutex
	writes     int
	violations []string
}

// NetConn exposes the TCP connection, as a TLS connection does, so that
// the session samples the socket under the wrapper.
func (c *checkedConn) NetConn() net.Conn { return c.TCPConn }

func (c *checkedConn) Write(b []byte) (int, error) {
	if v := c.check(b); v != "" {
		c.mu.Lock()
		c.violations = append(c.violations, v)
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.TCPConn.Write(b)
}

// check returns what is wrong with writing b now, or "".
func (c *checkedConn) check(b []byte) string {
	for off := 0; off < len(b); {
		if len(b)-off < wire.HeaderLen || b[off] != wire.Version {
			return fmt.Sprintf("write of %d bytes: no frame header at %d", len(b), off)
		}
		off += frameLen(b[off:])
		if off > len(b) {
			return fmt.Sprintf("write of %d bytes ends inside a frame", len(b))
		}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err.Error()
	}
	var msg string
	rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			msg = err.Error()
			return
		}
		if ti.Notsent_bytes != 0 {
			msg = fmt.Sprintf("write of %d bytes with %d unsent bytes in the socket", len(b), ti.Notsent_bytes)
		} else if len(b) > int(ti.Snd_mss) && len(b) > wire.HeaderLen+wire.MaxBodyLen {
			msg = fmt.Sprintf("write of %d bytes with an MSS of %d", len(b), ti.Snd_mss)
		}
	})
	return msg
}

func (c *checkedConn) result() (writes int, violations []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, append([]string(nil), c.violations...)
}

// TestPacedWritesKeepTheRules: a server session writes 20,000 updates and
// keepalives to a deployed-style v1 client (20 µs per UPDATE): every write
// keeps the rules, and the client gets every update without a failure.
// Over loopback and over a veth path with a 1500-byte MTU.
func TestPacedWritesKeepTheRules(t *testing.T) {
	t.Run("loopback", func(t *testing.T) {
		client, server := testpeer.TCPPair(t)
		checkPaced(t, client, server)
	})
	t.Run("mtu1500", func(t *testing.T) {
		path := testnet.New(t)
		ln := path.Listen(t, 0)
		defer ln.Close()
		client := path.Dial(t, ln.Addr().String())
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		checkPaced(t, client, server)
	})
}

func checkPaced(t *testing.T, client, server net.Conn) {
	const n = 20_000
	cc := &checkedConn{TCPConn: server.(*net.TCPConn)}
	h := newRecorder()
	s := New(cc, Config{Role: RoleServer, Keepalive: time.Second}, h)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sdone := make(chan error, 1)
	go func() { sdone <- s.Run(ctx) }()
	peer := deployedv1.New(client, deployedv1.Config{Delay: 20 * time.Microsecond, Keepalive: time.Second})
	pdone := make(chan error, 1)
	go func() { pdone <- peer.RunClient(ctx) }()
	defer func() {
		cancel()
		<-sdone
		<-pdone
	}()
	wait(t, h.established)
	var frames []byte
	for i := range n {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	s.Send(frames, n)
	deadline := time.After(time.Minute)
	for peer.Len() < n {
		select {
		case err := <-pdone:
			t.Fatalf("deployed-style client: %v (%d routes)", err, peer.Len())
		case err := <-sdone:
			t.Fatalf("session: %v", err)
		case <-peer.Changed():
		case <-deadline:
			t.Fatalf("%d of %d routes after a minute", peer.Len(), n)
		}
	}
	writes, violations := cc.result()
	for i, v := range violations {
		if i == 10 {
			t.Errorf("... %d more", len(violations)-10)
			break
		}
		t.Error(v)
	}
	t.Logf("%d routes in %d writes, %d reads, largest read %d bytes", n, writes, peer.Stats.Reads.Load(), peer.Stats.MaxRead.Load())
}

// TestWriteCheckCatchesUnpacedWrites checks the check: an unpaced writer
// (NoPaceV1) makes writes that it reports.
func TestWriteCheckCatchesUnpacedWrites(t *testing.T) {
	client, server := testpeer.TCPPair(t)
	cc := &checkedConn{TCPConn: server.(*net.TCPConn)}
	h := newRecorder()
	s := New(cc, Config{Role: RoleServer, NoPaceV1: true}, h)
	ctx, cancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-sdone
	}()
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 5})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	client.Write(append(hello, ka...))
	wait(t, h.established)
	var frames []byte
	for i := range 20_000 {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	s.Send(frames, 20_000)
	buf := make([]byte, 1<<20)
	for got := 0; got < len(frames); {
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := client.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got += n
	}
	if _, violations := cc.result(); len(violations) == 0 {
		t.Fatal("an unpaced writer of 760 KB kept every rule: the check checks nothing")
	}
}
