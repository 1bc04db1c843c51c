package compat_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// v1Server is a route server with the wire behaviour of the existing
// implementation's: a HELLO without extensions, keepalives, the table of a
// VNI on SUBSCRIBE, every UPDATE reflected to the other subscribers, and a
// peer's routes withdrawn when its session ends. No END_OF_SYNC, no
// graceful restart. It reads like the deployed implementation: one read
// into a 65,535-byte buffer at a time, each read taken to hold whole
// messages, and a session reset when a read fills the buffer or ends inside
// a message (deployedv1.CheckRead, docs/pacing.md). It is small on purpose:
// it checks that the compat layer needs nothing of our server.
type v1Server struct {
	ln       net.Listener
	wg       sync.WaitGroup
	overruns atomic.Int64 // reads that would break the deployed reader

	mu     sync.Mutex // guards the following
	conns  map[*v1Conn]bool
	routes map[route.Route]map[*v1Conn]bool // holders of each route
	subs   map[route.VNI]map[*v1Conn]bool
}

type v1Conn struct {
	conn net.Conn
	wmu  sync.Mutex // serialises writes
}

func (c *v1Conn) write(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	c.conn.Write(b) // a failed write ends the session through its reader
}

// startV1Server serves on addr until stop is called (or the test ends).
func startV1Server(t *testing.T, addr string) *v1Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &v1Server{ln: ln, conns: map[*v1Conn]bool{},
		routes: map[route.Route]map[*v1Conn]bool{}, subs: map[route.VNI]map[*v1Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c := &v1Conn{conn: conn}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop closes the listener and every session and waits for them.
func (s *v1Server) stop() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *v1Server) serve(c *v1Conn) {
	defer s.drop(c)
	r := wire.NewReader(&deployedReader{conn: c.conn, overruns: &s.overruns})
	m, err := r.ReadMessage()
	h, ok := m.(wire.Hello)
	if err != nil || !ok {
		return
	}
	frame, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: h.Keepalive, IsServer: true})
	c.write(frame)
	stop := make(chan struct{})
	defer close(stop)
	s.wg.Add(1)
	go func() { // keepalives; ends with the session
		defer s.wg.Done()
		ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
		tick := time.NewTicker(time.Duration(h.Keepalive) * time.Second)
		defer tick.Stop()
		for {
			c.write(ka)
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		s.handle(c, m)
	}
}

func (s *v1Server) handle(c *v1Conn, m wire.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m := m.(type) {
	case wire.Subscribe:
		if s.subs[m.VNI] == nil {
			s.subs[m.VNI] = map[*v1Conn]bool{}
		}
		s.subs[m.VNI][c] = true
		var b []byte
		for r := range s.routes {
			if r.VNI == m.VNI {
				b = wire.AppendUpdate(b, wire.ActionAdd, r)
			}
		}
		if b != nil {
			c.write(b)
		}
	case wire.Unsubscribe:
		delete(s.subs[m.VNI], c)
	case wire.Update:
		holders := s.routes[m.Route]
		if m.Action == wire.ActionAdd {
			if holders == nil {
				holders = map[*v1Conn]bool{}
				s.routes[m.Route] = holders
			}
			holders[c] = true
		} else {
			delete(holders, c)
			if len(holders) == 0 {
				delete(s.routes, m.Route)
			}
		}
		s.reflect(c, m.Action, m.Route)
	}
}

// reflect sends one update to the subscribers of its VNI but from. s.mu is
// held (writes to loopback peers that read are quick).
func (s *v1Server) reflect(from *v1Conn, a wire.Action, r route.Route) {
	frame := wire.AppendUpdate(nil, a, r)
	for sub := range s.subs[r.VNI] {
		if sub != from {
			sub.write(frame)
		}
	}
}

// count returns the number of routes the server holds in vni.
func (s *v1Server) count(vni route.VNI) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for r := range s.routes {
		if r.VNI == vni {
			n++
		}
	}
	return n
}

// drop forgets c and withdraws the routes only it held.
func (s *v1Server) drop(c *v1Conn) {
	c.conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	for _, subs := range s.subs {
		delete(subs, c)
	}
	for r, holders := range s.routes {
		if holders[c] {
			delete(holders, c)
			if len(holders) == 0 {
				delete(s.routes, r)
				s.reflect(c, wire.ActionRemove, r)
			}
		}
	}
}

// deployedReader reads like the deployed implementation: each read from the
// connection goes into one 65,535-byte buffer, and a read that fills it or
// does not hold whole messages ends the session.
type deployedReader struct {
	conn     net.Conn
	overruns *atomic.Int64
	buf      []byte
	data     []byte // read and not yet consumed
}

func (r *deployedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.buf == nil {
			r.buf = make([]byte, deployedv1.ReadBuffer)
		}
		n, err := r.conn.Read(r.buf)
		if n == 0 {
			return 0, err
		}
		if err := deployedv1.CheckRead(r.buf[:n]); err != nil {
			r.overruns.Add(1)
			return 0, err
		}
		r.data = r.buf[:n]
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}
