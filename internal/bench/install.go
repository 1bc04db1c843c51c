package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// installTable is the kernel routing table the install scenario uses.
const installTable = 100

var nsSeq atomic.Int64

// runInstall: N routes go into a kernel routing table through the netlink
// installer (package kernel), then are removed, in a network namespace
// created for the run with a veth device standing in for the tunnel; each
// phase ends when Flush reports every change sent to the kernel, and the
// table is then read back and compared with the expected routes. With Lib
// the routes travel from a raw announcer through the server and a
// metalbond.Client to the installer, so the phase measures the whole path.
func runInstall(e *env) error {
	if runtime.GOOS != "linux" {
		return skipError{"installing routes needs Linux"}
	}
	if os.Geteuid() != 0 {
		return skipError{"needs root (CAP_NET_ADMIN) to create a network namespace and change routes"}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return skipError{"needs the ip command (iproute2) to create the network namespace"}
	}
	ns := fmt.Sprintf("mbbench-%d-%d", os.Getpid(), nsSeq.Add(1))
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	defer ip("netns", "del", ns)
	for _, args := range [][]string{
		{"-n", ns, "link", "add", "mbb0", "type", "veth", "peer", "name", "mbb1"},
		{"-n", ns, "link", "set", "mbb0", "up"},
		{"-n", ns, "link", "set", "mbb1", "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer h.Close()

	n := e.cfg.N
	l := NewLayout(1, n, 1, vniBase)
	inst, err := kernel.New(kernel.Config{
		Tables:            map[route.VNI]int{l.VNIOf(0): installTable},
		Device:            "mbb0",
		NetNS:             h,
		ReconcileInterval: -1,
	})
	if err != nil {
		return err
	}
	defer inst.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- inst.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()

	var feed func(add bool) error
	if e.cfg.Lib {
		feed, err = e.installThroughClient(l, inst)
		if err != nil {
			return err
		}
	} else {
		feed = func(add bool) error {
			change := inst.AddRoute
			if !add {
				change = inst.RemoveRoute
			}
			for g := range n {
				if err := change(l.Route(g)); err != nil {
					return err
				}
			}
			return nil
		}
	}

	for _, add := range []bool{true, false} {
		name := "add"
		if !add {
			name = "remove"
		}
		p, err := e.phase(name, int64(n), int64(n), func() (time.Duration, error) {
			start := time.Now()
			if err := feed(add); err != nil {
				return 0, err
			}
			if err := inst.Flush(e.ctx); err != nil {
				return 0, err
			}
			return time.Since(start), nil
		})
		if err != nil {
			return err
		}
		ex, err := checkKernel(h, l, add)
		if err != nil {
			return err
		}
		p.Exactness = &ex
		e.res.Exactness.merge(ex)
	}
	e.res.Headline = "add"
	st := inst.Stats()
	e.res.Metrics["kernel_failures"] = float64(st.Failures)
	e.res.Metrics["kernel_retries"] = float64(st.Retries)
	if st.Failures > 0 {
		e.res.Notes = append(e.res.Notes, fmt.Sprintf("the kernel refused %d changes (retried in the background)", st.Failures))
	}
	return nil
}

// installThroughClient connects a raw announcer and a library client whose
// Installer is inst (with a counter in front), subscribed to the VNI of l.
// The returned feed announces or withdraws every route and waits until the
// client has handed all of them to the installer.
func (e *env) installThroughClient(l *Layout, inst *kernel.Installer) (func(add bool) error, error) {
	ci := &countingInstaller{inner: inst}
	ci.wake = make(chan struct{}, 1)
	lp, err := e.startLibWith(ci)
	if err != nil {
		return nil, err
	}
	if err := lp.c.Subscribe(e.ctx, l.VNIOf(0)); err != nil {
		return nil, err
	}
	ann, err := e.announcer(l)
	if err != nil {
		return nil, err
	}
	n := int64(l.Len())
	return func(add bool) error {
		if err := ann.send(add, 0, l.Len()); err != nil {
			return err
		}
		want := int64(0)
		if add {
			want = n
		}
		for ci.adds.Load()-ci.removes.Load() != want {
			select {
			case <-ci.wake:
			case <-e.ctx.Done():
				return e.ctx.Err()
			}
		}
		return nil
	}, nil
}

// countingInstaller counts the changes it passes on.
type countingInstaller struct {
	inner         *kernel.Installer
	adds, removes atomic.Int64
	wake          chan struct{}
}

func (c *countingInstaller) AddRoute(r route.Route) error {
	err := c.inner.AddRoute(r)
	c.adds.Add(1)
	c.notify()
	return err
}

func (c *countingInstaller) RemoveRoute(r route.Route) error {
	err := c.inner.RemoveRoute(r)
	c.removes.Add(1)
	c.notify()
	return err
}

func (c *countingInstaller) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// checkKernel reads the install table back and compares its routes of our
// protocol with the layout: all of them after adding, none after removing.
// It checks destinations, not the encapsulation of each nexthop.
func checkKernel(h netns.NsHandle, l *Layout, want bool) (Exactness, error) {
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return Exactness{}, err
	}
	defer nh.Close()
	rs, err := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: installTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return Exactness{}, fmt.Errorf("list kernel routes: %w", err)
	}
	ex := Exactness{Receivers: 1}
	seen := make([]bool, l.Len())
	for _, r := range rs {
		if r.Protocol != kernel.DefaultProtocol || r.Dst == nil {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		ip4 := r.Dst.IP.To4()
		g := -1
		if ip4 != nil && ones == 32 && bits == 32 {
			g = int(binary.BigEndian.Uint32(ip4)) - prefixBase
		}
		switch {
		case g < 0 || g >= l.Len() || !want:
			ex.Extra++
		case seen[g]:
			ex.Duplicate++
		default:
			seen[g] = true
		}
	}
	if want {
		for _, ok := range seen {
			if !ok {
				ex.Missing++
			}
		}
	}
	return ex, nil
}

// ip runs the ip command.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
