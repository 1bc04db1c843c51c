package metalbond_test

// Go benchmarks of the server's fan-out path, through a real Server over
// loopback TCP, driven by the lean raw peers of internal/bench (which
// verify every update they receive but do not decode the common case, so
// that they are not the bottleneck). Each op is one route: b.N routes go to
// S subscribers, and deliveries/s counts updates received. Allocations are
// the server's (the peers allocate nothing per route).
//
//	go test -run '^$' -bench 'Fanout|Join|ServerMemory' -benchmem
//
// The scenario tool with isolated server CPU and memory figures is
// cmd/metalbond-bench; see docs/benchmarks.md.

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/bench"
)

// benchServer runs a Server on a loopback port until b ends.
func benchServer(b *testing.B) string {
	b.Helper()
	srv, err := metalbond.NewServer(metalbond.ServerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// benchHarness connects the peers of a fan-out of b.N routes to s
// subscribers.
func benchHarness(b *testing.B, s int) *bench.Harness {
	b.Helper()
	addr := benchServer(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	b.Cleanup(cancel)
	h, err := bench.NewHarness(ctx, addr, b.N, s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	return h
}

func benchCheck(b *testing.B, h *bench.Harness) {
	b.Helper()
	ex, err := h.Check()
	if err != nil {
		b.Fatal(err)
	}
	if !ex.Exact() {
		b.Fatalf("subscribers are not exact: %+v", ex)
	}
}

// BenchmarkFanout announces b.N routes (add) or withdraws them (remove) to
// S subscribers of one VNI; an op ends when every subscriber has the
// update.
func BenchmarkFanout(b *testing.B) {
	for _, s := range []int{1, 10} {
		for _, phase := range []string{"add", "remove"} {
			b.Run(fmt.Sprintf("S=%d/%s", s, phase), func(b *testing.B) {
				h := benchHarness(b, s)
				if err := h.Subscribe(); err != nil {
					b.Fatal(err)
				}
				if phase == "remove" {
					if err := h.Add(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				var err error
				if phase == "add" {
					err = h.Add()
				} else {
					err = h.Remove()
				}
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)*float64(s)/b.Elapsed().Seconds(), "deliveries/s")
				benchCheck(b, h)
			})
		}
	}
}

// BenchmarkJoin loads b.N routes into a VNI, then S subscribers subscribe
// at once; an op is one route of the full-table sync they receive.
func BenchmarkJoin(b *testing.B) {
	for _, s := range []int{1, 10} {
		b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
			h := benchHarness(b, s)
			if err := h.Add(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			err := h.Subscribe()
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)*float64(s)/b.Elapsed().Seconds(), "deliveries/s")
			benchCheck(b, h)
		})
	}
}

// BenchmarkServerMemory announces b.N routes with no subscriber and reports
// the growth of the live heap per route. The heap is the whole process's,
// but the peers allocate nothing while routes are announced.
// For a stable figure use a fixed large count:
//
//	go test -run '^$' -bench ServerMemory -benchtime 1000000x
func BenchmarkServerMemory(b *testing.B) {
	h := benchHarness(b, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	if err := h.Add(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/float64(b.N), "heap-B/route")
	runtime.KeepAlive(h)
}
