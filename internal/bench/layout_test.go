package bench

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"testing/iotest"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// bodies splits concatenated frames into their bodies.
func bodies(t *testing.T, frames []byte) [][]byte {
	t.Helper()
	f := framer{r: bytes.NewReader(frames), buf: make([]byte, 256)}
	var out [][]byte
	for {
		typ, body, err := f.next()
		if err != nil {
			return out
		}
		if typ != wire.TypeUpdate {
			t.Fatalf("type %s", typ)
		}
		out = append(out, bytes.Clone(body))
	}
}

func TestLayoutMatch(t *testing.T) {
	l := NewLayout(7, 5, 3, 300)
	adds := bodies(t, l.AddFrames(0, l.Len()))
	removes := bodies(t, l.RemoveFrames(0, l.Len()))
	if len(adds) != l.Len() || len(removes) != l.Len() {
		t.Fatalf("%d adds, %d removes, want %d", len(adds), len(removes), l.Len())
	}
	for g := range l.Len() {
		if k, got, add := l.match(adds[g]); k != matchRoute || got != g || !add {
			t.Errorf("add %d: got %v %d %v", g, k, got, add)
		}
		if k, got, add := l.match(removes[g]); k != matchRoute || got != g || add {
			t.Errorf("remove %d: got %v %d %v", g, k, got, add)
		}
		// Another valid encoding (an unknown field appended) takes the
		// decoding path and must give the same answer.
		other := append(bytes.Clone(adds[g]), 0x78, 0x01) // field 15, varint 1
		if _, _, ok := l.matchFast(other); ok {
			t.Fatalf("fast path accepted a non-canonical body")
		}
		if k, got, add := l.match(other); k != matchRoute || got != g || !add {
			t.Errorf("non-canonical add %d: got %v %d %v", g, k, got, add)
		}
	}
	r := l.Route(3)
	r.NextHop.Address = netip.MustParseAddr("2001:db8::99")
	if k, _, _ := l.match(bodies(t, wire.AppendUpdate(nil, wire.ActionAdd, r))[0]); k != matchForeign {
		t.Errorf("wrong nexthop: got %v, want foreign", k)
	}
	r = l.Route(3)
	r.VNI++
	if k, _, _ := l.match(bodies(t, wire.AppendUpdate(nil, wire.ActionAdd, r))[0]); k != matchForeign {
		t.Errorf("wrong VNI: got %v, want foreign", k)
	}
	if k, _, _ := l.match([]byte{0xff}); k != matchForeign {
		t.Errorf("garbage: got %v, want foreign", k)
	}
	if k, got, add := l.match(bodies(t, fenceFrame(301, 42, false))[0]); k != matchFence || got != 42 || add {
		t.Errorf("fence: got %v %d %v", k, got, add)
	}
}

func TestLayoutLocal(t *testing.T) {
	l := NewLayout(10, 4, 3, 1)
	seen := map[[2]int]bool{}
	for g := range l.Len() {
		c := g / l.PerOwner()
		vi := c % l.VNIs()
		if l.Route(g).VNI != route.VNI(1+vi) {
			t.Fatalf("route %d in VNI %d", g, l.Route(g).VNI)
		}
		i := l.local(g)
		if i >= l.VNISize(vi) || l.global(vi, i) != g || seen[[2]int{vi, i}] {
			t.Fatalf("route %d: local %d of VNI %d (size %d) maps back to %d", g, i, vi, l.VNISize(vi), l.global(vi, i))
		}
		seen[[2]int{vi, i}] = true
	}
	if total := l.VNISize(0) + l.VNISize(1) + l.VNISize(2); total != l.Len() {
		t.Fatalf("VNI sizes sum to %d, want %d", total, l.Len())
	}
}

func TestFramer(t *testing.T) {
	l := NewLayout(1, 50, 1, 9)
	stream := append(bytes.Clone(keepaliveFrame), l.AddFrames(0, 50)...)
	f := framer{r: iotest.OneByteReader(bytes.NewReader(stream)), buf: make([]byte, 64)}
	n := 0
	for {
		typ, _, err := f.next()
		if err != nil {
			break
		}
		if typ == wire.TypeUpdate {
			n++
		}
	}
	if n != 50 {
		t.Fatalf("read %d updates one byte at a time, want 50", n)
	}
	for _, tt := range []struct {
		frame []byte
		want  error
	}{
		{[]byte{2, 0, 0, 2}, wire.ErrBadVersion},
		{[]byte{1, 0, 0, 9}, wire.ErrUnknownType},
		{[]byte{1, 0xff, 0xff, 5}, wire.ErrTooLarge},
	} {
		f := framer{r: bytes.NewReader(tt.frame), buf: make([]byte, 64)}
		if _, _, err := f.next(); !errors.Is(err, tt.want) {
			t.Errorf("% x: got %v, want %v", tt.frame, err, tt.want)
		}
	}
}

func TestReceiver(t *testing.T) {
	l := NewLayout(4, 3, 2, 100)
	r := NewReceiver(l, 0, 0) // owner 0: VNI 100 holds owners 0 and 2
	r.apply(6, true)          // owner 2
	r.apply(6, true)          // duplicate
	r.apply(7, false)         // remove of a route not held
	r.apply(1, true)          // its own route: foreign
	r.apply(3, true)          // owner 1 is in the other VNI: foreign
	got := r.check(func(g int) bool { return g == 6 || g == 8 })
	want := Exactness{Receivers: 1, Missing: 1, Extra: 2, Duplicate: 2}
	if got.Receivers != want.Receivers || got.Missing != want.Missing || got.Extra != want.Extra || got.Duplicate != want.Duplicate {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
