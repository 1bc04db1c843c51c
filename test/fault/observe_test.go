package faulttest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// metrics is one scrape of /metrics: value by series, the series written
// as in the exposition format, e.g. `metalbond_routes{vni="23"}`.
type metrics map[string]float64

func scrape(addr string) (metrics, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := make(metrics)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// Series and value, then possibly a timestamp or an exemplar,
		// which our metrics do not have.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

func mustScrape(t testing.TB, addr string) metrics {
	t.Helper()
	m, err := scrape(addr)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return m
}

// routeSet is a set of routes, compared as a set.
type routeSet map[route.Route]struct{}

func newRouteSet(rs ...[]route.Route) routeSet {
	s := make(routeSet)
	for _, l := range rs {
		for _, r := range l {
			s[r] = struct{}{}
		}
	}
	return s
}

// diff returns the routes of want missing from s and those of s not in
// want, each sorted.
func (s routeSet) diff(want routeSet) (missing, extra []route.Route) {
	for r := range want {
		if _, ok := s[r]; !ok {
			missing = append(missing, r)
		}
	}
	for r := range s {
		if _, ok := want[r]; !ok {
			extra = append(extra, r)
		}
	}
	slices.SortFunc(missing, route.Route.Compare)
	slices.SortFunc(extra, route.Route.Compare)
	return missing, extra
}

func (s routeSet) equal(want routeSet) bool {
	if len(s) != len(want) {
		return false
	}
	for r := range want {
		if _, ok := s[r]; !ok {
			return false
		}
	}
	return true
}

// describeDiff summarises how s differs from want.
func (s routeSet) describeDiff(want routeSet) string {
	missing, extra := s.diff(want)
	return fmt.Sprintf("%d routes, want %d: %d missing %s, %d extra %s",
		len(s), len(want), len(missing), sample(missing), len(extra), sample(extra))
}

func sample(rs []route.Route) string {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range rs {
		if i == 5 {
			b.WriteString(" ...")
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(r.String())
	}
	b.WriteString("]")
	return b.String()
}

// compatNextHop is a nexthop of /routes.json, in the historical shape of
// PROTOCOL.md.
type compatNextHop struct {
	TargetAddress    string
	TargetVNI        uint32
	Type             uint8
	NATPortRangeFrom uint16
	NATPortRangeTo   uint16
}

// fetchRoutes reads the route table of a server or client from its
// /routes.json.
func fetchRoutes(addr string) (routeSet, error) {
	resp, err := httpClient.Get("http://" + addr + "/routes.json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /routes.json: %s", resp.Status)
	}
	return parseCompatRoutes(resp.Body)
}

func parseCompatRoutes(r io.Reader) (routeSet, error) {
	var doc struct {
		VNet map[string]map[string][]compatNextHop `json:"vnet"`
	}
	if err := json.NewDecoder(r).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode /routes.json: %w", err)
	}
	s := make(routeSet)
	for vniText, dests := range doc.VNet {
		vni, err := route.ParseVNI(vniText)
		if err != nil {
			return nil, fmt.Errorf("/routes.json: VNI %q: %w", vniText, err)
		}
		for key, nhs := range dests {
			var d struct {
				IPVersion int
				Prefix    string
			}
			if err := json.Unmarshal([]byte(key), &d); err != nil {
				return nil, fmt.Errorf("/routes.json: destination %q: %w", key, err)
			}
			pfx, err := netip.ParsePrefix(d.Prefix)
			if err != nil {
				return nil, fmt.Errorf("/routes.json: destination %q: %w", key, err)
			}
			for _, nh := range nhs {
				addr, err := netip.ParseAddr(nh.TargetAddress)
				if err != nil {
					return nil, fmt.Errorf("/routes.json: nexthop %q: %w", nh.TargetAddress, err)
				}
				s[route.Route{VNI: vni, Prefix: pfx, NextHop: route.NextHop{
					Address: addr, TargetVNI: route.VNI(nh.TargetVNI), Type: route.NextHopType(nh.Type),
					NATPortFrom: nh.NATPortRangeFrom, NATPortTo: nh.NATPortRangeTo,
				}}] = struct{}{}
			}
		}
	}
	return s, nil
}

// routeCount returns the number of routes a process reports in its
// metalbond_routes gauges (all VNIs), a cheap way to see whether a fetch of
// the whole table is worth it.
func routeCount(m metrics) int {
	n := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "metalbond_routes{") {
			n += v
		}
	}
	return int(n)
}

