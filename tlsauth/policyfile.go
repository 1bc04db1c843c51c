package tlsauth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// compiledPolicy is one version of an authorization file, checked and
// ready for lookups. It is immutable once built, so that sessions may read
// it without locks while a reload builds its successor.
type compiledPolicy struct {
	gen   uint64 // set by Policy when the policy is installed
	rules []rule
	// dflt applies to authenticated peers that no rule names, unauth to
	// peers without a verified client certificate. Both point back at the
	// policy they belong to.
	dflt, unauth grant
}

// rule grants the identities it matches rights to VNIs.
type rule struct {
	name                string // the file's name, or "rule N"
	patterns            []pattern
	announce, subscribe vniSet
}

// grant is what one peer may do under one policy. It is immutable.
type grant struct {
	pol                 *compiledPolicy
	rules               []string // names of the rules it comes from; nil for default and unauthenticated
	announce, subscribe vniSet
}

func (g *grant) empty() bool { return g.announce.empty() && g.subscribe.empty() }

// grantFor returns what a peer with the identities ids may do.
// Authenticated peers get the union of every rule that names one of their
// identities, or the default rule if none does.
func (p *compiledPolicy) grantFor(ids []identity, authenticated bool) *grant {
	if !authenticated {
		return &p.unauth
	}
	var g *grant
	for i := range p.rules {
		r := &p.rules[i]
		if !r.matches(ids) {
			continue
		}
		if g == nil {
			g = &grant{pol: p, announce: r.announce, subscribe: r.subscribe}
		} else {
			g.announce = union(g.announce, r.announce)
			g.subscribe = union(g.subscribe, r.subscribe)
		}
		g.rules = append(g.rules, r.name)
	}
	if g == nil {
		return &p.dflt
	}
	return g
}

func (r *rule) matches(ids []identity) bool {
	for _, p := range r.patterns {
		for _, id := range ids {
			if p.match(id) {
				return true
			}
		}
	}
	return false
}

// Keys of the authorization file.
var (
	topKeys   = []string{"rules", "default", "unauthenticated"}
	ruleKeys  = []string{"name", "identities", "announce", "subscribe"}
	grantKeys = []string{"announce", "subscribe"}
)

// parsePolicy checks and compiles an authorization file. It reports every
// problem it finds, each with its line.
func parsePolicy(data []byte) (*compiledPolicy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if strings.Contains(err.Error(), "did not find expected alphabetic or numeric character") {
			// What the YAML parser says about an unquoted * (an alias
			// without a name), the likeliest mistake in this file.
			return nil, fmt.Errorf("%w (write \"*\" in quotes: a bare * starts a YAML alias)", err)
		}
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		// An empty file is more likely a file caught half-written than a
		// wish to deny everyone.
		return nil, errors.New("empty authorization file: to deny every peer, give an empty rules list")
	}
	var pp policyParser
	pol := &compiledPolicy{}
	pol.dflt.pol, pol.unauth.pol = pol, pol
	root := doc.Content[0]
	keys := pp.mapping(root, "the authorization file", topKeys)
	if n := keys["rules"]; n != nil {
		if n.Kind != yaml.SequenceNode {
			pp.errorf(n, "rules: want a list of rules")
		}
		for i, rn := range n.Content {
			if r, ok := pp.rule(rn, i+1); ok {
				pol.rules = append(pol.rules, r)
			}
		}
	} else if root.Kind == yaml.MappingNode {
		pp.errorf(root, "missing key \"rules\" (give an empty list to use only the default rule)")
	}
	if n := keys["default"]; n != nil {
		pol.dflt.announce, pol.dflt.subscribe = pp.grant(n, "default")
	}
	if n := keys["unauthenticated"]; n != nil {
		pol.unauth.announce, pol.unauth.subscribe = pp.grant(n, "unauthenticated")
	}
	if len(pp.errs) > 0 {
		return nil, errors.Join(pp.errs...)
	}
	return pol, nil
}

// policyParser collects the errors of one authorization file.
type policyParser struct {
	errs []error
}

func (pp *policyParser) errorf(n *yaml.Node, format string, args ...any) {
	pp.errs = append(pp.errs, fmt.Errorf("line %d: "+format, append([]any{n.Line}, args...)...))
}

