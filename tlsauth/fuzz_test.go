package tlsauth

import (
	"testing"

	"github.com/metalbond/metalbond/route"
)

// FuzzParsePolicy checks that no authorization file makes the parser
// panic, and that what it accepts is well formed: VNI sets sorted,
// disjoint and within range, every rule with at least one identity.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(examplePolicy))
	f.Add([]byte("rules: []\n"))
	f.Add([]byte("rules:\n  - identities: [cn:x]\n    subscribe: [\"*\", 1-2]\n"))
	f.Add([]byte("rules: [x]\ndefault: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, err := parsePolicy(data)
		if err != nil {
			return
		}
		check := func(what string, s vniSet) {
			for i, r := range s.ranges {
				if r.lo > r.hi || r.hi > route.MaxVNI || i > 0 && uint64(s.ranges[i-1].hi)+1 >= uint64(r.lo) {
					t.Fatalf("%s: malformed set %v", what, s.ranges)
				}
			}
		}
		for _, r := range pol.rules {
			if len(r.patterns) == 0 {
				t.Fatalf("rule without identities: %+v", r)
			}
			check(r.name, r.announce)
			check(r.name, r.subscribe)
		}
		check("default", pol.dflt.announce)
		check("default", pol.dflt.subscribe)
		check("unauthenticated", pol.unauth.announce)
		check("unauthenticated", pol.unauth.subscribe)
	})
}
