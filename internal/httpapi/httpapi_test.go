package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// fixture is a server with two announcing clients and one that only
// subscribes:
//
//	A announces 23#10.0.23.0/24#2001:db8::1, 23#10.0.24.0/24#2001:db8::3#NAT#1024#2047
//	            and 100#2001:db8:100::/64#2001:db8::1#LB
//	B announces 23#10.0.23.0/24#2001:db8::2 (ECMP with A's) and 23#10.1.0.0/16#2001:db8::2
//	C subscribes to 23 and 100
type fixture struct {
	*testbed
	A, B, C *metalbond.Client
	srvH    http.Handler
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := newTestbed(t)
	f := &fixture{testbed: e}
	f.A = e.client([]route.VNI{23}, rt(t, "23#10.0.23.0/24#2001:db8::1"), rt(t, "23#10.0.24.0/24#2001:db8::3#NAT#1024#2047"),
		rt(t, "100#2001:db8:100::/64#2001:db8::1#LB"))
	f.B = e.client(nil, rt(t, "23#10.0.23.0/24#2001:db8::2"), rt(t, "23#10.1.0.0/16#2001:db8::2"))
	f.C = e.client([]route.VNI{23, 100})
	e.waitRoutes(5)
	waitFor(t, 10*time.Second, func() error {
		if n := len(f.C.Routes(23)) + len(f.C.Routes(100)); n != 5 {
			return fmt.Errorf("client C has %d routes, want 5", n)
		}
		return nil
	})
	f.srvH = New(Options{Server: e.Server, Version: "v1.2.3"})
	return f
}

