package tlsauth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// Policy is a per-VNI authorization policy read from a YAML file (see the
// package documentation for its format). It implements
// metalbond.Authorizer: set it as ServerConfig.Authorizer.
//
// A Policy can be replaced while sessions run (Reload, Replace): each
// session's Permissions look the current policy up on every call, so an
// existing session obeys a new policy from its next message on. A Policy is
// safe for concurrent use.
type Policy struct {
	path string // empty for a policy made by ParsePolicy

	cur atomic.Pointer[compiledPolicy] // never nil

	mu  sync.Mutex // serialises Replace; guards the following
	gen uint64
}

// LoadPolicy reads the authorization file at path.
func LoadPolicy(path string) (*Policy, error) {
	p := &Policy{path: path}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// ParsePolicy returns the policy described by data, in the format of an
// authorization file. Its Reload fails; use Replace to change it.
func ParsePolicy(data []byte) (*Policy, error) {
	p := &Policy{}
	if err := p.Replace(data); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the policy's file again and, if it is valid, makes it the
// current policy. If it is not, the current policy stays and the error
// says why.
func (p *Policy) Reload() error {
	if p.path == "" {
		return errors.New("authorization policy: not read from a file")
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("authorization policy: %w", err)
	}
	if err := p.Replace(data); err != nil {
		return fmt.Errorf("authorization policy %s: %w", p.path, err)
	}
	return nil
}

// Replace makes data, in the format of an authorization file, the current
// policy if it is valid; otherwise the current policy stays.
func (p *Policy) Replace(data []byte) error {
	pol, err := parsePolicy(data)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	pol.gen = p.gen
	p.cur.Store(pol)
	return nil
}

// Generation counts the policies installed so far: 1 after LoadPolicy or
// ParsePolicy, one more after each successful Reload or Replace.
func (p *Policy) Generation() uint64 { return p.cur.Load().gen }

// String describes the policy for logs.
func (p *Policy) String() string {
	pol := p.cur.Load()
	name := p.path
	if name == "" {
		name = "(parsed)"
	}
	return fmt.Sprintf("authorization policy %s (generation %d, %d rules)", name, pol.gen, len(pol.rules))
}

// Authorize implements metalbond.Authorizer. A TLS peer with a verified
// client certificate is authenticated by the names in it; any other peer
// (plain TCP, or TLS without a client certificate) is unauthenticated. A
// peer that the current policy grants nothing at all is refused, with an
// error that says which identity and why.
func (p *Policy) Authorize(conn net.Conn) (metalbond.Permissions, error) {
	ids, authenticated, err := peerIdentities(conn)
	if err != nil {
		return nil, err
	}
	pp := &peerPermissions{policy: p, ids: ids, authenticated: authenticated}
	if len(ids) > 0 {
		pp.name = ids[0].String()
	}
	if g := pp.grant(); g.empty() {
		return nil, refusal(ids, authenticated, g)
	}
	return pp, nil
}

// refusal explains why a peer gets nothing.
func refusal(ids []identity, authenticated bool, g *grant) error {
	if !authenticated {
		return errors.New("unauthenticated peer (no verified client certificate): the authorization policy grants unauthenticated peers nothing")
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.String()
	}
	who := "certificate without names"
	if len(names) > 0 {
		who = "identity " + strings.Join(names, ", ")
	}
	if len(g.rules) == 0 {
		return fmt.Errorf("%s: no rule of the authorization policy matches and the default rule grants nothing", who)
	}
	return fmt.Errorf("%s: the matching rules (%s) grant nothing", who, strings.Join(g.rules, ", "))
}

// peerIdentities returns the names proved by the verified client
// certificate of conn, if conn is a TLS connection that has one.
func peerIdentities(conn net.Conn) (ids []identity, authenticated bool, err error) {
	tc, ok := conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil, false, nil // plain TCP
	}
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete {
		return nil, false, errors.New("TLS handshake not complete")
	}
	// Only a verified chain proves anything: PeerCertificates alone may be
	// whatever the peer sent if the server did not require verification.
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil, false, nil
	}
	return identitiesOf(cs.VerifiedChains[0][0]), true, nil
}

// peerPermissions are one session's view of a Policy. The grant for the
// current policy generation is cached, so a lookup costs two atomic loads
// and a binary search over the VNI ranges.
type peerPermissions struct {
	policy        *Policy
	ids           []identity
	authenticated bool
	name          string

	cache atomic.Pointer[grant] // grant under cache.Load().pol
}

// grant returns what the peer may do under the current policy.
func (pp *peerPermissions) grant() *grant {
	pol := pp.policy.cur.Load()
	if g := pp.cache.Load(); g != nil && g.pol == pol {
		return g
	}
	g := pol.grantFor(pp.ids, pp.authenticated)
	pp.cache.Store(g)
	return g
}

// Identity implements metalbond.Permissions: the first URI SAN of the
// client certificate, or else its first DNS SAN, or else its subject
// common name, as KIND:VALUE; empty for an unauthenticated peer.
func (pp *peerPermissions) Identity() string { return pp.name }

// MayAnnounce implements metalbond.Permissions.
func (pp *peerPermissions) MayAnnounce(vni route.VNI) bool { return pp.grant().announce.contains(vni) }

// MaySubscribe implements metalbond.Permissions.
func (pp *peerPermissions) MaySubscribe(vni route.VNI) bool {
	return pp.grant().subscribe.contains(vni)
}

// AllowAll returns an Authorizer that lets every peer announce into and
// subscribe to every VNI, as plain v1 does, but names peers by the
// verified client certificate they present (see Policy.Authorize). Use it
// for a TLS listener without an authorization file: the server then
// completes and times the TLS handshake before the v1 handshake, and
// counts failed TLS handshakes as refused sessions.
func AllowAll() metalbond.Authorizer { return allowAll{} }

type allowAll struct{}

func (allowAll) Authorize(conn net.Conn) (metalbond.Permissions, error) {
	ids, _, err := peerIdentities(conn)
	if err != nil {
		return nil, err
	}
	var name string
	if len(ids) > 0 {
		name = ids[0].String()
	}
	return allowAllPermissions(name), nil
}

type allowAllPermissions string

func (p allowAllPermissions) Identity() string          { return string(p) }
func (allowAllPermissions) MayAnnounce(route.VNI) bool  { return true }
func (allowAllPermissions) MaySubscribe(route.VNI) bool { return true }
