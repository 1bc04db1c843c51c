package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// Limits of /api/v1/routes pagination.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// PeerJSON is one peer in /api/v1/peers.
type PeerJSON struct {
	ID     uint32 `json:"id"`
	Remote string `json:"remote"`
	// Name is the name the peer gave in its HELLO (empty for plain v1
	// peers); Identity its authenticated TLS identity, if any.
	Name             string            `json:"name,omitempty"`
	Identity         string            `json:"identity,omitempty"`
	Local            string            `json:"local,omitempty"`
	Direction        string            `json:"direction"`
	State            string            `json:"state"`
	KeepaliveSeconds float64           `json:"keepalive_seconds"`
	EstablishedAt    *time.Time        `json:"established_at,omitempty"`
	UptimeSeconds    float64           `json:"uptime_seconds"`
	Subscriptions    []route.VNI       `json:"subscriptions"`
	Routes           int               `json:"routes"`
	UpdatesReceived  uint64            `json:"updates_received"`
	UpdatesSent      uint64            `json:"updates_sent"`
	MessagesReceived map[string]uint64 `json:"messages_received"`
	QueueBytes       int               `json:"queue_bytes"`
	Paced            bool              `json:"paced"`
	PacedSeconds     float64           `json:"paced_seconds"`
	BacklogBytes     int               `json:"backlog_bytes"`
	// StaleUntil is set for a peer whose routes are held for its graceful
	// restart (state STALE) until then.
	// On a client, it is the latest end of Held.
	StaleUntil *time.Time `json:"stale_until,omitempty"`
	// HeldRoutes counts the routes kept for the peer's graceful restart
	// (server, state STALE) or from the server's earlier sessions (client,
	// listed in Held).
	HeldRoutes int        `json:"held_routes"`
	Held       []HeldJSON `json:"held,omitempty"`
}

// HeldJSON is an ended session whose routes are kept until Until.
type HeldJSON struct {
	ID    uint32    `json:"id"`
	Until time.Time `json:"until"`
}

// PeersJSON is the body of /api/v1/peers.
type PeersJSON struct {
	Peers []PeerJSON `json:"peers"`
}

// VNIJSON is one VNI in /api/v1/vnis.
type VNIJSON struct {
	VNI         route.VNI `json:"vni"`
	Routes      int       `json:"routes"`
	Prefixes    int       `json:"prefixes"`
	Subscribers int       `json:"subscribers"`
}

// VNIsJSON is the body of /api/v1/vnis.
type VNIsJSON struct {
	VNIs []VNIJSON `json:"vnis"`
}

// NextHopJSON is a route's nexthop.
type NextHopJSON struct {
	Address     string    `json:"address"`
	Type        string    `json:"type"` // STD, NAT or LB
	TargetVNI   route.VNI `json:"target_vni"`
	NATPortFrom uint16    `json:"nat_port_from"`
	NATPortTo   uint16    `json:"nat_port_to"`
}

// PeerRef names a peer that holds a route.
type PeerRef struct {
	ID     uint32 `json:"id"`
	Remote string `json:"remote"`
	// Name is the peer's HELLO name or TLS identity, if it gave one.
	Name string `json:"name,omitempty"`
	// HeldUntil is set when the route is held from an ended session (for
	// graceful restart) until then.
	HeldUntil *time.Time `json:"held_until,omitempty"`
}

// RouteJSON is one route in /api/v1/routes.
type RouteJSON struct {
	VNI     route.VNI   `json:"vni"`
	Prefix  string      `json:"prefix"`
	NextHop NextHopJSON `json:"nexthop"`
	// Peers are the sessions the route was received from (announcers on
	// a server, servers on a client); empty for /api/v1/announcements.
	Peers []PeerRef `json:"peers"`
}

// RoutesJSON is the body of /api/v1/routes: one page of the routes that
// match the filters.
type RoutesJSON struct {
	// Total is the number of matching routes, over all pages.
	Total  int         `json:"total"`
	Offset int         `json:"offset"`
	Limit  int         `json:"limit"`
	Routes []RouteJSON `json:"routes"`
}

// AnnouncementsJSON is the body of /api/v1/announcements.
type AnnouncementsJSON struct {
	Routes []RouteJSON `json:"routes"`
}

// StatusJSON is the body of /api/v1/status.
type StatusJSON struct {
	Role          string    `json:"role"` // server or client
	Version       string    `json:"version"`
	Ready         bool      `json:"ready"`
	NotReady      string    `json:"not_ready,omitempty"` // why not
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Peers         int       `json:"peers"`
	Established   int       `json:"established"`
	VNIs          int       `json:"vnis"`
	Routes        int       `json:"routes"`
	// Server are the counters of a server.
	Server *ServerCountersJSON `json:"server,omitempty"`
	// Client are the counters of a client.
	Client *ClientCountersJSON `json:"client,omitempty"`
	// Installer are the statistics of a client's kernel route installer.
	Installer *InstallerJSON `json:"installer,omitempty"`
}