// mapping returns the values of mapping node n by key, and reports keys
// that are not in allowed, naming each of them. what names n in errors.
func (pp *policyParser) mapping(n *yaml.Node, what string, allowed []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		pp.errorf(n, "%s: want a mapping with keys %s", what, strings.Join(allowed, ", "))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || !slices.Contains(allowed, k.Value) {
			pp.errorf(k, "%s: unknown key %q (want %s)", what, k.Value, strings.Join(allowed, ", "))
			continue
		}
		if prev, dup := lines[k.Value]; dup {
			pp.errorf(k, "%s: key %q repeats line %d", what, k.Value, prev)
			continue
		}
		out[k.Value], lines[k.Value] = v, k.Line
	}
	return out
}

// rule parses the i-th element of the rules list.
func (pp *policyParser) rule(n *yaml.Node, i int) (rule, bool) {
	nerr := len(pp.errs)
	r := rule{name: fmt.Sprintf("rule %d", i)}
	// Find the name first, to use it in every error about the rule.
	for j := 0; n.Kind == yaml.MappingNode && j+1 < len(n.Content); j += 2 {
		if k, v := n.Content[j], n.Content[j+1]; k.Value == "name" {
			if v.Kind != yaml.ScalarNode || v.Value == "" || v.Tag == "!!null" {
				pp.errorf(v, "%s: name: want a non-empty string", r.name)
			} else {
				r.name = v.Value
			}
			break
		}
	}
	keys := pp.mapping(n, r.name, ruleKeys)
	ids := keys["identities"]
	for _, s := range pp.scalars(ids, r.name+": identities") {
		p, err := parsePattern(s.Value)
		if err != nil {
			pp.errorf(s, "%s: %v", r.name, err)
			continue
		}
		r.patterns = append(r.patterns, p)
	}
	switch {
	case ids == nil && n.Kind == yaml.MappingNode:
		pp.errorf(n, "%s: missing key \"identities\"", r.name)
	case ids != nil && len(r.patterns) == 0 && len(pp.errs) == nerr:
		pp.errorf(ids, "%s: identities: want at least one identity", r.name)
	}
	r.announce = pp.vnis(keys["announce"], r.name+": announce")
	r.subscribe = pp.vnis(keys["subscribe"], r.name+": subscribe")
	return r, len(pp.errs) == nerr
}

// grant parses the default or unauthenticated rule.
func (pp *policyParser) grant(n *yaml.Node, what string) (announce, subscribe vniSet) {
	keys := pp.mapping(n, what, grantKeys)
	return pp.vnis(keys["announce"], what+": announce"), pp.vnis(keys["subscribe"], what+": subscribe")
}

// vnis parses a VNI list: a sequence (or a single value) of VNIs, ranges
// such as 100-199, and "*".
func (pp *policyParser) vnis(n *yaml.Node, what string) vniSet {
	var rs []vniRange
	for _, s := range pp.scalars(n, what) {
		r, err := parseVNIRange(s.Value)
		if err != nil {
			pp.errorf(s, "%s: %v", what, err)
			continue
		}
		rs = append(rs, r)
	}
	return normalize(rs)
}

// scalars returns the elements of a list of plain values; a single value
// counts as a list of one, and null (or a missing key, n == nil) as none.
func (pp *policyParser) scalars(n *yaml.Node, what string) []*yaml.Node {
	switch {
	case n == nil || n.Tag == "!!null":
		return nil
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}
	case n.Kind == yaml.AliasNode:
		pp.errorf(n, "%s: unexpected alias (write \"*\" in quotes: a bare * starts a YAML alias)", what)
		return nil
	case n.Kind != yaml.SequenceNode:
		pp.errorf(n, "%s: want a list of values", what)
		return nil
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for _, e := range n.Content {
		switch {
		case e.Kind == yaml.AliasNode:
			pp.errorf(e, "%s: unexpected alias (write \"*\" in quotes: a bare * starts a YAML alias)", what)
		case e.Kind != yaml.ScalarNode || e.Tag == "!!null":
			pp.errorf(e, "%s: want a list of plain values", what)
		default:
			out = append(out, e)
		}
	}
	return out
}
