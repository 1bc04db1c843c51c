// Package testport hands out TCP ports for tests that must know a port
// before the process that listens on it starts, or that restart a
// listener on the same port.
//
// Asking the kernel for port 0 and closing the socket again is not enough
// for that: such a port comes from the ephemeral range, where every
// outgoing connection on the machine also takes its source port, so a
// client's connection can take the port before the listener binds it.
// The ports handed out here lie below the ephemeral range, where only
// explicit binds go, and are never handed out twice by one process.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports are taken from [low, ephemeralLow()).
const low = 10000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Free returns host:port with a port that was free a moment ago, below the
// ephemeral range.
func Free(t testing.TB, host string) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(Range(t, host, 1)))
}

// Range returns the first of n consecutive ports on host that were free a
// moment ago, below the ephemeral range.
func Range(t testing.TB, host string, n int) int {
	t.Helper()
	high := ephemeralLow()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		base := low + rand.IntN(high-low-n)
		if available(host, base, n) {
			for p := base; p < base+n; p++ {
				issued[p] = true
			}
			return base
		}
	}
	t.Fatalf("testport: no %d free consecutive ports on %s in [%d, %d)", n, host, low, high)
	return 0
}

// available reports whether ports [base, base+n) were not issued before
// and can be bound on host now.
func available(host string, base, n int) bool {
	for p := base; p < base+n; p++ {
		if issued[p] {
			return false
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// ephemeralLow returns the first port of the kernel's ephemeral range
// (32768 when it cannot be read, the kernel's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &lo, &hi); err != nil || lo <= low+1000 {
		return 32768
	}
	return lo
}
