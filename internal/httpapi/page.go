package httpapi

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metalbond/metalbond/route"
)

// assets holds the status page: the template and the static files it links.
//
//go:embed assets
var assets embed.FS

var (
	staticFS = func() fs.FS {
		sub, err := fs.Sub(assets, "assets")
		if err != nil {
			panic(err)
		}
		return sub
	}()
	pageTemplate = template.Must(template.New("index.html").Funcs(template.FuncMap{
		"duration":  func(s float64) string { return formatDuration(time.Duration(s * float64(time.Second))) },
		"thousands": thousands,
		"bytes":     formatBytes,
		"vnis":      formatVNIs,
		"sum":       sumCounts,
		"nexthop":   formatNextHop,
		"peers":     formatPeers,
	}).ParseFS(assets, "assets/index.html"))
)

// pageData is what the template renders.
type pageData struct {
	Host          string
	Status        StatusJSON
	Peers         []PeerJSON
	VNIs          []VNIJSON
	Announcements []RouteJSON
	Routes        RoutesJSON
	Query         pageQuery
	Prev, Next    string // links to the neighbouring pages; empty at the ends
	Range         string // "1–100 of 12,345"
	LimitOptions  []int  // page sizes offered
}

// pageQuery is the route search shown on the page, as form values.
type pageQuery struct {
	VNI, Q        string
	Offset, Limit int
}

// securityPolicy allows the page its own scripts, styles and images only.
const securityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// page serves the status page. It is complete without JavaScript (the
// search form and pager are plain links); app.js then keeps it current.
func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	q, err := parseRouteQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d := pageData{
		Host:   r.Host,
		Status: h.statusJSON(),
		Peers:  h.peerList().Peers,
		VNIs:   h.vniList().VNIs,
		Routes: h.routePage(q),
		Query:  pageQuery{Q: r.URL.Query().Get("q"), Offset: q.offset, Limit: q.limit},
	}
	if !q.allVNIs {
		d.Query.VNI = q.vni.String()
	}
	if c := h.opts.Client; c != nil {
		for _, rt := range c.Announcements() {
			d.Announcements = append(d.Announcements, routeJSON(routeInfo(rt), nil))
		}
	}
	d.Range = pageRange(d.Routes)
	d.LimitOptions = []int{25, DefaultLimit, 500, 1000}
	if !slices.Contains(d.LimitOptions, q.limit) {
		d.LimitOptions = append(d.LimitOptions, q.limit)
		slices.Sort(d.LimitOptions)
	}
	if q.offset > 0 {
		d.Prev = pageLink(d.Query, max(0, q.offset-q.limit))
	}
	if q.offset+len(d.Routes.Routes) < d.Routes.Total {
		d.Next = pageLink(d.Query, q.offset+q.limit)
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		h.log.Error("http: render status page", "err", err)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", securityPolicy)
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Write(buf.Bytes())
}

// static serves the page's assets from the embedded files.
func (h *handler) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/static/")
	if name == "index.html" || name == "" || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	http.ServeFileFS(w, r, staticFS, name)
}

func pageLink(q pageQuery, offset int) string {
	v := url.Values{}
	if q.VNI != "" {
		v.Set("vni", q.VNI)
	}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	if q.Limit != DefaultLimit {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return "?" + v.Encode()
}

func pageRange(p RoutesJSON) string {
	if p.Total == 0 {
		return "no routes"
	}
	if len(p.Routes) == 0 {
		return fmt.Sprintf("none of %s here", thousands(p.Total))
	}
	return fmt.Sprintf("%s–%s of %s", thousands(p.Offset+1), thousands(p.Offset+len(p.Routes)), thousands(p.Total))
}

// thousands formats an integer with comma separators: 100,000.
func thousands(v any) string {
	var s string
	switch n := v.(type) {
	case int:
		s = strconv.Itoa(n)
	case int64:
		s = strconv.FormatInt(n, 10)
	case uint64:
		s = strconv.FormatUint(n, 10)
	default:
		return fmt.Sprint(v)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatDuration renders d compactly: 45s, 12m3s, 5h2m, 3d4h.
func formatDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// formatBytes renders a byte count: 0, 512 B, 1.5 KiB, 3.2 MiB.
func formatBytes(n int) string {
	switch {
	case n == 0:
		return "0"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func formatVNIs(vnis []route.VNI) string {
	if len(vnis) == 0 {
		return "–"
	}
	s := make([]string, len(vnis))
	for i, v := range vnis {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}

func sumCounts(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func formatNextHop(nh NextHopJSON) string {
	s := nh.Address
	switch nh.Type {
	case "STD":
	case "NAT":
		s += fmt.Sprintf(" NAT %d–%d", nh.NATPortFrom, nh.NATPortTo)
	default:
		s += " " + nh.Type
	}
	return s
}

// formatPeers renders the peers a route came from: "name (address)", and
// "held until 15:04:05" for a route held from an ended session.
func formatPeers(ps []PeerRef) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Remote
		if p.Name != "" {
			s[i] = p.Name + " (" + p.Remote + ")"
		}
		if p.HeldUntil != nil {
			s[i] += " held until " + p.HeldUntil.Format("15:04:05")
		}
	}
	return strings.Join(s, ", ")
}