// ServerCountersJSON are the cumulative counters of a server (see
// metalbond.ServerStats).
type ServerCountersJSON struct {
	Accepted          uint64            `json:"accepted"`
	HandshakeFailures uint64            `json:"handshake_failures"`
	ProtocolErrors    map[string]uint64 `json:"protocol_errors"`
	SlowPeersDropped  uint64            `json:"slow_peers_dropped"`
	UpdatesReceived   uint64            `json:"updates_received"`
	UpdatesSent       uint64            `json:"updates_sent"`
}

// ClientCountersJSON are the state and counters of a client (see
// metalbond.ClientStats).
type ClientCountersJSON struct {
	Subscriptions   []route.VNI `json:"subscriptions"`
	Announcements   int         `json:"announcements"`
	RoutesInstalled int64       `json:"routes_installed"`
	InstallErrors   uint64      `json:"install_errors"`
	LoopsPrevented  uint64      `json:"loops_prevented"`
}

// InstallerJSON are the statistics of a kernel route installer (see
// kernel.Stats).
type InstallerJSON struct {
	Desired    int    `json:"desired"`
	Routes     int    `json:"routes"`
	Nexthops   int    `json:"nexthops"`
	Pending    int    `json:"pending"`
	Failing    int    `json:"failing"`
	Failures   uint64 `json:"failures"`
	Retries    uint64 `json:"retries"`
	Repairs    uint64 `json:"repairs"`
	Reconciles uint64 `json:"reconciles"`
	Ignored    uint64 `json:"ignored"`
}

func peerJSON(p metalbond.PeerInfo, now time.Time) PeerJSON {
	j := PeerJSON{
		ID:               p.ID,
		Remote:           p.Remote,
		Name:             p.Name,
		Identity:         p.Identity,
		HeldRoutes:       p.HeldRoutes,
		Local:            p.Local,
		Direction:        p.Direction,
		State:            p.State,
		KeepaliveSeconds: p.Keepalive.Seconds(),
		Subscriptions:    p.Subscriptions,
		Routes:           p.Routes,
		UpdatesReceived:  p.UpdatesReceived,
		UpdatesSent:      p.UpdatesSent,
		MessagesReceived: p.MessagesReceived,
		QueueBytes:       p.QueueBytes,
		Paced:            p.Paced,
		PacedSeconds:     p.PacedTime.Seconds(),
		BacklogBytes:     p.BacklogBytes,
	}
	if !p.EstablishedAt.IsZero() {
		t := p.EstablishedAt
		j.EstablishedAt = &t
		j.UptimeSeconds = now.Sub(t).Round(time.Millisecond).Seconds()
	}
	if !p.StaleUntil.IsZero() {
		t := p.StaleUntil
		j.StaleUntil = &t
	}
	for _, h := range p.Held {
		j.Held = append(j.Held, HeldJSON{ID: h.ID, Until: h.Until})
	}
	if j.Subscriptions == nil {
		j.Subscriptions = []route.VNI{}
	}
	if j.MessagesReceived == nil {
		j.MessagesReceived = map[string]uint64{}
	}
	return j
}

func (h *handler) peerList() PeersJSON {
	now := time.Now()
	peers := h.src.Peers()
	out := PeersJSON{Peers: make([]PeerJSON, 0, len(peers))}
	for _, p := range peers {
		out.Peers = append(out.Peers, peerJSON(p, now))
	}
	return out
}

func (h *handler) peers(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, h.peerList())
}

func (h *handler) vniList() VNIsJSON {
	vnis := h.src.VNIs()
	out := VNIsJSON{VNIs: make([]VNIJSON, 0, len(vnis))}
	for _, v := range vnis {
		out.VNIs = append(out.VNIs, VNIJSON{VNI: v.VNI, Routes: v.Routes, Prefixes: v.Prefixes, Subscribers: v.Subscribers})
	}
	return out
}

func (h *handler) vnis(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, h.vniList())
}

func nextHopJSON(nh route.NextHop) NextHopJSON {
	return NextHopJSON{
		Address:     nh.Address.String(),
		Type:        nh.Type.String(),
		TargetVNI:   nh.TargetVNI,
		NATPortFrom: nh.NATPortFrom,
		NATPortTo:   nh.NATPortTo,
	}
}

// routeQuery is a parsed /api/v1/routes query.
type routeQuery struct {
	vni           route.VNI
	allVNIs       bool
	filter        filter
	offset, limit int
}

// parseRouteQuery parses vni, prefix, nexthop, q, offset and limit.
func parseRouteQuery(r *http.Request) (routeQuery, error) {
	q := r.URL.Query()
	rq := routeQuery{allVNIs: true, limit: DefaultLimit}
	if s := q.Get("vni"); s != "" {
		vni, err := route.ParseVNI(s)
		if err != nil {
			return rq, err
		}
		rq.vni, rq.allVNIs = vni, false
	}
	rq.filter = newFilter(q.Get("prefix"), q.Get("nexthop"), q.Get("q"))
	var err error
	if rq.offset, err = intParam(q.Get("offset"), 0, 0, 1<<31-1); err != nil {
		return rq, fmt.Errorf("invalid offset: %w", err)
	}
	if rq.limit, err = intParam(q.Get("limit"), DefaultLimit, 1, MaxLimit); err != nil {
		return rq, fmt.Errorf("invalid limit: %w", err)
	}
	return rq, nil
}

