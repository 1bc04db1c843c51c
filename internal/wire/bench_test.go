package wire

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// benchRoutes are the routes of the transcript: IPv4 standard, IPv4 NAT
// and IPv6 load-balancer target.
var benchRoutes = []string{
	"23#10.0.23.0/24#2001:db8::1",
	"23#10.0.24.0/24#2001:db8::2#NAT#1000#2000",
	"24#2001:db8:5::/64#2001:db8::3#LB",
}

func BenchmarkAppendUpdate(b *testing.B) {
	for _, s := range benchRoutes {
		r := mustRoute(b, s)
		b.Run(r.Prefix.String(), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 128)
			for b.Loop() {
				buf = AppendUpdate(buf[:0], ActionAdd, r)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkAppendUpdateReference is proto.Marshal of the same message,
// for comparison.
func BenchmarkAppendUpdateReference(b *testing.B) {
	r := mustRoute(b, benchRoutes[1])
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	for b.Loop() {
		var err error
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], updateToPB(ActionAdd, r)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeUpdate(b *testing.B) {
	for _, s := range benchRoutes {
		r := mustRoute(b, s)
		body := AppendUpdate(nil, ActionAdd, r)[HeaderLen:]
		b.Run(r.Prefix.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := DecodeUpdate(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeUpdateReference is proto.Unmarshal of the same body and
// the same validation, for comparison.
func BenchmarkDecodeUpdateReference(b *testing.B) {
	body := AppendUpdate(nil, ActionAdd, mustRoute(b, benchRoutes[1]))[HeaderLen:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := referenceDecodeUpdate(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReader reads a stream of UPDATE frames, as a server's reader
// goroutine does: ReadFrame and DecodeUpdate per frame. The ReadMessage
// variant decodes through the Message interface.
func BenchmarkReader(b *testing.B) {
	var stream []byte
	for i := range 1000 {
		stream = AppendUpdate(stream, Action(i%2), mustRoute(b, benchRoutes[i%len(benchRoutes)]))
	}
	frameLen := int64(len(stream) / 1000)
	b.Run("ReadFrame+DecodeUpdate", func(b *testing.B) {
		r := NewReader(&loopReader{data: stream})
		b.ReportAllocs()
		b.SetBytes(frameLen)
		for b.Loop() {
			_, body, err := r.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecodeUpdate(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReadMessage", func(b *testing.B) {
		r := NewReader(&loopReader{data: stream})
		b.ReportAllocs()
		b.SetBytes(frameLen)
		for b.Loop() {
			if _, err := r.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
