// Package httpapi serves the HTTP view of a MetalBond server or client: a
// status page for people at /, the route table in the historical shape at
// /routes.json and /routes.yaml, a JSON API of its own under /api/v1/, the
// Prometheus metrics at /metrics, and /healthz and /readyz for supervisors.
//
// Everything is read-only: the handler answers GET (and HEAD) only and
// offers no way to change routes, subscriptions or sessions. Every response
// is computed from snapshots of the Server or Client taken at request time.
// docs/http-api.md documents the endpoints.
package httpapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/metrics"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// Options configures the handler. Exactly one of Server and Client must be
// set.
type Options struct {
	// Server is the route server to show.
	Server *metalbond.Server
	// Client is the client to show.
	Client *metalbond.Client
	// Installer returns the statistics of the client's kernel route
	// installer, if it has one.
	Installer func() kernel.Stats
	// Metrics is served at /metrics. If nil, New builds one from Server
	// or Client and Installer.
	Metrics *metrics.Metrics
	// Version is reported on the page, in /api/v1/status and as
	// "metalbondVersion" in /routes.json.
	Version string
	// Ready reports whether the daemon is ready (/readyz): nil means
	// ready. If nil, a server is always ready (the handler is only served
	// once the server listens) and a client is ready while a session to at
	// least one server is established.
	Ready func() error
	// Logger receives errors writing responses. Default discards.
	Logger *slog.Logger
}

// source is what the handler reads: *metalbond.Server and
// *metalbond.Client both provide it.
type source interface {
	Peers() []metalbond.PeerInfo
	VNIs() []metalbond.VNIInfo
	Routes(vni route.VNI) []metalbond.RouteInfo
}

// handler serves every endpoint. Its fields are set by New and read-only
// afterwards, so it is safe for concurrent use.
type handler struct {
	opts    Options
	src     source
	role    string // "server" or "client"
	started time.Time
	log     *slog.Logger
}

// New returns the handler described by opts. It panics if neither or both of
// opts.Server and opts.Client are set: that is a programming error.
func New(opts Options) http.Handler {
	h := &handler{opts: opts, started: time.Now(), log: opts.Logger}
	switch {
	case opts.Server != nil && opts.Client == nil:
		h.src, h.role = opts.Server, "server"
	case opts.Client != nil && opts.Server == nil:
		h.src, h.role = opts.Client, "client"
	default:
		panic("httpapi: exactly one of Options.Server and Options.Client must be set")
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.opts.Version == "" {
		h.opts.Version = "dev"
	}
	m := opts.Metrics
	if m == nil {
		m = metrics.New(metrics.Options{Server: opts.Server, Client: opts.Client, Installer: opts.Installer, Version: h.opts.Version})
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /static/", h.static)
	mux.HandleFunc("GET /routes.json", h.compatJSON)
	mux.HandleFunc("GET /routes.yaml", h.compatYAML)
	mux.HandleFunc("GET /api/v1/status", h.status)
	mux.HandleFunc("GET /api/v1/peers", h.peers)
	mux.HandleFunc("GET /api/v1/vnis", h.vnis)
	mux.HandleFunc("GET /api/v1/routes", h.routes)
	mux.HandleFunc("GET /api/v1/announcements", h.announcements)
	mux.HandleFunc("GET /api/v1/", func(w http.ResponseWriter, r *http.Request) {
		h.error(w, http.StatusNotFound, "no such endpoint: see docs/http-api.md")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	return readOnly(mux)
}

// readOnly refuses every method but GET and HEAD, with 405 and an Allow
// header, whatever the path. It also sets headers common to all responses.
func readOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only: only GET and HEAD are allowed", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + err.Error() + "\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

var errNoSession = errors.New("no session to a server is established")

// ready reports whether the daemon is ready; nil means ready.
func (h *handler) ready() error {
	if h.opts.Ready != nil {
		return h.opts.Ready()
	}
	if h.opts.Client != nil && !h.opts.Client.Ready() {
		return errNoSession
	}
	return nil
}

// writeJSON writes v as indented JSON with status 200.
func (h *handler) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		h.log.Debug("http: write response", "err", err)
	}
}

// ErrorJSON is the body of every error response of /api/v1/.
type ErrorJSON struct {
	Error string `json:"error"`
}

func (h *handler) error(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(ErrorJSON{Error: msg})
}

// peerNames describes the peers, by session ID, for route listings: their
// address and name, and until when a route from an ended session is held
// (a STALE peer of a server; a client's earlier sessions of a server).
func peerNames(peers []metalbond.PeerInfo) map[uint32]PeerRef {
	m := make(map[uint32]PeerRef, len(peers))
	for _, p := range peers {
		ref := PeerRef{ID: p.ID, Remote: cmp.Or(p.Remote, "?"), Name: cmp.Or(p.Name, p.Identity)}
		if p.State == "STALE" && !p.StaleUntil.IsZero() {
			t := p.StaleUntil
			ref.HeldUntil = &t
		}
		m[p.ID] = ref
		for _, h := range p.Held { // may be p.ID itself while p reconnects
			t := h.Until
			m[h.ID] = PeerRef{ID: h.ID, Remote: ref.Remote, Name: ref.Name, HeldUntil: &t}
		}
	}
	return m
}
