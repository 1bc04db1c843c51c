package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/metalbond/metalbond/route"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DefaultProtocol is the routing protocol number (rtm_protocol of routes,
// nh_protocol of nexthop objects) that marks everything this package
// installs: 254. It is assigned neither by the kernel's rtnetlink.h nor in
// iproute2's rt_protos, so `ip route show proto 254` lists exactly ours.
const DefaultProtocol netlink.RouteProtocol = 254

// DefaultReconcileInterval is how often Run compares the kernel tables
// with the desired state when Config.ReconcileInterval is 0.
const DefaultReconcileInterval = 30 * time.Second

// DefaultAdoptGrace is how long New's adopted routes wait for
// confirmation when Config.AdoptGrace is 0: as long as servers keep a
// restarting client's routes by default (metalbond.DefaultGracefulRestart),
// so the kernel does not forget a route before the servers would.
const DefaultAdoptGrace = 60 * time.Second

// AdoptOff, as Config.AdoptGrace, makes New remove the routes of ours it
// finds instead of adopting them; any negative value does. (Zero there
// means DefaultAdoptGrace.)
const AdoptOff time.Duration = -1

// Retry backoff for routes the kernel refuses: the first retry after
// retryMin, doubling up to retryMax.
const (
	retryMin = 200 * time.Millisecond
	retryMax = 30 * time.Second
)

// ErrClosed is returned by an Installer's methods after Close.
var ErrClosed = errors.New("kernel: installer closed")

// ErrTableInUse is returned by New when another installer in the same
// network namespace already installs into one of the mapped tables. Two
// installers cannot share a table: each would take the other's routes for
// its own.
var ErrTableInUse = errors.New("kernel: routing table in use by another installer")

// ErrNotSupported is returned by New on systems other than Linux.
var ErrNotSupported = errors.New("kernel: installing routes is only supported on Linux")

// Config configures an Installer. Tables and Device are required.
type Config struct {
	// Tables maps each VNI whose routes are installed to a kernel routing
	// table (--install-routes VNI#TABLE). Routes of other VNIs are
	// ignored. Several VNIs may share a table; a prefix's nexthops are
	// then merged.
	Tables map[route.VNI]int

	// Device is the tunnel device (--tun), typically created with
	// `ip link add overlay-tun type ip6tnl mode any external`.
	Device string

	// IPv4Only ignores routes to IPv6 prefixes (--ipv4-only).
	IPv4Only bool

	// Protocol marks our routes and nexthop objects; 0 means
	// DefaultProtocol. It must be 1..255.
	Protocol netlink.RouteProtocol

	// Logger receives lifecycle events at Info, refused routes at Warn
	// and per-route events at Debug. nil discards.
	Logger *slog.Logger

	// ReconcileInterval is the period of the full comparison between
	// kernel and desired state. 0 means DefaultReconcileInterval; a
	// negative value disables periodic reconciliation (link events still
	// trigger it).
	ReconcileInterval time.Duration

	// AdoptGrace decides what New does with the routes and nexthop objects
	// of ours it finds in the mapped tables, left by an earlier process
	// (a restart, an upgrade, a crash).
	//
	// Zero means DefaultAdoptGrace (60s), not off. AdoptOff (any negative
	// value) removes them at start: the command line's --adopt-grace 0 is
	// AdoptOff here.
	//
	// With a positive value New adopts them: they stay in the kernel,
	// unconfirmed, and AddRoute of the same nexthops changes nothing in
	// the kernel. A route re-added with other nexthops keeps its
	// unconfirmed ones besides them until adoption ends. Routes and
	// nexthops still unconfirmed when Synced is called, or AdoptGrace
	// after New if it never is (plain v1 servers), are removed like
	// withdrawn ones. AdoptOff removes everything of ours in New instead
	// (the behaviour before adoption existed: traffic is dropped until the
	// servers have resent every route).
	AdoptGrace time.Duration

	// NetNS is the network namespace to work in, as opened with
	// netns.GetFromName, netns.GetFromPath or netns.New. The zero value
	// and netns.None() mean the namespace of the process at the time New
	// is called. New duplicates the handle; the caller may close its own.
	NetNS netns.NsHandle
}

// Stats is a snapshot of an Installer's state and counters, for metrics.
type Stats struct {
	Desired  int // prefixes wanted in the kernel, over all tables
	Routes   int // prefixes installed by us, as far as we know
	Nexthops int // nexthop objects (single and group) installed by us
	Pending  int // prefixes changed but not yet sent to the kernel
	Failing  int // prefixes the kernel refused, waiting for a retry
	// Unconfirmed counts the routes New adopted that still have nexthops
	// AddRoute has not confirmed; those leave at Synced or after
	// AdoptGrace.
	Unconfirmed int

	Failures   uint64 // kernel refusals (routes and nexthop objects)
	Retries    uint64 // retries of refused prefixes
	Repairs    uint64 // routes and nexthop objects fixed by reconciliation
	Reconciles uint64 // completed reconciliations
	Ignored    uint64 // routes ignored: VNI without a table, or IPv6 with IPv4Only
}

func (c Config) withDefaults() Config {
	if c.Protocol == 0 {
		c.Protocol = DefaultProtocol
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.AdoptGrace == 0 {
		c.AdoptGrace = DefaultAdoptGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Device == "" {
		return errors.New("kernel: no tunnel device configured (--tun)")
	}
	if len(c.Tables) == 0 {
		return errors.New("kernel: no VNI is mapped to a routing table (--install-routes VNI#TABLE)")
	}
	for vni, t := range c.Tables {
		if !vni.Valid() {
			return fmt.Errorf("kernel: VNI %d exceeds 24 bits", vni)
		}
		if t <= 0 || int64(t) > 1<<32-1 {
			return fmt.Errorf("kernel: VNI %d: invalid routing table %d: want 1 to %d", vni, t, uint32(1<<32-1))
		}
	}
	if c.Protocol <= 0 || c.Protocol > 255 {
		return fmt.Errorf("kernel: invalid routing protocol number %d: want 1 to 255", c.Protocol)
	}
	return nil
}
