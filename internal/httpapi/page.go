package httpapi

import "net/http"

// page serves the status page.
func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("metalbond " + h.role + " " + h.opts.Version + "\n\n/routes.json /routes.yaml /api/v1/status /api/v1/peers /api/v1/vnis /api/v1/routes /metrics /healthz /readyz\n"))
}

// static serves the page's assets.
func (h *handler) static(w http.ResponseWriter, r *http.Request) {
	http.NotFound(w, r)
}
