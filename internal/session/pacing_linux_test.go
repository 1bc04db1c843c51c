//go:build linux

package session

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metalbond/metalbond/internal/wire"
)

// BenchmarkPaceReaders sends a table to a reader that reads like the
// deployed v1 implementation (one read into a 65,535-byte buffer at a time,
// a fixed time per message) at several speeds, over loopback with its
// 64 KiB MSS and with the reader advertising an MSS of 1448 as on a
// 1500-byte-MTU network. It reports how long the transfer took against the
// reader's own processing time (floor-ms), and the largest read.
//
//	go test -run '^$' -bench PaceReaders ./internal/session/
func BenchmarkPaceReaders(b *testing.B) {
	for _, mss := range []int{0, 1448} {
		for _, delay := range []time.Duration{0, 5 * time.Microsecond, 20 * time.Microsecond, 100 * time.Microsecond, 500 * time.Microsecond} {
			n := 100_000
			if delay > 0 {
				n = min(n, int(2*time.Second/delay))
			}
			name := fmt.Sprintf("mss=%d/delay=%v/routes=%d", mss, delay, n)
			if mss == 0 {
				name = fmt.Sprintf("mss=lo/delay=%v/routes=%d", delay, n)
			}
			b.Run(name, func(b *testing.B) {
				var took time.Duration
				maxRead := 0
				for b.Loop() {
					d, m := paceReaderRun(b, mss, delay, n)
					took += d
					maxRead = max(maxRead, m)
				}
				b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms")
				b.ReportMetric(float64((time.Duration(n) * delay).Milliseconds()), "floor-ms")
				b.ReportMetric(float64(maxRead), "max-read-B")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// paceReaderRun sends n updates to a deployed-style reader and returns how
// long it took and the largest read. A read of 65,535 bytes fails b.
func paceReaderRun(b *testing.B, mss int, delay time.Duration, n int) (time.Duration, int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var d net.Dialer
	if mss > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss) })
			return serr
		}
	}
	raw, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	h := newRecorder()
	s := New(sc, Config{Role: RoleServer, MaxQueue: 1 << 30}, h)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	defer func() {
		s.Close()
		<-done
	}()
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 5})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	raw.Write(append(hello, ka...))
	<-h.established
	stop := make(chan struct{})
	defer close(stop)
	go func() { // keepalives, as a v1 client sends them
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				raw.Write(ka)
			}
		}
	}()
	var frames []byte
	for i := range n {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	start := time.Now()
	s.Send(frames, n)

	buf := make([]byte, 65535)
	var pending []byte
	due := time.Now()
	updates, maxRead := 0, 0
	for updates < n {
		raw.SetReadDeadline(time.Now().Add(30 * time.Second))
		k, err := raw.Read(buf)
		if err != nil {
			b.Fatalf("read after %d updates: %v", updates, err)
		}
		if k == len(buf) {
			b.Fatalf("a read returned 65,535 bytes after %d updates", updates)
		}
		maxRead = max(maxRead, k)
		pending = append(pending, buf[:k]...)
		msgs := 0
		for len(pending) >= wire.HeaderLen {
			l := wire.HeaderLen + (int(pending[1])<<8 | int(pending[2]))
			if len(pending) < l {
				break
			}
			if wire.Type(pending[3]) == wire.TypeUpdate {
				updates++
			}
			pending = pending[l:]
			msgs++
		}
		pending = append([]byte(nil), pending...)
		now := time.Now()
		due = later(due, now).Add(time.Duration(msgs) * delay)
		if w := due.Sub(now); w > 2*time.Millisecond {
			time.Sleep(w - 1500*time.Microsecond)
		}
		for time.Now().Before(due) {
			runtime.Gosched()
		}
	}
	return time.Since(start), maxRead
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