func intParam(s string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q: want a number from %d to %d", s, lo, hi)
	}
	return n, nil
}

// routePage runs q over the source. It converts only the routes of the
// requested page, so a large table costs one pass of cheap comparisons.
func (h *handler) routePage(q routeQuery) RoutesJSON {
	out := RoutesJSON{Offset: q.offset, Limit: q.limit, Routes: []RouteJSON{}}
	var vnis []route.VNI
	if q.allVNIs {
		for _, v := range h.src.VNIs() {
			vnis = append(vnis, v.VNI)
		}
	} else {
		vnis = []route.VNI{q.vni}
	}
	var (
		names   map[uint32]PeerRef
		scratch []byte
		ok      bool
		all     = q.filter.empty()
	)
	for _, vni := range vnis {
		routes := h.src.Routes(vni)
		if all && out.Total+len(routes) <= q.offset {
			out.Total += len(routes) // a whole VNI before the page
			continue
		}
		for _, ri := range routes {
			if !all {
				if ok, scratch = q.filter.match(ri.Route, scratch); !ok {
					continue
				}
			}
			if n := out.Total; n >= q.offset && n < q.offset+q.limit {
				if names == nil {
					names = peerNames(h.src.Peers())
				}
				out.Routes = append(out.Routes, routeJSON(ri, names))
			}
			out.Total++
		}
	}
	return out
}

func routeJSON(ri metalbond.RouteInfo, names map[uint32]PeerRef) RouteJSON {
	j := RouteJSON{VNI: ri.VNI, Prefix: ri.Prefix.String(), NextHop: nextHopJSON(ri.NextHop), Peers: make([]PeerRef, 0, len(ri.Peers))}
	for _, id := range ri.Peers {
		ref, ok := names[id]
		if !ok {
			ref = PeerRef{ID: id, Remote: "(disconnected)"}
		}
		j.Peers = append(j.Peers, ref)
	}
	return j
}

func routeInfo(r route.Route) metalbond.RouteInfo { return metalbond.RouteInfo{Route: r} }

func (h *handler) routes(w http.ResponseWriter, r *http.Request) {
	q, err := parseRouteQuery(r)
	if err != nil {
		h.error(w, http.StatusBadRequest, err.Error())
		return
	}
	h.writeJSON(w, h.routePage(q))
}

func (h *handler) announcements(w http.ResponseWriter, _ *http.Request) {
	out := AnnouncementsJSON{Routes: []RouteJSON{}}
	if c := h.opts.Client; c != nil {
		for _, r := range c.Announcements() {
			out.Routes = append(out.Routes, routeJSON(routeInfo(r), nil))
		}
	}
	h.writeJSON(w, out)
}

func (h *handler) statusJSON() StatusJSON {
	now := time.Now()
	s := StatusJSON{
		Role:          h.role,
		Version:       h.opts.Version,
		StartedAt:     h.started,
		UptimeSeconds: now.Sub(h.started).Round(time.Second).Seconds(),
	}
	if err := h.ready(); err != nil {
		s.NotReady = err.Error()
	} else {
		s.Ready = true
	}
	for _, p := range h.src.Peers() {
		s.Peers++
		if p.State == stateEstablished {
			s.Established++
		}
	}
	for _, v := range h.src.VNIs() {
		s.VNIs++
		s.Routes += v.Routes
	}
	if srv := h.opts.Server; srv != nil {
		st := srv.Stats()
		s.Server = &ServerCountersJSON{
			Accepted:          st.Accepted,
			HandshakeFailures: st.HandshakeFailures,
			ProtocolErrors:    st.ProtocolErrors,
			SlowPeersDropped:  st.SlowPeersDropped,
			UpdatesReceived:   st.UpdatesReceived,
			UpdatesSent:       st.UpdatesSent,
		}
	}
	if c := h.opts.Client; c != nil {
		st := c.Stats()
		s.Client = &ClientCountersJSON{
			Subscriptions:   c.Subscriptions(),
			Announcements:   len(c.Announcements()),
			RoutesInstalled: st.RoutesInstalled,
			InstallErrors:   st.InstallErrors,
			LoopsPrevented:  st.LoopsPrevented,
		}
		if s.Client.Subscriptions == nil {
			s.Client.Subscriptions = []route.VNI{}
		}
	}
	if h.opts.Installer != nil {
		st := h.opts.Installer()
		s.Installer = &InstallerJSON{
			Desired: st.Desired, Routes: st.Routes, Nexthops: st.Nexthops, Pending: st.Pending, Failing: st.Failing,
			Failures: st.Failures, Retries: st.Retries, Repairs: st.Repairs, Reconciles: st.Reconciles, Ignored: st.Ignored,
		}
	}
	return s
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, h.statusJSON())
}

const stateEstablished = "ESTABLISHED"

// netipPrefixWithin reports whether p lies within outer (equal or more
// specific, same family).
func netipPrefixWithin(p, outer netip.Prefix) bool {
	return p.Bits() >= outer.Bits() && outer.Contains(p.Addr())
}
