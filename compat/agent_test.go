package compat_test

// This file is written the way the programs that embed the existing
// library are: it uses the compat API only (through the import names
// those programs use), a route callback that calls back into MetalBond,
// and errors matched by lowercase substrings.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
)

// errMatches is how the agent tests an error: by a lowercase substring.
func errMatches(err error, substr string) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), substr)
}

// agentClient is a route callback like the hypervisor agent's: it records
// what it is told, and asks the MetalBond it belongs to whether the VNI is
// subscribed while being called.
type agentClient struct {
	mb atomic.Pointer[mb.MetalBond] // set after NewMetalBond, as the agent does

	inside atomic.Int32 // callbacks running now: more than one is a bug

	// onAdd, if set, is called from inside AddRoute, once.
	onAdd atomic.Pointer[func()]

	mu       sync.Mutex // guards the following
	routes   map[string]bool
	calls    []string
	cleanups int
	problems []string
	changed  chan struct{}
}

func newAgentClient() *agentClient {
	return &agentClient{routes: map[string]bool{}, changed: make(chan struct{}, 1)}
}

func routeKey(vni mb.VNI, dest mb.Destination, hop mb.NextHop) string {
	return fmt.Sprintf("%d#%s#%s", vni, dest.Prefix, hop)
}

func (c *agentClient) AddRoute(vni mb.VNI, dest mb.Destination, hop mb.NextHop) error {
	return c.record("add", vni, dest, hop)
}

func (c *agentClient) RemoveRoute(vni mb.VNI, dest mb.Destination, hop mb.NextHop) error {
	return c.record("remove", vni, dest, hop)
}

func (c *agentClient) Cleanup() error {
	c.mu.Lock()
	c.cleanups++
	c.calls = append(c.calls, "cleanup")
	c.mu.Unlock()
	c.notify()
	return nil
}

func (c *agentClient) record(op string, vni mb.VNI, dest mb.Destination, hop mb.NextHop) error {
	var problem string
	if c.inside.Add(1) != 1 {
		problem = "concurrent callbacks"
	}
	defer c.inside.Add(-1)
	if m := c.mb.Load(); m != nil {
		// Calls back into MetalBond from inside the callback, as the
		// agent does: this must neither deadlock nor lie.
		if op == "add" && !m.IsSubscribed(vni) {
			problem = fmt.Sprintf("add for VNI %d, which is not subscribed", vni)
		}
		if op == "add" && !slices.Contains(m.GetSubscribedVnis(), vni) {
			problem = fmt.Sprintf("GetSubscribedVnis lacks %d during its add", vni)
		}
	}
	want := mb.IPV4
	if dest.Prefix.Addr().Is6() {
		want = mb.IPV6
	}
	if dest.IPVersion != want {
		problem = fmt.Sprintf("destination %s with IPVersion %d", dest.Prefix, dest.IPVersion)
	}
	if op == "add" {
		if f := c.onAdd.Swap(nil); f != nil {
			(*f)()
		}
	}
	key := routeKey(vni, dest, hop)
	c.mu.Lock()
	c.calls = append(c.calls, op+" "+key)
	if op == "add" {
		c.routes[key] = true
	} else if c.routes[key] {
		delete(c.routes, key)
	} else {
		problem = "remove of a route never added: " + key
	}
	if problem != "" {
		c.problems = append(c.problems, problem)
	}
	c.mu.Unlock()
	c.notify()
	return nil
}

func (c *agentClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *agentClient) callLog() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// waitRoutes waits up to 10 s until the client holds exactly want.
func (c *agentClient) waitRoutes(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		var got []string
		for k := range c.routes {
			got = append(got, k)
		}
		problems := slices.Clone(c.problems)
		c.mu.Unlock()
		slices.Sort(got)
		if len(problems) > 0 {
			t.Fatalf("client misused: %q", problems)
		}
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("client routes:\n got %q\nwant %q", got, want)
		}
	}
}

// waitCalls waits up to 10 s until at least n callbacks were made.
func (c *agentClient) waitCalls(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := c.callLog(); len(got) >= n {
			return got
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("client calls: got %q, want %d of them", c.callLog(), n)
		}
	}
}

// waitState polls PeerState until cond holds, for up to 10 s, as the
// load-balancer speaker polls for ESTABLISHED before it goes on.
func waitState(t *testing.T, m *mb.MetalBond, server string, what string, cond func(mb.ConnectionState) bool) mb.ConnectionState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := m.PeerState(server)
		if err != nil {
			t.Fatalf("PeerState(%s): %v", server, err)
		}
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("PeerState(%s) = %s, still not %s after 10s", server, s, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func established(s mb.ConnectionState) bool { return s == mb.ESTABLISHED }

func dest(prefix string) mb.Destination {
	p := netip.MustParsePrefix(prefix)
	if p.Addr().Is4() {
		return mb.Destination{IPVersion: mb.IPV4, Prefix: p}
	}
	return mb.Destination{IPVersion: mb.IPV6, Prefix: p}
}

func hop(addr string, typ mbproto.NextHopType, from, to uint16) mb.NextHop {
	return mb.NextHop{TargetAddress: netip.MustParseAddr(addr), Type: typ, NATPortRangeFrom: from, NATPortRangeTo: to}
}
