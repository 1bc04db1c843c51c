package metalbond

import (
	"net/netip"
	"sync"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// RouteSink receives the routes a Server's own peers announce, so that a
// cluster of servers can share them (see ServerConfig.Sink).
type RouteSink interface {
	// LocalRoute is called with add=true when the first of the server's
	// peers announces r, and with add=false when the last one withdraws it
	// or goes away. Calls for one VNI are serialised and come in the order
	// of the changes; calls for different VNIs may be concurrent. The
	// server holds the VNI's lock during the call: LocalRoute must not
	// block and must not call back into the Server.
	LocalRoute(r route.Route, add bool)
}

// externalBit marks the source IDs of ExternalSources; peers' IDs never
// have it set.
const externalBit routetable.SourceID = 1 << 31

func isLocalSource(id routetable.SourceID) bool { return id&externalBit == 0 }

// hasLocalHolder reports whether one of the server's own peers holds the
// route. st.mu is held.
func (st *vniState) hasLocalHolder(p netip.Prefix, nh route.NextHop) bool {
	local := false
	st.routes.Holders(p, nh).Each(func(id routetable.SourceID) {
		local = local || isLocalSource(id)
	})
	return local
}

// ExternalSource feeds the Server routes learned elsewhere, such as from
// the other servers of a cluster. The server reflects them to its
// subscribers exactly as if a peer had announced them, and does not report
// them to its RouteSink. An ExternalSource is safe for concurrent use.
type ExternalSource struct {
	srv  *Server
	id   routetable.SourceID
	name string

	mu   sync.Mutex // guards vnis and frame
	vnis map[route.VNI]*vniState
	// frame is a scratch buffer for encoding.
	frame []byte
}

// NewExternalSource returns a new source of routes named name (for logs
// and status pages).
func (s *Server) NewExternalSource(name string) *ExternalSource {
	id := externalBit | routetable.SourceID(s.nextExternal.Add(1))
	return &ExternalSource{srv: s, id: id, name: name, vnis: make(map[route.VNI]*vniState)}
}

// Add announces r from this source. It reports an error if r is invalid.
func (e *ExternalSource) Add(r route.Route) error { return e.change(r, wire.ActionAdd) }

// Remove withdraws r from this source.
func (e *ExternalSource) Remove(r route.Route) error { return e.change(r, wire.ActionRemove) }

func (e *ExternalSource) change(r route.Route, a wire.Action) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := r.NextHop.ValidateUnderlay(); err != nil {
		return err // as a server refuses it from a peer
	}
	e.mu.Lock()
	st := e.vnis[r.VNI]
	if st != nil {
		st.mu.Lock()
		if st.dead { // dropped while empty: fetch it again
			st.mu.Unlock()
			st = nil
		}
	}
	if st == nil {
		st = e.srv.lockVNI(r.VNI)
		e.vnis[r.VNI] = st
	}
	var congested []*session.Session
	var changed bool
	if a == wire.ActionAdd {
		changed = st.routes.Add(r.Prefix, r.NextHop, e.id)
	} else {
		changed = st.routes.Remove(r.Prefix, r.NextHop, e.id)
	}
	if changed {
		e.frame = wire.AppendUpdate(e.frame[:0], a, r)
		congested = e.srv.fanout(st, e.frame, nil, nil)
	}
	empty := st.routes.Len() == 0
	st.mu.Unlock()
	if empty {
		delete(e.vnis, r.VNI)
		e.srv.dropIfEmpty(r.VNI, st)
	}
	e.mu.Unlock()
	applyBackPressure(congested)
	return nil
}

// Len returns the number of routes this source holds.
func (e *ExternalSource) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, st := range e.vnis {
		st.mu.Lock()
		n += st.routes.SourceLen(e.id)
		st.mu.Unlock()
	}
	return n
}

// Close withdraws every route of the source. The source can be used again
// afterwards.
func (e *ExternalSource) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.srv.withdrawSource(e.id, e.vnis, nil, e.srv.log.With("source", e.name))
	e.vnis = make(map[route.VNI]*vniState)
}
