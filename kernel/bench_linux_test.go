//go:build linux

package kernel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// benchRoute returns route n of a synthetic table: prefix n is a distinct
// /28 in 10.0.0.0/8 (or a /64 in 2001:db8:1000::/36 for v6), spread over 64
// hypervisors; shift moves every prefix to another hypervisor.
func benchRoute(n, shift int, v6 bool) route.Route {
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 12), byte(n >> 4), byte(n << 4)}), 28)
	if v6 {
		p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x10 | byte(n>>24&0xf), byte(n >> 16), byte(n >> 8), byte(n)}), 64)
	}
	hv := [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(1 + (n+shift)%64)}
	return route.Route{VNI: 23, Prefix: p, NextHop: route.NextHop{Address: netip.AddrFrom16(hv)}}
}

// BenchmarkInstall measures the installer end to end, from the first
// AddRoute to the last kernel answer: "initial" installs a full table into
// an empty kernel table, "churn" moves every prefix of an installed table
// to another nexthop (one route replacement each), "withdraw" removes every
// route of an installed table, "restart" is a restart with a full table in
// the kernel: New adopting it, every route re-added, Synced.
func BenchmarkInstall(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("initial/%d", n), func(b *testing.B) { benchInitial(b, n, false) })
		b.Run(fmt.Sprintf("churn/%d", n), func(b *testing.B) { benchChurn(b, n) })
		b.Run(fmt.Sprintf("withdraw/%d", n), func(b *testing.B) { benchWithdraw(b, n) })
	}
	b.Run("initial-ipv6/100000", func(b *testing.B) { benchInitial(b, 100_000, true) })
	b.Run("restart/100000", func(b *testing.B) { benchRestart(b, 100_000) })
}

// cpuClock sums the CPU time (user and system, so including the kernel's
// work in our system calls) the process spends between start and stop.
// Unlike wall time it hardly depends on what else the machine runs.
type cpuClock struct {
	total time.Duration
	begin time.Duration
}

func cpuNow() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) start() { c.begin = cpuNow() }
func (c *cpuClock) stop()  { c.total += cpuNow() - c.begin }

func reportRate(b *testing.B, routes int, cpu *cpuClock) {
	total := float64(b.N) * float64(routes)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/route")
	b.ReportMetric(total/b.Elapsed().Seconds(), "routes/s")
	b.ReportMetric(float64(cpu.total.Nanoseconds())/total, "cpu-ns/route")
}

// startBench starts an installer that removes what it finds in New (the
// previous iteration's routes).
func startBench(b *testing.B, e *testEnv) (*Installer, func()) {
	i := e.newInstaller(b, Config{AdoptGrace: -1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	// Let Run finish its start-up reconciliation outside the measurement.
	eventually(b, "first reconciliation", func() bool { return i.Stats().Reconciles > 0 })
	return i, func() {
		cancel()
		<-done
		i.Close()
	}
}

func waitInstalled(b *testing.B, i *Installer, n int) {
	flush(b, i)
	if s := i.Stats(); s.Routes != n || s.Failing != 0 {
		b.Fatalf("stats = %+v, want %d routes", s, n)
	}
}

func benchInitial(b *testing.B, n int, v6 bool) {
	e := newEnv(b)
	routes := make([]route.Route, n)
	for k := range routes {
		routes[k] = benchRoute(k, 0, v6)
	}
	var cpu cpuClock
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		i, stop := startBench(b, e) // New removes the previous iteration's routes
		b.StartTimer()
		cpu.start()
		for _, r := range routes {
			if err := i.AddRoute(r); err != nil {
				b.Fatal(err)
			}
		}
		waitInstalled(b, i, n)
		cpu.stop()
		b.StopTimer()
		stop()
	}
	reportRate(b, n, &cpu)
}

func benchChurn(b *testing.B, n int) {
	e := newEnv(b)
	i, stop := startBench(b, e)
	defer stop()
	for k := range n {
		if err := i.AddRoute(benchRoute(k, 0, false)); err != nil {
			b.Fatal(err)
		}
	}
	waitInstalled(b, i, n)
	var cpu cpuClock
	b.ResetTimer()
	cpu.start()
	for it := range b.N {
		for k := range n {
			if err := i.RemoveRoute(benchRoute(k, it, false)); err != nil {
				b.Fatal(err)
			}
			if err := i.AddRoute(benchRoute(k, it+1, false)); err != nil {
				b.Fatal(err)
			}
		}
		waitInstalled(b, i, n)
	}
	cpu.stop()
	reportRate(b, n, &cpu)
}

func benchWithdraw(b *testing.B, n int) {
	e := newEnv(b)
	i, stop := startBench(b, e)
	defer stop()
	var cpu cpuClock
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for k := range n {
			if err := i.AddRoute(benchRoute(k, 0, false)); err != nil {
				b.Fatal(err)
			}
		}
		waitInstalled(b, i, n)
		b.StartTimer()
		cpu.start()
		for k := range n {
			if err := i.RemoveRoute(benchRoute(k, 0, false)); err != nil {
				b.Fatal(err)
			}
		}
		waitInstalled(b, i, 0)
		cpu.stop()
	}
	reportRate(b, n, &cpu)
}

// BenchmarkRouteReplaceBaseline is the straightforward way for comparison:
// one synchronous netlink call per route (vishvananda/netlink RouteReplace
// with a classic encap ip6 route), waiting for each answer.
func BenchmarkRouteReplaceBaseline(b *testing.B) {
	e := newEnv(b)
	const n = 10_000
	var cpu cpuClock
	b.ResetTimer()
	cpu.start()
	for it := range b.N {
		for k := range n {
			r := benchRoute(k, it, false)
			err := e.h.RouteReplace(&netlink.Route{
				LinkIndex: e.dev.Attrs().Index,
				Dst:       &net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), 32)},
				Table:     testTable,
				Protocol:  DefaultProtocol,
				Encap:     &netlink.IP6tnlEncap{Dst: r.NextHop.Address.AsSlice(), Src: net.IPv6zero},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	cpu.stop()
	reportRate(b, n, &cpu)
}

func benchRestart(b *testing.B, n int) {
	e := newEnv(b)
	i, stop := startBench(b, e)
	for k := range n {
		if err := i.AddRoute(benchRoute(k, 0, false)); err != nil {
			b.Fatal(err)
		}
	}
	waitInstalled(b, i, n)
	stop()
	var cpu cpuClock
	b.ResetTimer()
	for range b.N {
		cpu.start()
		i := e.newInstaller(b, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- i.Run(ctx) }()
		for k := range n {
			if err := i.AddRoute(benchRoute(k, 0, false)); err != nil {
				b.Fatal(err)
			}
		}
		flush(b, i)
		i.Synced()
		waitInstalled(b, i, n)
		cpu.stop()
		b.StopTimer()
		if s := i.Stats(); s.Unconfirmed != 0 || s.Failures != 0 {
			b.Fatalf("stats = %+v", s)
		}
		cancel()
		<-done
		i.Close()
		b.StartTimer()
	}
	reportRate(b, n, &cpu)
}
