package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// discard is a ResponseWriter that counts and drops the body, so that the
// benchmarks measure the handler and not a buffer.
type discard struct {
	h    http.Header
	code int
	n    int64
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(b []byte) (int, error) { d.n += int64(len(b)); return len(b), nil }

// reportCPU reports the process CPU time per operation since cpu0 (GC
// included). On a shared machine it is steadier than the wall-clock ns/op.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu0 > 0 && b.N > 0 {
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
	}
}

// BenchmarkHTTP100k measures the endpoints against a real server that holds
// 100,000 routes in one VNI, announced by a client over loopback. The
// figures are in docs/http-api.md. Run with
//
//	go test ./internal/httpapi -run '^$' -bench HTTP100k -benchtime 20x
func BenchmarkHTTP100k(b *testing.B) {
	const n = 100_000
	e := newTestbed(b)
	e.client(nil, manyRoutes(23, n)...)
	e.client([]route.VNI{23}, rt(b, "100#2001:db8:100::/64#2001:db8::30#LB"))
	e.waitRoutes(n + 1)
	h := New(Options{Server: e.Server, Version: "bench"})

	// The floor: the library's sorted snapshot of the VNI, which every
	// route query starts from.
	b.Run("snapshot", func(b *testing.B) {
		cpu0 := processCPU()
		for b.Loop() {
			if len(e.Server.Routes(23)) != n {
				b.Fatal("routes missing")
			}
		}
		reportCPU(b, cpu0)
	})

	for _, bc := range []struct{ name, target string }{
		{"page", "/"},
		{"page_search", "/?vni=23&q=10.1.2.3"},
		{"api_routes_first_page", "/api/v1/routes?vni=23"},
		{"api_routes_last_page", "/api/v1/routes?vni=23&offset=99900"},
		{"api_routes_all_vnis", "/api/v1/routes"},
		{"api_routes_prefix_within", "/api/v1/routes?vni=23&prefix=10.1.0.0/16"},
		{"api_routes_prefix_address", "/api/v1/routes?vni=23&prefix=10.1.2.3"},
		{"api_routes_prefix_text", "/api/v1/routes?vni=23&prefix=10.0.99"},
		{"api_routes_nexthop", "/api/v1/routes?vni=23&nexthop=2001:db8::1"},
		{"api_routes_10000", "/api/v1/routes?vni=23&limit=10000"},
		{"api_peers", "/api/v1/peers"},
		{"api_vnis", "/api/v1/vnis"},
		{"api_status", "/api/v1/status"},
		{"routes_json", "/routes.json"},
		{"routes_yaml", "/routes.yaml"},
		{"metrics", "/metrics"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, bc.target, nil)
			var bytes int64
			cpu0 := processCPU()
			for b.Loop() {
				w := &discard{h: http.Header{}, code: 200}
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("GET %s: %d", bc.target, w.code)
				}
				bytes = w.n
			}
			reportCPU(b, cpu0)
			b.ReportMetric(float64(bytes), "resp-bytes")
		})
	}
}
