package httpapi

import (
	"bytes"
	"net/netip"
	"strconv"
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

// match reports whether r passes every term. scratch is a buffer for text
// matching that the caller reuses across calls (a filter is used by one
// goroutine at a time); match returns it, possibly grown.
func (f filter) match(r route.Route, scratch []byte) (bool, []byte) {
	var ok bool
	if f.prefix.set {
		if ok, scratch = f.prefix.matchPrefix(r.Prefix, scratch); !ok {
			return false, scratch
		}
	}
	if f.nexthop.set {
		if ok, scratch = f.nexthop.matchNextHop(r.NextHop, scratch); !ok {
			return false, scratch
		}
	}
	if f.any.set {
		if ok, scratch = f.any.matchPrefix(r.Prefix, scratch); !ok {
			if ok, scratch = f.any.matchNextHop(r.NextHop, scratch); !ok {
				return false, scratch
			}
		}
	}
	return true, scratch
}

func (t term) matchPrefix(p netip.Prefix, scratch []byte) (bool, []byte) {
	switch {
	case t.hasPfx:
		return netipPrefixWithin(p, t.pfx), scratch
	case t.addr.IsValid():
		return p.Contains(t.addr), scratch
	}
	scratch = p.AppendTo(scratch[:0])
	return bytes.Contains(scratch, []byte(t.text)), scratch
}

func (t term) matchNextHop(nh route.NextHop, scratch []byte) (bool, []byte) {
	switch {
	case t.addr.IsValid():
		return nh.Address == t.addr, scratch
	case t.hasPfx:
		return t.pfx.Contains(nh.Address), scratch
	}
	// The nexthop in command-line syntax, lower case: 2001:db8::1#nat#1#2.
	scratch = nh.Address.AppendTo(scratch[:0])
	switch nh.Type {
	case route.NextHopStandard:
	case route.NextHopNAT:
		scratch = append(scratch, "#nat#"...)
		scratch = strconv.AppendUint(scratch, uint64(nh.NATPortFrom), 10)
		scratch = append(scratch, '#')
		scratch = strconv.AppendUint(scratch, uint64(nh.NATPortTo), 10)
	default:
		scratch = append(scratch, '#')
		scratch = append(scratch, strings.ToLower(nh.Type.String())...)
	}
	return bytes.Contains(scratch, []byte(t.text)), scratch
}