// waitRoutes waits until the route table of the process at addr is exactly
// want and returns how long that took. It fails the test after timeout.
func waitRoutes(t testing.TB, name, addr string, want routeSet, timeout time.Duration) time.Duration {
	t.Helper()
	d, err := awaitRoutes(addr, want, timeout)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// awaitRoutes is waitRoutes returning an error instead of failing.
func awaitRoutes(addr string, want routeSet, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	last := "no answer"
	for {
		// The count first: fetching a large table at every poll would
		// load the machine more than the test does.
		if m, err := scrape(addr); err == nil && routeCount(m) == len(want) {
			got, err := fetchRoutes(addr)
			if err == nil && got.equal(want) {
				return time.Since(start), nil
			}
			if err != nil {
				last = err.Error()
			} else {
				last = got.describeDiff(want)
			}
		} else if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d routes, want %d", routeCount(m), len(want))
		}
		if time.Now().After(deadline) {
			if got, err := fetchRoutes(addr); err == nil {
				last = got.describeDiff(want)
			}
			return time.Since(start), fmt.Errorf("no convergence within %v: %s", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRoutes fails the test unless the table at addr is exactly want now.
func checkRoutes(t testing.TB, name, addr string, want routeSet) {
	t.Helper()
	got, err := fetchRoutes(addr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !got.equal(want) {
		t.Fatalf("%s: %s", name, got.describeDiff(want))
	}
}

// usage is what the server uses, from its /metrics.
type usage struct {
	Goroutines int
	HeapInuse  float64 // bytes, go_memstats_heap_inuse_bytes
	NextGC     float64 // bytes, go_memstats_next_gc_bytes: about twice the live heap of the last GC
	RSS        float64 // bytes, process_resident_memory_bytes
	FDs        int     // process_open_fds
}

func (u usage) String() string {
	return fmt.Sprintf("goroutines %d, heap in use %.1f MiB, next GC %.1f MiB, RSS %.1f MiB, fds %d",
		u.Goroutines, u.HeapInuse/(1<<20), u.NextGC/(1<<20), u.RSS/(1<<20), u.FDs)
}

func usageOf(m metrics) usage {
	return usage{
		Goroutines: int(m["go_goroutines"]),
		HeapInuse:  m["go_memstats_heap_inuse_bytes"],
		NextGC:     m["go_memstats_next_gc_bytes"],
		RSS:        m["process_resident_memory_bytes"],
		FDs:        int(m["process_open_fds"]),
	}
}

// Tolerances for "back to the baseline". Goroutines and file descriptors
// must come back exactly: each scrape opens one connection, both times.
// The heap may stay a little above: buffers sized by the largest burst,
// and garbage the collector has not reached yet (the server runs no GC on
// demand, so we wait for one to happen).
const (
	heapSlackBytes = 8 << 20 // absolute slack for go_memstats_heap_inuse_bytes
	heapSlackRatio = 0.25    // and relative slack
)

// withinBaseline reports whether u is back to base.
func withinBaseline(u, base usage) bool {
	return u.Goroutines <= base.Goroutines && u.FDs <= base.FDs &&
		u.HeapInuse <= base.HeapInuse*(1+heapSlackRatio)+heapSlackBytes
}

// baseline samples the server's usage once it is steady: the same
// goroutine count twice in a row, 200 ms apart.
func baseline(t testing.TB, addr string) usage {
	t.Helper()
	prev := usageOf(mustScrape(t, addr))
	for range 50 {
		time.Sleep(200 * time.Millisecond)
		u := usageOf(mustScrape(t, addr))
		if u.Goroutines == prev.Goroutines && u.FDs == prev.FDs {
			return u
		}
		prev = u
	}
	t.Fatalf("server at %s never became steady: %s", addr, prev)
	return prev
}

// waitBaseline waits until the server's usage is back to base and returns
// what it measured and how long it took; it fails the test after timeout.
//
// The server collects garbage only when it allocates (or every 2 minutes),
// and an idle server hardly allocates: while its heap is above the
// baseline, waitBaseline makes it allocate by asking for the first route of
// its table (/api/v1/routes?limit=1 takes a snapshot of every route and
// encodes one), so that a collection comes soon.
func waitBaseline(t testing.TB, addr string, base usage, timeout time.Duration) (usage, time.Duration) {
	t.Helper()
	start := time.Now()
	var u usage
	for {
		u = usageOf(mustScrape(t, addr))
		if withinBaseline(u, base) {
			return u, time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("server did not return to its baseline within %v:\n now      %s\n baseline %s", timeout, u, base)
		}
		if u.HeapInuse > base.HeapInuse*(1+heapSlackRatio)+heapSlackBytes {
			resp, err := httpClient.Get("http://" + addr + "/api/v1/routes?limit=1")
			if err != nil {
				t.Fatalf("server: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		time.Sleep(200 * time.Millisecond)
	}
}
