//go:build linux

package session

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/internal/testnet"
	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

// BenchmarkPaceReaders sends a table to a reader that behaves like the
// deployed v1 implementation (internal/deployedv1) at several speeds, over
// loopback (64 KiB MSS) and over a veth path with a 1500-byte MTU and
// offloads off (1448-byte MSS; needs root and ethtool). It reports how long
// the transfer took against the reader's own processing time (floor-ms) and
// the largest read; any read that would break the deployed reader fails it.
//
//	go test -run '^$' -bench PaceReaders -benchtime 3x ./internal/session/
func BenchmarkPaceReaders(b *testing.B) {
	for _, path := range []string{"lo", "mtu1500"} {
		for _, delay := range []time.Duration{0, 5 * time.Microsecond, 20 * time.Microsecond, 100 * time.Microsecond} {
			n := 100_000
			if delay > 0 {
				n = min(n, int(2*time.Second/delay))
			}
			b.Run(fmt.Sprintf("path=%s/delay=%v/routes=%d", path, delay, n), func(b *testing.B) {
				var took time.Duration
				maxRead := int64(0)
				for b.Loop() {
					client, server := benchPath(b, path)
					d, m := paceReaderRun(b, client, server, delay, n)
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

// benchPath returns a connected TCP pair over loopback or a 1500-MTU veth.
func benchPath(b *testing.B, path string) (client, server net.Conn) {
	if path == "lo" {
		return testpeer.TCPPair(b)
	}
	p := testnet.New(b)
	ln := p.Listen(b, 0)
	defer ln.Close()
	client = p.Dial(b, ln.Addr().String())
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// paceReaderRun sends n updates from a server session to a deployed-style
// client and returns how long they took to be processed and the largest
// read.
func paceReaderRun(b *testing.B, client, server net.Conn, delay time.Duration, n int) (time.Duration, int64) {
	h := newRecorder()
	s := New(server, Config{Role: RoleServer, MaxQueue: 1 << 30}, h)
	ctx, cancel := context.WithCancel(context.Background())
	sdone, pdone := make(chan error, 1), make(chan error, 1)
	go func() { sdone <- s.Run(ctx) }()
	peer := deployedv1.New(client, deployedv1.Config{Delay: delay, Keepalive: time.Second})
	go func() { pdone <- peer.RunClient(ctx) }()
	defer func() {
		cancel()
		<-sdone
		<-pdone
	}()
	<-h.established
	var frames []byte
	for i := range n {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	start := time.Now()
	s.Send(frames, n)
	deadline := time.After(2 * time.Minute)
	for peer.Stats.Updates.Load() < int64(n) {
		select {
		case err := <-pdone:
			b.Fatalf("deployed-style reader after %d updates: %v", peer.Stats.Updates.Load(), err)
		case <-peer.Changed():
		case <-deadline:
			b.Fatalf("%d of %d updates after 2 minutes", peer.Stats.Updates.Load(), n)
		}
	}
	return time.Since(start), peer.Stats.MaxRead.Load()
}
