package tlsauth

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// identityKind is where in a certificate an identity comes from.
type identityKind uint8

const (
	kindURI identityKind = iota // URI subject alternative name, e.g. spiffe://…
	kindDNS                     // DNS subject alternative name
	kindCN                      // subject common name
)

var kindNames = [...]string{kindURI: "uri", kindDNS: "dns", kindCN: "cn"}

func (k identityKind) String() string { return kindNames[k] }

// identity is one name a certificate proves, such as
// {kindDNS, "hv1.example.net"}.
type identity struct {
	kind  identityKind
	value string
}

func (id identity) String() string { return id.kind.String() + ":" + id.value }

// identitiesOf returns the names the verified leaf certificate cert proves:
// its URI SANs, then its DNS SANs, then its subject common name. DNS names
// are lower-cased and lose a trailing dot.
func identitiesOf(cert *x509.Certificate) []identity {
	ids := make([]identity, 0, len(cert.URIs)+len(cert.DNSNames)+1)
	for _, u := range cert.URIs {
		ids = append(ids, identity{kindURI, u.String()})
	}
	for _, d := range cert.DNSNames {
		ids = append(ids, identity{kindDNS, normalizeDNS(d)})
	}
	if cert.Subject.CommonName != "" {
		ids = append(ids, identity{kindCN, cert.Subject.CommonName})
	}
	return ids
}

func normalizeDNS(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

// pattern matches identities of one kind: exactly, or, with one "*", every
// value that starts with the text before the star and ends with the text
// after it, the star standing for at least one character.
type pattern struct {
	kind           identityKind
	prefix, suffix string // the whole value if !wildcard
	wildcard       bool
}

// parsePattern parses "KIND:VALUE" where KIND is uri, dns or cn.
func parsePattern(s string) (pattern, error) {
	k, v, ok := strings.Cut(s, ":")
	if !ok || v == "" {
		return pattern{}, fmt.Errorf("identity %q: want KIND:VALUE with KIND uri, dns or cn, e.g. dns:hv1.example.net", s)
	}
	var p pattern
	switch strings.ToLower(k) {
	case "uri":
		p.kind = kindURI
	case "dns":
		p.kind = kindDNS
		v = normalizeDNS(v)
	case "cn":
		p.kind = kindCN
	default:
		return pattern{}, fmt.Errorf("identity %q: unknown kind %q: want uri, dns or cn", s, k)
	}
	switch strings.Count(v, "*") {
	case 0:
		p.prefix = v
	case 1:
		p.wildcard = true
		p.prefix, p.suffix, _ = strings.Cut(v, "*")
	default:
		return pattern{}, fmt.Errorf("identity %q: at most one * is allowed", s)
	}
	return p, nil
}

func (p pattern) match(id identity) bool {
	if id.kind != p.kind {
		return false
	}
	if !p.wildcard {
		return id.value == p.prefix
	}
	return len(id.value) > len(p.prefix)+len(p.suffix) &&
		strings.HasPrefix(id.value, p.prefix) && strings.HasSuffix(id.value, p.suffix)
}

func (p pattern) String() string {
	if !p.wildcard {
		return p.kind.String() + ":" + p.prefix
	}
	return p.kind.String() + ":" + p.prefix + "*" + p.suffix
}
