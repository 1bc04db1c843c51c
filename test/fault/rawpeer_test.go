package faulttest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// rawPeer is a MetalBond peer written frame by frame with the wire codec,
// independent of the library's session code: a bulk announcer, a subscriber
// that records every update, or a misbehaving peer.
type rawPeer struct {
	conn net.Conn
	r    *wire.Reader

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex // guards the following, written by the reader goroutine
	table   routeSet
	adds    int // ADDs that added a route to table
	removes int // REMOVEs that removed one
	eos     map[route.VNI]int
	readErr error

	readDone chan struct{} // closed when the reader goroutine ends
	stop     chan struct{} // closed by close
	wg       sync.WaitGroup
}

// dialRaw connects to addr and completes the v1 handshake with hello.
func dialRaw(addr string, hello wire.Hello) (*rawPeer, error) {
	return dialRawWith(&net.Dialer{Timeout: 5 * time.Second}, addr, hello)
}

// dialRawWith is dialRaw with a dialer of the caller's.
func dialRawWith(d *net.Dialer, addr string, hello wire.Hello) (*rawPeer, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &rawPeer{conn: conn, r: wire.NewReader(conn), table: make(routeSet),
		eos: make(map[route.VNI]int), stop: make(chan struct{})}
	if err := p.handshake(hello); err != nil {
		conn.Close()
		return nil, err
	}
	return p, nil
}

func (p *rawPeer) handshake(hello wire.Hello) error {
	p.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer p.conn.SetDeadline(time.Time{})
	if err := p.send(hello); err != nil {
		return err
	}
	m, err := p.r.ReadMessage()
	if err != nil {
		return fmt.Errorf("read HELLO: %w", err)
	}
	if h, ok := m.(wire.Hello); !ok || !h.IsServer {
		return fmt.Errorf("got %#v, want a server HELLO", m)
	}
	if err := p.send(wire.Keepalive{}); err != nil {
		return err
	}
	if m, err = p.r.ReadMessage(); err != nil {
		return fmt.Errorf("read KEEPALIVE: %w", err)
	}
	if _, ok := m.(wire.Keepalive); !ok {
		return fmt.Errorf("got %#v, want KEEPALIVE", m)
	}
	return nil
}

// ourHello is the HELLO of a peer speaking our extensions, known to the
// server as name.
func ourHello(name string) wire.Hello {
	return wire.Hello{Keepalive: 2, Features: wire.FeatureEndOfSync | wire.FeatureGracefulRestart,
		GracefulRestart: 60, Name: name}
}

// v1Hello is the HELLO of a plain v1 peer.
func v1Hello() wire.Hello { return wire.Hello{Keepalive: 2} }

// write writes b whole.
func (p *rawPeer) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// send writes messages.
func (p *rawPeer) send(ms ...wire.Message) error {
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = wire.AppendFrame(b, m); err != nil {
			return err
		}
	}
	return p.write(b)
}

// update sends one UPDATE per route, in batches.
func (p *rawPeer) update(a wire.Action, rs []route.Route) error {
	var b []byte
	for i, r := range rs {
		b = wire.AppendUpdate(b, a, r)
		if len(b) > 256<<10 || i == len(rs)-1 {
			if err := p.write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	return nil
}

// keepalive sends a KEEPALIVE every interval until close or until the
// returned function is called.
func (p *rawPeer) keepalive(every time.Duration) (stop func()) {
	mute := make(chan struct{})
	var once sync.Once
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-mute:
				return
			case <-t.C:
				if p.send(wire.Keepalive{}) != nil {
					return
				}
			}
		}
	}()
	return func() { once.Do(func() { close(mute) }) }
}

// readUpdates reads frames synchronously (no reader goroutine may run)
// until n UPDATEs have been applied, then stops reading.
func (p *rawPeer) readUpdates(n int, timeout time.Duration) error {
	p.conn.SetReadDeadline(time.Now().Add(timeout))
	defer p.conn.SetReadDeadline(time.Time{})
	for got := 0; got < n; {
		t, body, err := p.r.ReadFrame()
		if err != nil {
			return err
		}
		if t != wire.TypeUpdate {
			continue
		}
		u, err := wire.DecodeUpdate(body)
		if err != nil {
			return err
		}
		p.apply(u)
		got++
	}
	return nil
}

// read starts the reader goroutine: it applies UPDATEs to the table and
// counts END_OF_SYNC markers until the connection ends.
func (p *rawPeer) read() {
	p.readDone = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.readDone)
		var err error
		for err == nil {
			var t wire.Type
			var body []byte
			t, body, err = p.r.ReadFrame()
			if err != nil {
				break
			}
			switch t {
			case wire.TypeKeepalive:
			case wire.TypeUpdate:
				var u wire.Update
				if u, err = wire.DecodeUpdate(body); err == nil {
					p.apply(u)
				}
			case wire.TypeEndOfSync:
				var m wire.Message
				if m, err = wire.Decode(t, body); err == nil {
					p.mu.Lock()
					p.eos[m.(wire.EndOfSync).VNI]++
					p.mu.Unlock()
				}
			default:
				err = fmt.Errorf("unexpected %s from the server", t)
			}
		}
		p.mu.Lock()
		p.readErr = err
		p.mu.Unlock()
	}()
}

func (p *rawPeer) apply(u wire.Update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, had := p.table[u.Route]
	switch {
	case u.Action == wire.ActionAdd && !had:
		p.table[u.Route] = struct{}{}
		p.adds++
	case u.Action == wire.ActionRemove && had:
		delete(p.table, u.Route)
		p.removes++
	}
}

// snapshot returns a copy of the received table and the counters.
func (p *rawPeer) snapshot() (table routeSet, adds, removes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	table = make(routeSet, len(p.table))
	for r := range p.table {
		table[r] = struct{}{}
	}
	return table, p.adds, p.removes
}

// eosCount returns the number of END_OF_SYNC markers received for vni.
func (p *rawPeer) eosCount(vni route.VNI) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eos[vni]
}

// err returns the reader's error once the connection ended, else nil.
func (p *rawPeer) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readErr
}

// waitTable waits until the received table is exactly want.
func (p *rawPeer) waitTable(t testing.TB, name string, want routeSet, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, _, _ := p.snapshot()
		if got.equal(want) {
			return time.Since(start)
		}
		if err := p.err(); err != nil {
			t.Fatalf("%s: connection ended: %v (table: %s)", name, err, got.describeDiff(want))
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s did not converge within %v: %s", name, timeout, got.describeDiff(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close closes the connection and waits for the peer's goroutines.
func (p *rawPeer) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.conn.Close()
	p.wg.Wait()
}

// waitClosed waits until the server closes the connection (the reader gets
// an error) and returns that error.
func (p *rawPeer) waitClosed(timeout time.Duration) (error, bool) {
	select {
	case <-p.readDone:
		return p.err(), true
	case <-time.After(timeout):
		return nil, false
	}
}
