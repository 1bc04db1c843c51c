package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestFreeIsBelowEphemeralRangeAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		addr := Free(t, "127.0.0.1")
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		if p < low || p >= ephemeralLow() {
			t.Fatalf("port %d outside [%d, %d)", p, low, ephemeralLow())
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("handed-out %s cannot be bound: %v", addr, err)
		}
		ln.Close()
	}
}

func TestRangeSkipsBoundPorts(t *testing.T) {
	base := Range(t, "127.0.0.1", 4)
	for p := base; p < base+4; p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d of the range cannot be bound: %v", p, err)
		}
		defer ln.Close()
	}
	// With the range bound, the next range never overlaps it.
	next := Range(t, "127.0.0.1", 4)
	if next < base+4 && base < next+4 {
		t.Fatalf("range %d..%d overlaps the bound range %d..%d", next, next+3, base, base+3)
	}
}
