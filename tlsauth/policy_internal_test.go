package tlsauth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func TestParseVNIRange(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    vniRange
		wantErr string
	}{
		{in: "23", want: vniRange{23, 23}},
		{in: " 100-199 ", want: vniRange{100, 199}},
		{in: "0-16777215", want: vniRange{0, route.MaxVNI}},
		{in: "*", want: vniRange{0, route.MaxVNI}},
		{in: "5-5", want: vniRange{5, 5}},
		{in: "16777216", wantErr: `invalid VNI "16777216"`},
		{in: "200-100", wantErr: "200 is greater than 100"},
		{in: "100-", wantErr: `invalid VNI ""`},
		{in: "-5", wantErr: `invalid VNI ""`},
		{in: "a-b", wantErr: `invalid VNI "a"`},
		{in: "1-2-3", wantErr: `invalid VNI "2-3"`},
		{in: "", wantErr: `invalid VNI ""`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseVNIRange(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestVNISet(t *testing.T) {
	s := normalize([]vniRange{{300, 300}, {100, 150}, {151, 199}, {120, 130}, {5, 5}, {6, 7}})
	if got, want := s.String(), "5-7,100-199,300"; got != want {
		t.Fatalf("normalized to %s, want %s", got, want)
	}
	for v, want := range map[route.VNI]bool{
		0: false, 4: false, 5: true, 7: true, 8: false, 99: false, 100: true, 150: true,
		199: true, 200: false, 299: false, 300: true, 301: false, route.MaxVNI: false,
	} {
		if got := s.contains(v); got != want {
			t.Errorf("contains(%d) = %v, want %v", v, got, want)
		}
	}
	if (vniSet{}).contains(0) || !(vniSet{}).empty() || (vniSet{}).String() != "none" {
		t.Error("empty set misbehaves")
	}
	all := union(s, allVNIs)
	if all.String() != "*" || !all.contains(0) || !all.contains(route.MaxVNI) {
		t.Errorf("union with * = %s", all)
	}
	top := normalize([]vniRange{{route.MaxVNI, route.MaxVNI}, {0, route.MaxVNI - 1}})
	if top.String() != "*" {
		t.Errorf("adjacent ranges up to MaxVNI merged to %s", top)
	}
	if u := union(normalize([]vniRange{{1, 2}}), normalize([]vniRange{{4, 5}})); u.String() != "1-2,4-5" {
		t.Errorf("union = %s", u)
	}
}

func TestPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		id      identity
		want    bool
	}{
		{"dns:hv1.example.net", identity{kindDNS, "hv1.example.net"}, true},
		{"DNS:HV1.Example.NET.", identity{kindDNS, "hv1.example.net"}, true},
		{"dns:hv1.example.net", identity{kindCN, "hv1.example.net"}, false},
		{"dns:*.example.net", identity{kindDNS, "hv1.example.net"}, true},
		{"dns:*.example.net", identity{kindDNS, "a.b.example.net"}, true},
		{"dns:*.example.net", identity{kindDNS, ".example.net"}, false},
		{"dns:*.example.net", identity{kindDNS, "example.net"}, false},
		{"uri:spiffe://dc1/hv/*", identity{kindURI, "spiffe://dc1/hv/a"}, true},
		{"uri:spiffe://dc1/hv/*", identity{kindURI, "spiffe://dc1/hv/"}, false},
		{"uri:spiffe://dc1/hv/*", identity{kindURI, "spiffe://dc2/hv/a"}, false},
		{"uri:spiffe://dc1/hv/*", identity{kindURI, "SPIFFE://dc1/hv/a"}, false},
		{"cn:hv-*-rack1", identity{kindCN, "hv-17-rack1"}, true},
		{"cn:hv-*-rack1", identity{kindCN, "hv--rack1"}, false},
		{"cn:Monitor", identity{kindCN, "monitor"}, false},
		{"cn:*", identity{kindCN, "x"}, true},
	} {
		p, err := parsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		if got := p.match(tc.id); got != tc.want {
			t.Errorf("%s matches %s: %v, want %v", tc.pattern, tc.id, got, tc.want)
		}
	}
	for _, bad := range []string{"hv1.example.net", "dns:", "ip:10.0.0.1", "dns:*.*.example.net"} {
		if _, err := parsePattern(bad); err == nil {
			t.Errorf("parsePattern(%q) succeeded", bad)
		}
	}
}

func TestIdentitiesOf(t *testing.T) {
	u, _ := url.Parse("spiffe://dc1.example.net/hv/a")
	cert := &x509.Certificate{
		Subject:  pkix.Name{CommonName: "hv-a"},
		DNSNames: []string{"HV-A.dc1.example.net.", "hv-a"},
		URIs:     []*url.URL{u},
	}
	var got []string
	for _, id := range identitiesOf(cert) {
		got = append(got, id.String())
	}
	want := []string{"uri:spiffe://dc1.example.net/hv/a", "dns:hv-a.dc1.example.net", "dns:hv-a", "cn:hv-a"}
	if !slices.Equal(got, want) {
		t.Fatalf("identities %q, want %q", got, want)
	}
	if ids := identitiesOf(&x509.Certificate{}); len(ids) != 0 {
		t.Fatalf("certificate without names: %v", ids)
	}
}

const examplePolicy = `
rules:
  - name: tenant-a
    identities:
      - uri:spiffe://dc1/hv/*
      - dns:hv1.dc1.example.net
    announce: [100-199, 300]
    subscribe: [100-199, 300]
  - name: hv1 extra
    identities: [dns:hv1.dc1.example.net]
    announce: 400
  - identities: [cn:monitor]
    subscribe: ["*"]
  - name: known but powerless
    identities: [cn:retired]
default:
  subscribe: [999]
unauthenticated:
  subscribe: [7, 8-9]
`

func TestGrants(t *testing.T) {
	pol, err := parsePolicy([]byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                string
		ids                 []identity
		authenticated       bool
		announce, subscribe string
		rules               []string
	}{
		{"one rule", []identity{{kindURI, "spiffe://dc1/hv/b"}}, true, "100-199,300", "100-199,300", []string{"tenant-a"}},
		{"union of rules", []identity{{kindDNS, "hv1.dc1.example.net"}}, true, "100-199,300,400", "100-199,300", []string{"tenant-a", "hv1 extra"}},
		{"rule without a name", []identity{{kindCN, "monitor"}}, true, "none", "*", []string{"rule 3"}},
		{"rule granting nothing", []identity{{kindCN, "retired"}}, true, "none", "none", []string{"known but powerless"}},
		{"default", []identity{{kindDNS, "other.example.net"}, {kindCN, "other"}}, true, "none", "999", nil},
		{"no names", nil, true, "none", "999", nil},
		{"unauthenticated", nil, false, "none", "7-9", nil},
		// A name that is not backed by a verified certificate counts for nothing.
		{"unauthenticated with names", []identity{{kindCN, "monitor"}}, false, "none", "7-9", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := pol.grantFor(tc.ids, tc.authenticated)
			if g.pol != pol {
				t.Error("grant not tied to its policy")
			}
			if got := g.announce.String(); got != tc.announce {
				t.Errorf("announce %s, want %s", got, tc.announce)
			}
			if got := g.subscribe.String(); got != tc.subscribe {
				t.Errorf("subscribe %s, want %s", got, tc.subscribe)
			}
			if !slices.Equal(g.rules, tc.rules) {
				t.Errorf("rules %q, want %q", g.rules, tc.rules)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []string // each must appear in the error
	}{
		{"empty", "", []string{"empty authorization file"}},
		{"comments only", "# nothing\n", []string{"empty authorization file"}},
		{"not a mapping", "- a\n", []string{"line 1: the authorization file: want a mapping"}},
		{"missing rules", "default: {subscribe: [1]}\n", []string{`missing key "rules"`}},
		{"unknown top-level keys", "rules: []\ndefualt: {}\nextra: 1\n", []string{
			`line 2: the authorization file: unknown key "defualt" (want rules, default, unauthenticated)`,
			`line 3: the authorization file: unknown key "extra"`,
		}},
		{"unknown rule key", "rules:\n  - name: x\n    identities: [cn:x]\n    annouce: [1]\n", []string{
			`line 4: x: unknown key "annouce" (want name, identities, announce, subscribe)`,
		}},
		{"unknown default key", "rules: []\ndefault:\n  anounce: [1]\n", []string{`line 3: default: unknown key "anounce"`}},
		{"missing identities", "rules:\n  - name: x\n    announce: [1]\n", []string{`line 2: x: missing key "identities"`}},
		{"no identities", "rules:\n  - name: x\n    identities: []\n", []string{`line 3: x: identities: want at least one identity`}},
		{"bad identity", "rules:\n  - identities: [hv1]\n", []string{`line 2: rule 1: identity "hv1": want KIND:VALUE`}},
		{"bad kind", "rules:\n  - identities: [\"ip:10.0.0.1\"]\n", []string{`unknown kind "ip"`}},
		{"bad VNI", "rules:\n  - identities: [cn:x]\n    announce: [1, 16777216, 9-3]\n", []string{
			`line 3: rule 1: announce: invalid VNI "16777216"`,
			`line 3: rule 1: announce: range "9-3": 9 is greater than 3`,
		}},
		{"rule not a mapping", "rules: [x]\n", []string{"line 1: rule 1: want a mapping"}},
		{"rules not a list", "rules: {a: 1}\n", []string{"line 1: rules: want a list"}},
		{"nested list", "rules:\n  - identities: [cn:x]\n    subscribe: [[1]]\n", []string{"subscribe: want a list of plain values"}},
		{"alias for star", "x: &a 1\nrules:\n  - identities: [cn:x]\n    subscribe: [*a]\n", []string{`unknown key "x"`, `write "*" in quotes`}},
		{"bare star", "rules:\n  - identities: [cn:x]\n    subscribe: [*]\n", []string{"yaml: line 3", `write "*" in quotes`}},
		{"duplicate key", "rules: []\nrules: []\n", []string{`line 2: the authorization file: key "rules" repeats line 1`}},
		{"duplicate rule key", "rules:\n  - identities: [cn:x]\n    announce: [1]\n    announce: [2]\n", []string{`line 4: rule 1: key "announce" repeats line 3`}},
		{"empty name", "rules:\n  - name: \"\"\n    identities: [cn:x]\n", []string{`line 2: rule 1: name: want a non-empty string`}},
		{"several problems", "rules:\n  - identities: [cn:x]\n    announce: [x]\n  - identities: [foo]\n", []string{
			`line 3: rule 1: announce: invalid VNI "x"`,
			`line 4: rule 2: identity "foo"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePolicy([]byte(tc.file))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestPermissionsFollowPolicy checks that a session's permissions follow
// Replace at once, and that a lookup does not allocate.
func TestPermissionsFollowPolicy(t *testing.T) {
	p, err := ParsePolicy([]byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	pp := &peerPermissions{policy: p, ids: []identity{{kindURI, "spiffe://dc1/hv/a"}}, authenticated: true}
	if !pp.MayAnnounce(150) || pp.MayAnnounce(400) || !pp.MaySubscribe(300) || pp.MaySubscribe(999) {
		t.Fatal("wrong answers under the first policy")
	}
	if n := testing.AllocsPerRun(100, func() { pp.MayAnnounce(150); pp.MaySubscribe(7) }); n != 0 {
		t.Errorf("lookup allocates %v times", n)
	}
	if err := p.Replace([]byte("rules:\n  - identities: [\"uri:spiffe://dc1/hv/a\"]\n    announce: [400]\n")); err != nil {
		t.Fatal(err)
	}
	if pp.MayAnnounce(150) || !pp.MayAnnounce(400) || pp.MaySubscribe(300) {
		t.Fatal("wrong answers under the replaced policy")
	}
	if err := p.Replace([]byte("rules: [oops]")); err == nil {
		t.Fatal("bad policy accepted")
	}
	if !pp.MayAnnounce(400) || p.Generation() != 2 {
		t.Fatalf("a refused policy changed something: generation %d", p.Generation())
	}
	if err := p.Reload(); err == nil || !strings.Contains(err.Error(), "not read from a file") {
		t.Fatalf("Reload of a parsed policy: %v", err)
	}
}

func BenchmarkMayAnnounce(b *testing.B) {
	p, err := ParsePolicy([]byte(examplePolicy))
	if err != nil {
		b.Fatal(err)
	}
	pp := &peerPermissions{policy: p, ids: []identity{{kindDNS, "hv1.dc1.example.net"}}, authenticated: true}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		pp.MayAnnounce(route.VNI(i & 511))
	}
}
