package compat_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// v1Server is a route server with the wire behaviour of the existing
// implementation's: a HELLO without extensions, keepalives, the table of a
// VNI on SUBSCRIBE, every UPDATE reflected to the other subscribers, and a
// peer's routes withdrawn when its session ends. No END_OF_SYNC, no
// graceful restart. It is small on purpose: it checks that the compat
// layer needs nothing of our server.
type v1Server struct {
	ln net.Listener
	wg sync.WaitGroup

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
	r := wire.NewReader(c.conn)
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
