package httpapi

import (
	"net/netip"
	"strings"

	"github.com/metalbond/metalbond/route"
)

// filter selects routes for /api/v1/routes and the status page.
//
// A prefix term selects by destination: a prefix (10.0.0.0/16) matches the
// routes within it, an address (10.0.23.7) the routes whose prefix contains
// it, and any other text the routes whose prefix contains the text. A
// nexthop term selects by nexthop: an address matches that nexthop address
// exactly, any other text the routes whose nexthop in command-line syntax
// (2001:db8::1#NAT#1024#2047) contains it, ignoring case. A free term (q)
// matches routes that the prefix term or the nexthop term would match.
// All given terms must match.
type filter struct {
	prefix, nexthop, any term
}

// term is one parsed search term; the zero term matches everything.
type term struct {
	set    bool
	pfx    netip.Prefix // valid if the text is a prefix
	addr   netip.Addr   // valid if the text is an address
	text   string       // the text, lower case
	hasPfx bool
}

func newTerm(s string) term {
	s = strings.TrimSpace(s)
	if s == "" {
		return term{}
	}
	t := term{set: true, text: strings.ToLower(s)}
	if p, err := netip.ParsePrefix(s); err == nil {
		t.pfx, t.hasPfx = p.Masked(), true
	} else if a, err := netip.ParseAddr(s); err == nil {
		t.addr = a
	}
	return t
}

func newFilter(prefix, nexthop, q string) filter {
	return filter{prefix: newTerm(prefix), nexthop: newTerm(nexthop), any: newTerm(q)}
}

// empty reports whether the filter matches everything.
func (f filter) empty() bool { return !f.prefix.set && !f.nexthop.set && !f.any.set }

func (f filter) match(r route.Route) bool {
	if f.prefix.set && !f.prefix.matchPrefix(r.Prefix) {
		return false
	}
	if f.nexthop.set && !f.nexthop.matchNextHop(r.NextHop) {
		return false
	}
	if f.any.set && !f.any.matchPrefix(r.Prefix) && !f.any.matchNextHop(r.NextHop) {
		return false
	}
	return true
}

func (t term) matchPrefix(p netip.Prefix) bool {
	switch {
	case t.hasPfx:
		return netipPrefixWithin(p, t.pfx)
	case t.addr.IsValid():
		return p.Contains(t.addr)
	}
	return strings.Contains(p.String(), t.text)
}

func (t term) matchNextHop(nh route.NextHop) bool {
	switch {
	case t.addr.IsValid():
		return nh.Address == t.addr
	case t.hasPfx:
		return t.pfx.Contains(nh.Address)
	}
	return strings.Contains(strings.ToLower(nh.String()), t.text)
}
