package kernel

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func TestDesiredAddrs(t *testing.T) {
	k := key{table: 100, prefix: netip.MustParsePrefix("10.0.23.0/24")}
	h := func(vni route.VNI, s string) hop {
		r, err := route.Parse("1#10.0.0.0/8#" + s)
		if err != nil {
			t.Fatal(err)
		}
		return hop{vni: vni, nh: r.NextHop}
	}
	tests := []struct {
		name   string
		add    []hop
		remove []hop
		want   string
		dirty  bool
	}{
		{name: "empty", want: ""},
		{name: "one", add: []hop{h(23, "2001:db8::1")}, want: "2001:db8::1", dirty: true},
		{
			name: "sorted",
			add:  []hop{h(23, "2001:db8::3"), h(23, "2001:db8::1"), h(23, "2001:db8::2")},
			want: "2001:db8::1 2001:db8::2 2001:db8::3", dirty: true,
		},
		{
			name: "same address, other type or VNI: one kernel nexthop",
			add:  []hop{h(23, "2001:db8::1#LB"), h(23, "2001:db8::1"), h(24, "2001:db8::1"), h(23, "2001:db8::1#NAT#1#2")},
			want: "2001:db8::1", dirty: true,
		},
		{
			name:   "partial withdraw",
			add:    []hop{h(23, "2001:db8::1"), h(23, "2001:db8::2")},
			remove: []hop{h(23, "2001:db8::1")},
			want:   "2001:db8::2", dirty: true,
		},
		{
			name:   "withdraw of one of two VNIs keeps the address",
			add:    []hop{h(23, "2001:db8::1"), h(24, "2001:db8::1")},
			remove: []hop{h(23, "2001:db8::1")},
			want:   "2001:db8::1", dirty: true,
		},
		{
			name:   "full withdraw",
			add:    []hop{h(23, "2001:db8::1")},
			remove: []hop{h(23, "2001:db8::1")},
			want:   "", dirty: true,
		},
		{name: "unknown withdraw changes nothing", remove: []hop{h(23, "2001:db8::1")}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDesiredSet()
			for _, x := range tt.add {
				d.add(k, x)
			}
			for _, x := range tt.remove {
				d.remove(k, x)
			}
			var got []string
			for _, a := range d.addrs(k) {
				got = append(got, a.String())
			}
			if s := strings.Join(got, " "); s != tt.want {
				t.Errorf("addrs = %q, want %q", s, tt.want)
			}
			if _, dirty := d.dirty[k]; dirty != tt.dirty {
				t.Errorf("dirty = %v, want %v", dirty, tt.dirty)
			}
			if _, ok := d.routes[k]; ok != (tt.want != "") {
				t.Errorf("routes has key = %v", ok)
			}
		})
	}
}

func TestDesiredAddDuplicate(t *testing.T) {
	d := newDesiredSet()
	k := key{table: 1, prefix: netip.MustParsePrefix("10.0.0.0/8")}
	x := hop{vni: 1, nh: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")}}
	if !d.add(k, x) || d.add(k, x) {
		t.Error("second add of the same route reported a change")
	}
	clear(d.dirty)
	d.markAll()
	if !slices.Equal(d.addrs(k), []netip.Addr{x.nh.Address}) || len(d.dirty) != 1 {
		t.Errorf("markAll: dirty %v", d.dirty)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Tables: map[route.VNI]int{23: 100}, Device: "overlay-tun"}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no device", func(c *Config) { c.Device = "" }, "no tunnel device"},
		{"no tables", func(c *Config) { c.Tables = nil }, "no VNI is mapped"},
		{"table 0", func(c *Config) { c.Tables = map[route.VNI]int{23: 0} }, "invalid routing table 0"},
		{"big VNI", func(c *Config) { c.Tables = map[route.VNI]int{1 << 24: 1} }, "exceeds 24 bits"},
		{"protocol", func(c *Config) { c.Protocol = 256 }, "invalid routing protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.withDefaults().validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	c := ok.withDefaults()
	if c.Protocol != DefaultProtocol || c.ReconcileInterval != DefaultReconcileInterval || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

// TestConfigZeroIsDefault: in Config, AdoptGrace 0 means DefaultAdoptGrace
// and only AdoptOff (negative) means "remove at start", which the command
// line's --adopt-grace 0 maps to. ReconcileInterval and Protocol too take
// their defaults at 0.
func TestConfigZeroIsDefault(t *testing.T) {
	c := Config{}.withDefaults()
	if c.AdoptGrace != DefaultAdoptGrace || c.ReconcileInterval != DefaultReconcileInterval || c.Protocol != DefaultProtocol {
		t.Errorf("zero Config with defaults = %+v", c)
	}
	if c := (Config{AdoptGrace: AdoptOff}).withDefaults(); c.AdoptGrace >= 0 {
		t.Errorf("AdoptOff became %v", c.AdoptGrace)
	}
}