func TestCompatJSON(t *testing.T) {
	f := newFixture(t)
	resp := get(t, f.srvH, "/routes.json")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if keys := sortedKeys(top); !slices.Equal(keys, []string{"date", "metalbondVersion", "vnet"}) {
		t.Errorf("top-level keys %v", keys)
	}
	var date, version string
	json.Unmarshal(top["date"], &date)
	json.Unmarshal(top["metalbondVersion"], &version)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`).MatchString(date) {
		t.Errorf("date %q, want YYYY-MM-DD hh:mm:ss", date)
	}
	if version != "v1.2.3" {
		t.Errorf("metalbondVersion %q", version)
	}
	// Decoding into generic values checks every field name and number.
	var vnet map[string]map[string][]map[string]any
	if err := json.Unmarshal(top["vnet"], &vnet); err != nil {
		t.Fatal(err)
	}
	nh := func(addr string, typ, from, to float64) map[string]any {
		return map[string]any{"TargetAddress": addr, "TargetVNI": 0.0, "Type": typ, "NATPortRangeFrom": from, "NATPortRangeTo": to}
	}
	want := map[string]map[string][]map[string]any{
		"23": {
			`{"IPVersion":4,"Prefix":"10.0.23.0/24"}`: {nh("2001:db8::1", 0, 0, 0), nh("2001:db8::2", 0, 0, 0)},
			`{"IPVersion":4,"Prefix":"10.0.24.0/24"}`: {nh("2001:db8::3", 1, 1024, 2047)},
			`{"IPVersion":4,"Prefix":"10.1.0.0/16"}`:  {nh("2001:db8::2", 0, 0, 0)},
		},
		"100": {
			`{"IPVersion":6,"Prefix":"2001:db8:100::/64"}`: {nh("2001:db8::1", 2, 0, 0)},
		},
	}
	if !reflect.DeepEqual(vnet, want) {
		t.Errorf("vnet\n got %v\nwant %v", vnet, want)
	}
	// Destination keys are themselves JSON in exactly this form.
	for key := range vnet["23"] {
		var d struct {
			IPVersion int
			Prefix    string
		}
		if err := json.Unmarshal([]byte(key), &d); err != nil || d.IPVersion != 4 {
			t.Errorf("destination key %q: %v", key, err)
		}
	}

	// An empty table still has the shape.
	empty := New(Options{Server: newTestbed(t).Server})
	resp = get(t, empty, "/routes.json")
	var e map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if v, ok := e["vnet"].(map[string]any); !ok || len(v) != 0 || e["metalbondVersion"] != "dev" {
		t.Errorf("empty dump: %v", e)
	}
}

func TestCompatYAMLMatchesJSON(t *testing.T) {
	f := newFixture(t)
	var fromJSON, fromYAML any
	if err := json.NewDecoder(get(t, f.srvH, "/routes.json").Body).Decode(&fromJSON); err != nil {
		t.Fatal(err)
	}
	resp := get(t, f.srvH, "/routes.yaml")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
		t.Errorf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	if err := yaml.Unmarshal(body, &fromYAML); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, body)
	}
	// Round-trip the YAML through JSON so that numbers compare alike.
	b, err := json.Marshal(fromYAML)
	if err != nil {
		t.Fatalf("YAML has non-string keys: %v", err)
	}
	var yamlAsJSON any
	json.Unmarshal(b, &yamlAsJSON)
	delete(fromJSON.(map[string]any), "date")
	delete(yamlAsJSON.(map[string]any), "date")
	if !reflect.DeepEqual(fromJSON, yamlAsJSON) {
		t.Errorf("YAML and JSON differ\nJSON %v\nYAML %v\n%s", fromJSON, yamlAsJSON, body)
	}

	// Empty table.
	var e map[string]any
	if err := yaml.Unmarshal(readAll(get(t, New(Options{Server: newTestbed(t).Server}), "/routes.yaml")), &e); err != nil {
		t.Fatal(err)
	}
	if v, ok := e["vnet"].(map[string]any); !ok || len(v) != 0 {
		t.Errorf("empty YAML dump: %v", e)
	}
}

func readAll(resp *http.Response) []byte {
	b, _ := io.ReadAll(resp.Body)
	return b
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestPeersAPI(t *testing.T) {
	f := newFixture(t)
	var raw map[string][]map[string]any
	getJSON(t, f.srvH, "/api/v1/peers", &raw)
	if len(raw["peers"]) != 3 {
		t.Fatalf("%d peers, want 3", len(raw["peers"]))
	}
	wantKeys := []string{"backlog_bytes", "direction", "established_at", "held_routes", "id", "keepalive_seconds", "local", "messages_received", "name",
		"paced", "paced_seconds", "queue_bytes", "remote", "routes", "state", "subscriptions", "updates_received", "updates_sent",
		"uptime_seconds"}
	for _, p := range raw["peers"] {
		if keys := sortedKeys(p); !slices.Equal(keys, wantKeys) {
			t.Errorf("peer keys\n got %v\nwant %v", keys, wantKeys)
		}
	}
	var peers PeersJSON
	getJSON(t, f.srvH, "/api/v1/peers", &peers)
	// Sorted by ID: A, B, C in connection order.
	a, b, c := peers.Peers[0], peers.Peers[1], peers.Peers[2]
	for _, p := range peers.Peers {
		if p.State != "ESTABLISHED" || p.Direction != "inbound" || p.KeepaliveSeconds != 1 || p.EstablishedAt == nil || p.UptimeSeconds < 0 {
			t.Errorf("peer %+v", p)
		}
	}
	if a.Routes != 3 || b.Routes != 2 || c.Routes != 0 {
		t.Errorf("routes per peer: %d %d %d, want 3 2 0", a.Routes, b.Routes, c.Routes)
	}
	if !slices.Equal(a.Subscriptions, []route.VNI{23}) || len(b.Subscriptions) != 0 || !slices.Equal(c.Subscriptions, []route.VNI{23, 100}) {
		t.Errorf("subscriptions: %v %v %v", a.Subscriptions, b.Subscriptions, c.Subscriptions)
	}
	if a.UpdatesReceived != 3 || a.MessagesReceived["UPDATE"] != 3 || a.MessagesReceived["HELLO"] != 1 {
		t.Errorf("A counters: %+v", a)
	}

	// A client shows its server session.
	var cp PeersJSON
	getJSON(t, New(Options{Client: f.C}), "/api/v1/peers", &cp)
	if len(cp.Peers) != 1 || cp.Peers[0].Remote != f.Addr || cp.Peers[0].Direction != "outbound" || cp.Peers[0].State != "ESTABLISHED" {
		t.Errorf("client peers: %+v", cp)
	}
}

func TestVNIsAPI(t *testing.T) {
	f := newFixture(t)
	var v VNIsJSON
	getJSON(t, f.srvH, "/api/v1/vnis", &v)
	want := []VNIJSON{{VNI: 23, Routes: 4, Prefixes: 3, Subscribers: 2}, {VNI: 100, Routes: 1, Prefixes: 1, Subscribers: 1}}
	if !reflect.DeepEqual(v.VNIs, want) {
		t.Errorf("vnis %+v, want %+v", v.VNIs, want)
	}
	var raw map[string][]map[string]any
	getJSON(t, f.srvH, "/api/v1/vnis", &raw)
	if keys := sortedKeys(raw["vnis"][0]); !slices.Equal(keys, []string{"prefixes", "routes", "subscribers", "vni"}) {
		t.Errorf("vni keys %v", keys)
	}
}

func TestRoutesAPI(t *testing.T) {
	f := newFixture(t)
	var raw map[string]any
	getJSON(t, f.srvH, "/api/v1/routes?vni=23&limit=1", &raw)
	if keys := sortedKeys(raw); !slices.Equal(keys, []string{"limit", "offset", "routes", "total"}) {
		t.Errorf("keys %v", keys)
	}
	r0 := raw["routes"].([]any)[0].(map[string]any)
	if keys := sortedKeys(r0); !slices.Equal(keys, []string{"nexthop", "peers", "prefix", "vni"}) {
		t.Errorf("route keys %v", keys)
	}
	if keys := sortedKeys(r0["nexthop"].(map[string]any)); !slices.Equal(keys, []string{"address", "nat_port_from", "nat_port_to", "target_vni", "type"}) {
		t.Errorf("nexthop keys %v", keys)
	}

	var all RoutesJSON
	getJSON(t, f.srvH, "/api/v1/routes", &all)
	got := make([]string, len(all.Routes))
	for i, r := range all.Routes {
		got[i] = fmt.Sprintf("%d %s %s %s", r.VNI, r.Prefix, r.NextHop.Address, r.NextHop.Type)
	}
	want := []string{
		"23 10.0.23.0/24 2001:db8::1 STD",
		"23 10.0.23.0/24 2001:db8::2 STD",
		"23 10.0.24.0/24 2001:db8::3 NAT",
		"23 10.1.0.0/16 2001:db8::2 STD",
		"100 2001:db8:100::/64 2001:db8::1 LB",
	}
	if !slices.Equal(got, want) || all.Total != 5 || all.Offset != 0 || all.Limit != DefaultLimit {
		t.Errorf("all routes (total %d, offset %d, limit %d):\n%s", all.Total, all.Offset, all.Limit, strings.Join(got, "\n"))
	}
	nat := all.Routes[2]
	if nat.NextHop.NATPortFrom != 1024 || nat.NextHop.NATPortTo != 2047 || len(nat.Peers) != 1 || nat.Peers[0].Remote == "" {
		t.Errorf("NAT route %+v", nat)
	}

	tests := []struct {
		query string
		want  []string // prefix nexthop
		total int
	}{
		{"vni=23", []string{"10.0.23.0/24 2001:db8::1", "10.0.23.0/24 2001:db8::2", "10.0.24.0/24 2001:db8::3", "10.1.0.0/16 2001:db8::2"}, 4},
		{"vni=100", []string{"2001:db8:100::/64 2001:db8::1"}, 1},
		{"vni=7", nil, 0},
		{"prefix=10.0.0.0/16", []string{"10.0.23.0/24 2001:db8::1", "10.0.23.0/24 2001:db8::2", "10.0.24.0/24 2001:db8::3"}, 3},
		{"prefix=10.0.23.0/24", []string{"10.0.23.0/24 2001:db8::1", "10.0.23.0/24 2001:db8::2"}, 2},
		{"prefix=10.1.2.3", []string{"10.1.0.0/16 2001:db8::2"}, 1},
		{"prefix=2001:db8:100::1", []string{"2001:db8:100::/64 2001:db8::1"}, 1},
		{"prefix=23.0", []string{"10.0.23.0/24 2001:db8::1", "10.0.23.0/24 2001:db8::2"}, 2},
		{"nexthop=2001:db8::2", []string{"10.0.23.0/24 2001:db8::2", "10.1.0.0/16 2001:db8::2"}, 2},
		{"nexthop=nat", []string{"10.0.24.0/24 2001:db8::3"}, 1},
		{"nexthop=LB", []string{"2001:db8:100::/64 2001:db8::1"}, 1},
		{"vni=23&nexthop=2001:db8::1", []string{"10.0.23.0/24 2001:db8::1"}, 1},
		{"prefix=10.0.23.0/24&nexthop=2001:db8::2", []string{"10.0.23.0/24 2001:db8::2"}, 1},
		{"q=2001:db8::3", []string{"10.0.24.0/24 2001:db8::3"}, 1},
		{"q=10.1.0.9", []string{"10.1.0.0/16 2001:db8::2"}, 1},
		{"q=2001:db8:100", []string{"2001:db8:100::/64 2001:db8::1"}, 1},
		{"limit=2", []string{"10.0.23.0/24 2001:db8::1", "10.0.23.0/24 2001:db8::2"}, 5},
		{"limit=2&offset=2", []string{"10.0.24.0/24 2001:db8::3", "10.1.0.0/16 2001:db8::2"}, 5},
		{"limit=2&offset=4", []string{"2001:db8:100::/64 2001:db8::1"}, 5},
		{"offset=5", nil, 5},
		{"offset=1000", nil, 5},
		{"vni=23&limit=1&offset=3", []string{"10.1.0.0/16 2001:db8::2"}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var page RoutesJSON
			getJSON(t, f.srvH, "/api/v1/routes?"+tt.query, &page)
			var got []string
			for _, r := range page.Routes {
				got = append(got, r.Prefix+" "+r.NextHop.Address)
			}
			if !slices.Equal(got, tt.want) || page.Total != tt.total {
				t.Errorf("total %d, routes %q; want total %d, routes %q", page.Total, got, tt.total, tt.want)
			}
			if page.Routes == nil {
				t.Errorf("routes is null, want []")
			}
		})
	}

	for _, bad := range []string{"vni=x", "vni=16777216", "limit=0", "limit=10001", "limit=x", "offset=-1"} {
		resp := get(t, f.srvH, "/api/v1/routes?"+bad)
		var e ErrorJSON
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != http.StatusBadRequest || e.Error == "" {
			t.Errorf("%s: %s %+v, want 400 with an error", bad, resp.Status, e)
		}
	}
}

func TestClientAPI(t *testing.T) {
	f := newFixture(t)
	h := New(Options{Client: f.A, Version: "v1", Installer: func() kernel.Stats { return kernel.Stats{Routes: 7, Repairs: 2} }})
	var routes RoutesJSON
	getJSON(t, h, "/api/v1/routes", &routes)
	// A subscribes to 23 only and ignores its own prefix 10.0.23.0/24.
	if routes.Total != 1 || routes.Routes[0].Prefix != "10.1.0.0/16" || routes.Routes[0].Peers[0].Remote != f.Addr {
		t.Errorf("client A routes: %+v", routes)
	}
	var ann AnnouncementsJSON
	getJSON(t, h, "/api/v1/announcements", &ann)
	if len(ann.Routes) != 3 || ann.Routes[0].Prefix != "10.0.23.0/24" || len(ann.Routes[0].Peers) != 0 {
		t.Errorf("announcements: %+v", ann)
	}
	var st StatusJSON
	getJSON(t, h, "/api/v1/status", &st)
	if st.Role != "client" || !st.Ready || st.Version != "v1" || st.Peers != 1 || st.Established != 1 || st.Routes != 1 ||
		st.Client == nil || st.Client.Announcements != 3 || !slices.Equal(st.Client.Subscriptions, []route.VNI{23}) ||
		st.Installer == nil || st.Installer.Routes != 7 || st.Installer.Repairs != 2 || st.Server != nil {
		t.Errorf("status %+v", st)
	}

	// The server's announcements list is empty.
	getJSON(t, f.srvH, "/api/v1/announcements", &ann)
	if len(ann.Routes) != 0 {
		t.Errorf("server announcements: %+v", ann)
	}
	st = StatusJSON{}
	getJSON(t, f.srvH, "/api/v1/status", &st)
	if st.Role != "server" || st.Server == nil || st.Server.Accepted != 3 || st.Server.UpdatesReceived != 5 || st.Client != nil || st.Installer != nil ||
		st.Routes != 5 || st.VNIs != 2 || st.Peers != 3 || len(st.Server.ProtocolErrors) != 6 {
		t.Errorf("server status %+v", st)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := newTestbed(t)
	check := func(h http.Handler, path string, want int) {
		t.Helper()
		resp := get(t, h, path)
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}
	srvH := New(Options{Server: e.Server})
	check(srvH, "/healthz", 200)
	check(srvH, "/readyz", 200)
	notReady := New(Options{Server: e.Server, Ready: func() error { return fmt.Errorf("shutting down") }})
	check(notReady, "/healthz", 200)
	check(notReady, "/readyz", 503)
	if body := string(readAll(get(t, notReady, "/readyz"))); !strings.Contains(body, "shutting down") {
		t.Errorf("readyz body %q", body)
	}

	// A client is ready once a session is established.
	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	check(New(Options{Client: c}), "/readyz", 503)
	connected := e.client(nil)
	check(New(Options{Client: connected}), "/readyz", 200)
}

func TestReadOnly(t *testing.T) {
	e := newTestbed(t)
	h := New(Options{Server: e.Server})
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		for _, path := range []string{"/", "/api/v1/routes", "/routes.json", "/metrics"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader("{}")))
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q", method, path, rec.Code, rec.Header().Get("Allow"))
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/api/v1/peers", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD: %d", rec.Code)
	}
	for path, want := range map[string]int{"/api/v1/nothing": 404, "/nothing": 404, "/static/index.html": 404, "/static/style.css": 200, "/static/app.js": 200} {
		if resp := get(t, h, path); resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}
}

func TestStatusPage(t *testing.T) {
	f := newFixture(t)
	resp := get(t, f.srvH, "/")
	body := string(readAll(resp))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("no Content-Security-Policy")
	}
	for _, want := range []string{"v1.2.3", "ESTABLISHED", "10.0.23.0/24", "10.1.0.0/16", "2001:db8:100::/64", "1024–2047", "1–5 of 5"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, p := range f.Server.Peers() {
		if !strings.Contains(body, p.Remote) {
			t.Errorf("page lacks peer %s", p.Remote)
		}
	}

	// Server-side search and paging work without JavaScript.
	body = string(readAll(get(t, f.srvH, "/?vni=23&q=2001:db8::2&limit=1")))
	if !strings.Contains(body, "1–1 of 2") || !strings.Contains(body, `href="?limit=1&amp;offset=1&amp;q=2001%3Adb8%3A%3A2&amp;vni=23"`) {
		t.Errorf("search page: range or next link missing")
	}
	if strings.Contains(body, "10.0.24.0/24") {
		t.Errorf("search page shows a route that does not match")
	}
	if resp := get(t, f.srvH, "/?vni=x"); resp.StatusCode != 400 {
		t.Errorf("GET /?vni=x: %s", resp.Status)
	}

	// The client's page lists its announcements.
	body = string(readAll(get(t, New(Options{Client: f.A}), "/")))
	if !strings.Contains(body, "Announced by this client") || !strings.Contains(body, "2001:db8::3 NAT 1024–2047") {
		t.Errorf("client page lacks its announcements")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	f := newFixture(t)
	resp := get(t, f.srvH, "/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		mf, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"metalbond_peers", map[string]string{"state": "ESTABLISHED", "direction": "inbound"}, 3},
		{"metalbond_peers", map[string]string{"state": "RETRY", "direction": "inbound"}, 0},
		{"metalbond_routes", map[string]string{"vni": "23"}, 4},
		{"metalbond_routes", map[string]string{"vni": "100"}, 1},
		{"metalbond_prefixes", map[string]string{"vni": "23"}, 3},
		{"metalbond_vni_subscribers", map[string]string{"vni": "23"}, 2},
		{"metalbond_updates_received_total", nil, 5},
		{"metalbond_sessions_accepted_total", nil, 3},
		{"metalbond_protocol_errors_total", map[string]string{"kind": "bad_version"}, 0},
		{"metalbond_messages_received_total", map[string]string{"type": "UPDATE"}, 5},
		{"metalbond_messages_received_total", map[string]string{"type": "SUBSCRIBE"}, 3},
		{"metalbond_build_info", map[string]string{"version": "v1.2.3", "role": "server"}, 1},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := families["metalbond_update_fanout_seconds"]; !ok {
		t.Error("no fan-out histogram")
	}
	for name, mf := range families {
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "prefix" {
					t.Errorf("%s has a prefix label", name)
				}
			}
		}
	}
}

// TestPacedPeer: a plain v1 peer that subscribes to a VNI larger than
// pacing lets it hold unread, and reads nothing, is shown as paced with its
// backlog in the API and on the page.
func TestPacedPeer(t *testing.T) {
	e := newTestbed(t)
	e.client(nil, manyRoutes(23, 4000)...)
	e.waitRoutes(4000)
	p := testpeer.DialV1(t, e.Addr, 5)
	p.Send(wire.Subscribe{VNI: 23})

	h := New(Options{Server: e.Server})
	var paced PeerJSON
	waitFor(t, 10*time.Second, func() error {
		var peers PeersJSON
		getJSON(t, h, "/api/v1/peers", &peers)
		for _, pj := range peers.Peers {
			if pj.Paced {
				paced = pj
			}
		}
		if !paced.Paced || paced.BacklogBytes <= 0 || paced.PacedSeconds <= 0 {
			return fmt.Errorf("no paced peer with a backlog: %+v", peers.Peers)
		}
		return nil
	})
	if paced.Remote != p.Conn.LocalAddr().String() {
		t.Errorf("paced peer is %s, want the plain v1 peer %s", paced.Remote, p.Conn.LocalAddr())
	}
	if paced.BacklogBytes > 64<<10 {
		t.Errorf("backlog %d bytes: pacing should keep it below 64 KiB", paced.BacklogBytes)
	}
	body := string(readAll(get(t, h, "/")))
	if n := strings.Count(body, `class="paced"`); n != 1 {
		t.Errorf("page marks %d peers as paced, want 1", n)
	}
}
