package httpapi

import (
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metalbond/metalbond/route"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the compact screenshot of the status page to docs/status-page.png")

// chromiumPath is the browser the test drives: $CHROMIUM, or Debian's
// chromium package.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// artifactDir is where the test leaves its screenshots: $TEST_ARTIFACTS if
// set, else the test's artifact directory (kept with go test -artifacts).
func artifactDir(t *testing.T) string {
	if d := os.Getenv("TEST_ARTIFACTS"); d != "" {
		d = filepath.Join(d, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// TestBrowser loads the status page of a server with routes in headless
// Chromium, checks the peers and routes it shows, searches, pages, and saves
// screenshots. Without a browser it skips, except in CI (CI=true) where
// that is a failure.
func TestBrowser(t *testing.T) {
	exe := chromiumPath()
	if _, err := os.Stat(exe); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("headless browser needed in CI: %v (apt-get install -y chromium)", err)
		}
		t.Skipf("no browser: %v (apt-get install -y chromium, or set CHROMIUM)", err)
	}

	// A server, two hypervisors announcing and a third only subscribing.
	e := newTestbed(t)
	hv1 := manyRoutes(23, 240)
	e.client([]route.VNI{23}, hv1...)
	e.client([]route.VNI{23, 100},
		rt(t, "23#10.0.0.7/32#2001:db8::9"), // ECMP with hv1's 10.0.0.7/32
		rt(t, "23#192.168.0.0/24#2001:db8::20#NAT#1024#2047"),
		rt(t, "23#192.168.0.0/24#2001:db8::21#NAT#2048#3071"),
		rt(t, "100#2001:db8:100::/64#2001:db8::30#LB"),
		rt(t, "100#2001:db8:100::/64#2001:db8::31#LB"))
	e.client([]route.VNI{23, 100})
	e.waitRoutes(245)
	ts := httptest.NewServer(New(Options{Server: e.Server, Version: "v1.4.0"}))
	defer ts.Close()

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		if err != nil {
			t.Fatalf("count %s: %v", sel, err)
		}
		return n
	}
	// waitRange waits until the pager shows want, as it does once the
	// routes table shows the answer to the latest query.
	waitRange := func(want string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](
			fmt.Sprintf("document.getElementById('range').textContent === %q", want),
			chromedp.WithPollingTimeout(10*time.Second)))
		if err != nil {
			t.Fatalf("range %q, want %q: %v", text("#range"), want, err)
		}
	}

	do("load page", chromedp.Navigate(ts.URL), chromedp.WaitVisible(chromedp.CSS("#routes tbody tr")))
	peersText := text("#peers tbody")
	if n := count("#peers tbody tr"); n != 3 || strings.Count(peersText, "ESTABLISHED") != 3 {
		t.Errorf("peers table: %d rows:\n%s", n, peersText)
	}
	for _, p := range e.Server.Peers() {
		if !strings.Contains(peersText, p.Remote) || p.Name == "" || !strings.Contains(peersText, p.Name) {
			t.Errorf("peers table lacks %s or its name %q", p.Remote, p.Name)
		}
	}
	if n := count("#routes tbody tr"); n != DefaultLimit || !strings.Contains(text("#routes tbody"), "10.0.0.0/32") {
		t.Errorf("routes table: %d rows, first page lacks 10.0.0.0/32", n)
	}
	if r := text("#range"); r != "1–100 of 245" {
		t.Errorf("range %q, want 1–100 of 245", r)
	}
	if v := text("#vnis tbody"); !strings.Contains(v, "23") || !strings.Contains(v, "100") {
		t.Errorf("VNI table:\n%s", v)
	}
	screenshot(t, ctx, "status-page.png")

	// Searching filters on the server while typing; the URL follows.
	do("search", chromedp.SendKeys(chromedp.CSS("#q"), "10.0.0.7"))
	waitRange("1–2 of 2")
	routesText := text("#routes tbody")
	if !strings.Contains(routesText, "2001:db8::4") || !strings.Contains(routesText, "2001:db8::9") || strings.Contains(routesText, "10.0.0.8/32") {
		t.Errorf("search for 10.0.0.7 shows:\n%s", routesText)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "q=10.0.0.7") {
		t.Errorf("location %q (%v) does not keep the search", loc, err)
	}
	screenshot(t, ctx, "status-page-search.png")

	// Search by nexthop type.
	clear := chromedp.Evaluate[chromedp.Void](`void (document.getElementById("q").value = "")`)
	do("search NAT", clear, chromedp.SendKeys(chromedp.CSS("#q"), "NAT"))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#routes tbody").textContent.includes("NAT")`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("NAT search: %v", err)
	}
	waitRange("1–2 of 2")
	if routesText = text("#routes tbody"); !strings.Contains(routesText, "1024–2047") || !strings.Contains(routesText, "2048–3071") {
		t.Errorf("NAT search shows:\n%s", routesText)
	}

	// Choosing a VNI in the VNI table.
	do("clear search", clear, chromedp.SendKeys(chromedp.CSS("#q"), " "))
	waitRange("1–100 of 245")
	do("select VNI 100", chromedp.Click(chromedp.CSS(`#vnis a[data-vni="100"]`)))
	waitRange("1–2 of 2")
	if routesText = text("#routes tbody"); !strings.Contains(routesText, "2001:db8:100::/64") || strings.Contains(routesText, "10.0.0.0/32") {
		t.Errorf("VNI 100 shows:\n%s", routesText)
	}

	// Paging through VNI 23, chosen in the selector.
	do("select VNI 23", chromedp.Evaluate[chromedp.Void](
		`void (document.getElementById("vni").value = "23", document.getElementById("vni").dispatchEvent(new Event("change")))`))
	waitRange("1–100 of 243")
	do("next page", chromedp.Click(chromedp.CSS("#next")))
	waitRange("101–200 of 243")
	do("next page", chromedp.Click(chromedp.CSS("#next")))
	waitRange("201–243 of 243")
	if routesText = text("#routes tbody"); !strings.Contains(routesText, "10.0.0.239/32") {
		t.Errorf("last page lacks 10.0.0.239/32:\n%s", routesText)
	}
	do("previous page", chromedp.Click(chromedp.CSS("#prev")))
	waitRange("101–200 of 243")

	// The page refreshes itself: a new peer and its route appear without a
	// reload.
	e.client(nil, route.Route{VNI: 23, Prefix: netip.MustParsePrefix("172.16.0.0/12"), NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::99")}})
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`document.querySelectorAll("#peers tbody tr").length === 4 && document.getElementById("range").textContent === "101–200 of 244"`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Errorf("page did not refresh: %v", err)
	}

	// A compact view for the README: 25 routes per page.
	do("compact view", chromedp.Navigate(ts.URL+"/?limit=25"), chromedp.WaitVisible(chromedp.CSS("#routes tbody tr")))
	png := screenshot(t, ctx, "status-page-compact.png")
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status-page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// screenshot saves a full-page PNG of the current page to the artifact
// directory and returns it.
func screenshot(t *testing.T, ctx context.Context, name string) []byte {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(png))
	return png
}
