package bench

import (
	"net/netip"
	"testing"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// BenchmarkFullTableSync measures what a subscription costs the server
// before any I/O: walking a VNI's table and encoding every route as an ADD
// frame (see serverPeer.subscribe). internal/routetable and internal/wire
// benchmark the pieces alone; this is the combination, per route.
func BenchmarkFullTableSync(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(sizeName(n), func(b *testing.B) {
			l := NewLayout(1, n, 1, 100)
			s := routetable.NewShard(l.VNIOf(0))
			for g := range n {
				r := l.Route(g)
				s.Add(r.Prefix, r.NextHop, 1)
			}
			buf := make([]byte, 0, n*52)
			b.ReportAllocs()
			routes := 0
			for b.Loop() {
				buf = buf[:0]
				s.Range(func(p netip.Prefix, nh route.NextHop, _ routetable.Holders) bool {
					buf = wire.AppendUpdate(buf, wire.ActionAdd, route.Route{VNI: 100, Prefix: p, NextHop: nh})
					routes++
					return true
				})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(routes), "ns/route")
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkReceiverMatch is the load generator's cost per delivery:
// recognising and recording one received UPDATE, by comparing bytes (the
// common case) and, for comparison, by decoding it.
func BenchmarkReceiverMatch(b *testing.B) {
	const n = 100_000
	l := NewLayout(1, n, 1, 100)
	frames := l.AddFrames(0, n)
	var bodies [][]byte
	for off := 0; off < len(frames); {
		size := wire.HeaderLen + (int(frames[off+1])<<8 | int(frames[off+2]))
		bodies = append(bodies, frames[off+wire.HeaderLen:off+size])
		off += size
	}
	b.Run("fast", func(b *testing.B) {
		r := NewReceiver(l, 0, -1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i == n {
				i = 0
				r = NewReceiver(l, 0, -1)
			}
			r.updateLocked(bodies[i])
			i++
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := wire.DecodeUpdate(bodies[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func sizeName(n int) string {
	switch {
	case n >= 1_000_000:
		return itoa(n/1_000_000) + "M"
	case n >= 1000:
		return itoa(n/1000) + "k"
	}
	return itoa(n)
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
