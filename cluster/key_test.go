package cluster

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func TestRouteKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		route string
		size  int
	}{
		{"23#10.0.23.0/24#2001:db8::1", 28},
		{"0#0.0.0.0/0#2001:db8::1", 25},
		{"16777215#10.1.2.3/32#2001:db8::1", 29},
		{"23#2001:db8:1::/48#2001:db8::1", 31},
		{"23#2001:db8:1:2::/64#2001:db8::1", 33},
		{"23#::/0#2001:db8::1", 25},
		{"23#2001:db8::1/128#2001:db8::2", 41},
		{"23#10.0.0.0/8#192.0.2.1", 14},
		{"23#10.0.24.0/24#2001:db8::2#NAT#1000#2000", 32},
		{"23#10.0.24.0/24#2001:db8::2#NAT#0#0", 32},
		{"23#10.0.25.0/24#2001:db8::3#LB", 28},
		{"23#::ffff:10.0.0.0/104#::ffff:192.0.2.1", 38},
	} {
		t.Run(tc.route, func(t *testing.T) {
			r, err := route.Parse(tc.route)
			if err != nil {
				t.Fatal(err)
			}
			b := appendRoute(nil, r)
			if len(b) != tc.size {
				t.Errorf("encoded in %d bytes, want %d", len(b), tc.size)
			}
			got, err := parseRoute(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if got != r {
				t.Fatalf("round trip: got %v, want %v", got, r)
			}
		})
	}
	// TargetVNI is not in the CLI syntax.
	r := route.Route{VNI: 5, Prefix: netip.MustParsePrefix("10.0.0.0/16"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1"), TargetVNI: 1234567, Type: route.NextHopLoadBalancerTarget}}
	got, err := parseRoute(string(appendRoute(nil, r)))
	if err != nil || got != r {
		t.Fatalf("round trip: got %v, %v, want %v", got, err, r)
	}
}

func TestParseRouteRejects(t *testing.T) {
	good := appendRoute(nil, route.Route{VNI: 23, Prefix: netip.MustParsePrefix("10.0.23.0/24"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")}})
	mod := func(f func(b []byte) []byte) string { return string(f(bytes.Clone(good))) }
	for name, k := range map[string]string{
		"empty":         "",
		"short":         string(good[:4]),
		"truncated":     string(good[:len(good)-1]),
		"trailing":      string(append(bytes.Clone(good), 0)),
		"unknown flags": mod(func(b []byte) []byte { b[3] |= 0x10; return b }),
		"bits too big":  mod(func(b []byte) []byte { b[4] = 33; return b }),
		"host bits":     mod(func(b []byte) []byte { b[4] = 23; b[7] = 1; return b }),
		"bad type":      mod(func(b []byte) []byte { b[len(b)-4] = 9; return b }),
		"NAT no range":  mod(func(b []byte) []byte { b[len(b)-4] = byte(route.NextHopNAT); return b }),
		"ports not NAT": string(append(bytes.Clone(good), 0, 1, 0, 2)),
	} {
		if r, err := parseRoute(k); err == nil {
			t.Errorf("%s: accepted as %v", name, r)
		}
	}
}

func TestKeyspaceSplit(t *testing.T) {
	ks := newKeyspace("/mb/")
	for _, tc := range []struct {
		key      string
		kind     keyKind
		id, rest string
	}{
		{"/mb/r/s1/\x00\x00\x17/x", kindRoute, "s1", "\x00\x00\x17/x"},
		{"/mb/s/s1", kindMember, "s1", ""},
		{"/mb/s/s1/x", kindOther, "", ""},
		{"/mb/s/", kindOther, "", ""},
		{"/mb/r/s1", kindOther, "", ""},
		{"/mb/r//abc", kindOther, "", ""},
		{"/mb/other", kindOther, "", ""},
	} {
		kind, id, rest := ks.split(tc.key)
		if kind != tc.kind || id != tc.id || rest != tc.rest {
			t.Errorf("split(%q) = %v %q %q, want %v %q %q", tc.key, kind, id, rest, tc.kind, tc.id, tc.rest)
		}
	}
	if got := ks.routeDir("a") + "k"; got != "/mb/r/a/k" {
		t.Errorf("routeDir: %q", got)
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"23#10.0.23.0/24#2001:db8::1", "23#2001:db8::/32#2001:db8::2#NAT#1#2", "1#0.0.0.0/0#192.0.2.1#LB"} {
		r, _ := route.Parse(s)
		f.Add(string(appendRoute(nil, r)))
	}
	f.Fuzz(func(t *testing.T, k string) {
		r, err := parseRoute(k)
		if err != nil {
			return
		}
		// A decoded key is the one encoding of its route.
		if got := string(appendRoute(nil, r)); got != k {
			t.Fatalf("%v re-encodes to %x, not %x", r, got, k)
		}
	})
}
