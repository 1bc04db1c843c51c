package compat

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/httpapi"
)

// StartServer runs a route server on the TCP address listen (such as
// "[::]:4711"), backed by metalbond.Server, until Shutdown. It returns once
// the address is bound, or the error binding it. Routes announced through
// m (AnnounceRoute) are served to the server's peers too. Routes the
// server's peers announce are reflected to its subscribers but not given
// to m's Client. It may be called again for more addresses (one server
// serves them all).
func (m *MetalBond) StartServer(listen string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("cannot start server: %w", err)
	}
	if m.cfg.ServerTLS != nil {
		ln = tls.NewListener(ln, m.cfg.ServerTLS)
	}
	m.mu.Lock()
	srv := m.server
	m.mu.Unlock()
	if srv == nil {
		if srv, err = m.newServer(); err != nil {
			ln.Close()
			return err
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	m.bg.Add(1) // under m.mu and before closed: never after Shutdown's Wait began
	m.mu.Unlock()
	go func() {
		defer m.bg.Done()
		if err := srv.Serve(m.ctx, ln); err != nil {
			m.log.Error("route server stopped", "addr", listen, "err", err)
		}
	}()
	return nil
}

// newServer creates m's server and feeds it m's announcements. m.opMu is
// held.
func (m *MetalBond) newServer() (*metalbond.Server, error) {
	srv, err := metalbond.NewServer(metalbond.ServerConfig{
		Keepalive: time.Duration(m.cfg.KeepaliveInterval) * time.Second,
		Logger:    m.log,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start server: %w", err)
	}
	own := srv.NewExternalSource("local announcements")
	for _, r := range m.core.Announcements() {
		if err := own.Add(r); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	m.server, m.own = srv, own
	m.mu.Unlock()
	return srv, nil
}

// StartHTTPServer serves the status page, /routes.json, /routes.yaml, the
// JSON API, /metrics, /healthz and /readyz (docs/http-api.md) on the TCP
// address listen until Shutdown. It shows the server of StartServer if
// that was called first, else the client side (peers of AddPeer and the
// routes received). It returns once the address is bound, or the error
// binding it.
func (m *MetalBond) StartHTTPServer(listen string) error {
	if err := m.checkOpen(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("cannot start HTTP server: %w", err)
	}
	opts := httpapi.Options{Logger: m.log}
	m.mu.Lock()
	if m.server != nil {
		opts.Server = m.server
	} else {
		opts.Client = m.core
	}
	h := &http.Server{Handler: httpapi.New(opts), ReadHeaderTimeout: 10 * time.Second}
	if m.closed {
		m.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	m.https = append(m.https, h)
	m.bg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.bg.Done()
		if err := h.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("HTTP server stopped", "addr", listen, "err", err)
		}
	}()
	return nil
}
