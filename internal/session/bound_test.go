package session

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

// establishRaw runs a server session over a loopback pair whose client side
// is raw, completes the handshake from that side as a plain v1 client (with
// a small receive buffer, so that a peer that does not read stops taking
// data soon) and returns the raw side, the session and Run's result.
func establishRaw(t *testing.T, cfg Config) (net.Conn, *Session, chan error) {
	t.Helper()
	raw, sc := testpeer.TCPPair(t)
	if err := raw.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	return establishOn(t, raw, sc, cfg)
}

// establishOn is establishRaw over a given pair of connections.
func establishOn(t *testing.T, raw, sc net.Conn, cfg Config) (net.Conn, *Session, chan error) {
	t.Helper()
	h := newRecorder()
	cfg.Role = RoleServer
	s := New(sc, cfg, h)
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- s.Run(context.Background())
	}()
	t.Cleanup(func() {
		s.Close()
		<-finished
	})
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 5})
	go raw.Write(append(hello, keepaliveFrame...)) // a pipe blocks until read
	wait(t, h.established)
	return raw, s, done
}

// TestKeepaliveFloodIsClosed: a peer that sends KEEPALIVEs as fast as it
// can and reads nothing is closed once its answers stop being taken by the
// writer, and the answers waiting meanwhile are bounded: those the writer
// took and those waiting, maxKeepaliveAnswers each at most.
func TestKeepaliveFloodIsClosed(t *testing.T) {
	raw, s, done := establishRaw(t, Config{})
	burst := make([]byte, 0, 64<<10)
	for len(burst) < cap(burst) {
		burst = append(burst, keepaliveFrame...)
	}
	maxQueue := 0
	// At most 256 MiB of keepalives; the session ends long before.
	for sent := 0; sent < 256<<20; sent += len(burst) {
		raw.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := raw.Write(burst); err != nil {
			break // the session closed the connection
		}
		maxQueue = max(maxQueue, s.Info().QueueBytes)
	}
	if err := wait(t, done); !errors.Is(err, ErrKeepaliveFlood) {
		t.Fatalf("err = %v, want ErrKeepaliveFlood", err)
	}
	// The writer may hold the handshake's answers, a take of keepalive
	// answers and as many waiting: a few hundred bytes, whatever was sent.
	if bound := 2*maxKeepaliveAnswers*len(keepaliveFrame) + 64; maxQueue > bound {
		t.Errorf("send queue reached %d bytes of keepalive answers, want at most %d", maxQueue, bound)
	}
}

// TestTrickleReaderIsClosed: a peer whose queue grows while it reads a
// trickle (below minReadRate) is closed, although every write it is given
// makes progress.
func TestTrickleReaderIsClosed(t *testing.T) {
	// A pipe: every byte read is write progress, with no TCP window and
	// timers in between.
	rawc, sc := net.Pipe()
	t.Cleanup(func() { rawc.Close() })
	raw, s, done := establishOn(t, rawc, sc, Config{WriteTimeout: 2 * time.Second, MaxQueue: 1 << 30, NoPaceV1: true})
	frames := make([]byte, 0, 64<<10)
	for len(frames) < 64<<10-100 {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(len(frames)))
	}
	buf := make([]byte, 1024)
	// Queue 64 KiB and read 1 KiB every 50 ms (20 KiB/s), at most 2,000
	// turns: the queue grows, and every write makes progress.
	var err error
	for i := 0; i < 2000 && err == nil; i++ {
		s.Send(frames, 0)
		if i%20 == 0 {
			go raw.Write(keepaliveFrame) // not silent: the hold timer stays off
		}
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, rerr := raw.Read(buf); rerr != nil {
			err = wait(t, done)
			break
		}
		select {
		case err = <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "reading slower than") {
		t.Fatalf("err = %v, want ErrStalled for reading too slowly", err)
	}
}

// TestPrioFramesCountAgainstMaxQueue: keepalives and handshake answers are
// bounded by MaxQueue like route data.
func TestPrioFramesCountAgainstMaxQueue(t *testing.T) {
	rawc, sc := net.Pipe()
	t.Cleanup(func() { rawc.Close() })
	_, s, done := establishOn(t, rawc, sc, Config{MaxQueue: 64 << 10, NoPaceV1: true})
	// The peer reads nothing, and a pipe buffers nothing: priority frames
	// wait in the queue. At most 8 MiB of them.
	for i := 0; i < 1<<20 && s.State() != StateClosed; i++ {
		s.sendPrio(wire.Subscribe{VNI: 1})
	}
	if err := wait(t, done); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
}
