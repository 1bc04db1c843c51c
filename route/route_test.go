package route

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		in   string
		want Route
	}{
		{"23#10.0.23.0/24#2001:db8::1", Route{23, netip.MustParsePrefix("10.0.23.0/24"), NextHop{Address: v6}}},
		{"23#10.0.23.0/24#2001:db8::1#STD", Route{23, netip.MustParsePrefix("10.0.23.0/24"), NextHop{Address: v6}}},
		{"24#2001:db8:5::/64#2001:db8::1#LB", Route{24, netip.MustParsePrefix("2001:db8:5::/64"), NextHop{Address: v6, Type: NextHopLoadBalancerTarget}}},
		{"23#10.0.24.0/24#2001:db8::1#nat#1000#2000", Route{23, netip.MustParsePrefix("10.0.24.0/24"), NextHop{Address: v6, Type: NextHopNAT, NATPortFrom: 1000, NATPortTo: 2000}}},
		{"16777215#0.0.0.0/0#192.0.2.1", Route{MaxVNI, netip.MustParsePrefix("0.0.0.0/0"), NextHop{Address: netip.MustParseAddr("192.0.2.1")}}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := Parse(got.String())
			if err != nil || again != got {
				t.Fatalf("String %q does not parse back: %v %v", got.String(), again, err)
			}
		})
	}
}

func TestParseErrorsNameTheBadValue(t *testing.T) {
	tests := []struct{ in, mention string }{
		{"", "VNI#PREFIX#NEXTHOP"},
		{"23#10.0.0.0/24", "VNI#PREFIX#NEXTHOP"},
		{"x#10.0.0.0/24#2001:db8::1", `"x"`},
		{"16777216#10.0.0.0/24#2001:db8::1", `"16777216"`},
		{"23#10.0.0.0/33#2001:db8::1", `"10.0.0.0/33"`},
		{"23#10.0.0.1/24#2001:db8::1", "host bits"},
		{"23#10.0.0.0/24#nexthop", `"nexthop"`},
		{"23#10.0.0.0/24#2001:db8::1#FOO", `"FOO"`},
		{"23#10.0.0.0/24#2001:db8::1#NAT", "port range"},
		{"23#10.0.0.0/24#2001:db8::1#NAT#2000#1000", "start after end"},
		{"23#10.0.0.0/24#2001:db8::1#NAT#1#70000", `"70000"`},
		{"23#10.0.0.0/24#2001:db8::1#LB#1#2", "only allowed for NAT"},
		{"23#10.0.0.0/24#fe80::1%eth0", "zones"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestParseTableMapping(t *testing.T) {
	m, err := ParseTableMapping("23#100")
	if err != nil || m != (TableMapping{23, 100}) || m.String() != "23#100" {
		t.Fatalf("got %v, %v", m, err)
	}
	// Deployed units use VNI#0 for the main table.
	if m, err := ParseTableMapping("23#0"); err != nil || m != (TableMapping{23, TableMain}) {
		t.Errorf("ParseTableMapping(23#0) = %v, %v; want the main table, %d", m, err, TableMain)
	}
	for _, bad := range []string{"23", "23#", "#100", "23#-1", "23#x", "16777216#1", "23#4294967296"} {
		if _, err := ParseTableMapping(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseTableMapping(%q) = %v, want an error naming it", bad, err)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Route{1, netip.MustParsePrefix("10.0.0.0/8"), NextHop{Address: netip.MustParseAddr("2001:db8::1")}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mod     func(*Route)
		mention string
	}{
		{"vni", func(r *Route) { r.VNI = MaxVNI + 1 }, "VNI"},
		{"prefix missing", func(r *Route) { r.Prefix = netip.Prefix{} }, "prefix"},
		{"host bits", func(r *Route) { r.Prefix = netip.MustParsePrefix("10.1.0.0/8") }, "host bits"},
		{"nexthop missing", func(r *Route) { r.NextHop.Address = netip.Addr{} }, "nexthop address"},
		{"target vni", func(r *Route) { r.NextHop.TargetVNI = MaxVNI + 1 }, "target VNI"},
		{"type", func(r *Route) { r.NextHop.Type = 3 }, "type"},
		{"ports on STD", func(r *Route) { r.NextHop.NATPortTo = 5 }, "only allowed for type NAT"},
		{"NAT reversed", func(r *Route) { r.NextHop.Type = NextHopNAT; r.NextHop.NATPortFrom = 9 }, "start after end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mod(&r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	a, _ := Parse("1#10.0.0.0/24#2001:db8::1")
	b, _ := Parse("1#10.0.0.0/24#2001:db8::2")
	c, _ := Parse("1#10.0.0.0/25#2001:db8::1")
	d, _ := Parse("2#9.0.0.0/8#2001:db8::1")
	order := []Route{a, b, c, d}
	for i := range order {
		for j := range order {
			want := cmpInt(i, j)
			if got := order[i].Compare(order[j]); got != want {
				t.Errorf("Compare(%v, %v) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"23#10.0.23.0/24#2001:db8::1", "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000", "24#2001:db8:5::/64#2001:db8::3#LB", "#", "1#::/0#::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Parse(%q) returned an invalid route: %v", s, err)
		}
		if r.NextHop.TargetVNI == 0 {
			again, err := Parse(r.String())
			if err != nil || again != r {
				t.Fatalf("round trip of %q: %v %v", s, again, err)
			}
		}
	})
}

func TestValidateUnderlay(t *testing.T) {
	for _, tc := range []struct {
		addr, err string
	}{
		{"2001:db8::1", ""},
		{"fe80::1", ""},
		{"10.1.1.1", "nexthop 10.1.1.1 is an IPv4 address; the underlay is IPv6"},
		{"::ffff:10.1.1.1", "nexthop ::ffff:10.1.1.1 is an IPv4-mapped address; the underlay is IPv6"},
	} {
		err := NextHop{Address: netip.MustParseAddr(tc.addr)}.ValidateUnderlay()
		if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("ValidateUnderlay(%s) = %v, want %q", tc.addr, err, tc.err)
		}
	}
}
