// Package testnet gives tests a network path with real segment boundaries:
// two network namespaces joined by a veth pair with a 1500-byte MTU and the
// segmentation offloads (TSO, GSO, GRO) off, so that TCP cuts the byte
// stream into 1448-byte segments as a datacenter network does. Loopback,
// with its 64 KiB MSS, hides how a writer's bytes are cut.
//
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 and ethtool.
// Without them the test is skipped, unless CI is set: then it fails.
package testnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Path is a veth pair between namespace A (address AddrA) and namespace B
// (AddrB). Everything is removed when the test ends.
type Path struct {
	NSA, NSB     string // namespace names
	AddrA, AddrB string // IPv6 addresses, without brackets
}

// MTU is the MTU of the veth pair.
const MTU = 1500

// New creates a Path, or skips the test when it cannot (fails under CI).
func New(tb testing.TB) *Path {
	tb.Helper()
	if msg := missing(); msg != "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("testnet: %s (required under CI)", msg)
		}
		tb.Skipf("testnet: %s", msg)
	}
	var id [3]byte
	rand.Read(id[:])
	suffix := hex.EncodeToString(id[:])
	p := &Path{NSA: "mbta-" + suffix, NSB: "mbtb-" + suffix, AddrA: "fd00:7e57::1", AddrB: "fd00:7e57::2"}
	run(tb, "ip", "netns", "add", p.NSA)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", p.NSA).Run() })
	run(tb, "ip", "netns", "add", p.NSB)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", p.NSB).Run() })
	run(tb, "ip", "-n", p.NSA, "link", "add", "veth0", "mtu", fmt.Sprint(MTU), "type", "veth",
		"peer", "name", "veth0", "netns", p.NSB, "mtu", fmt.Sprint(MTU))
	for _, end := range []struct{ ns, addr string }{{p.NSA, p.AddrA}, {p.NSB, p.AddrB}} {
		run(tb, "ip", "netns", "exec", end.ns, "ethtool", "-K", "veth0", "tso", "off", "gso", "off", "gro", "off")
		run(tb, "ip", "-n", end.ns, "addr", "add", end.addr+"/64", "dev", "veth0", "nodad")
		run(tb, "ip", "-n", end.ns, "link", "set", "lo", "up")
		run(tb, "ip", "-n", end.ns, "link", "set", "veth0", "up")
	}
	return p
}

// missing says what the machine lacks for a Path, or "".
func missing() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, tool := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	return ""
}

func run(tb testing.TB, name string, args ...string) {
	tb.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tb.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

// Listen listens on port (0: any) of AddrA in namespace A.
func (p *Path) Listen(tb testing.TB, port int) net.Listener {
	tb.Helper()
	var ln net.Listener
	in(tb, p.NSA, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(p.AddrA, fmt.Sprint(port)))
		return err
	})
	return ln
}

// Dial connects from namespace B to addr (in namespace A), retrying for a
// few seconds while the link comes up.
func (p *Path) Dial(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	var conn net.Conn
	in(tb, p.NSB, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				conn = c
				return nil
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	return conn
}

// Dialer returns a function that dials from namespace B, for code that
// dials by itself (a client given a dial function).
func (p *Path) Dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := within(p.NSB, func() (err error) {
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// in runs fn in namespace ns (see within) and fails tb on an error.
func in(tb testing.TB, ns string, fn func() error) {
	tb.Helper()
	if err := within(ns, fn); err != nil {
		tb.Fatalf("in namespace %s: %v", ns, err)
	}
}

// within runs fn on an OS thread of its own switched into namespace ns.
// Sockets fn creates stay in ns for their lifetime, whatever thread uses
// them later. The thread is never switched back: its goroutine exits
// locked, and the runtime discards it.
func within(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
