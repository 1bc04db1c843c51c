package tlsauth

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/metalbond/metalbond/route"
)

// vniRange is an inclusive range of VNIs.
type vniRange struct{ lo, hi route.VNI }

// vniSet is an immutable set of VNIs: sorted, disjoint, non-adjacent
// ranges. The zero value is empty.
type vniSet struct {
	ranges []vniRange
}

var allVNIs = vniSet{ranges: []vniRange{{0, route.MaxVNI}}}

// contains reports whether v is in s. It does not allocate.
func (s vniSet) contains(v route.VNI) bool {
	r := s.ranges
	// Binary search for the first range that ends at or after v.
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].hi < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(r) && r[lo].lo <= v
}

func (s vniSet) empty() bool { return len(s.ranges) == 0 }

// union returns the set of VNIs in any of sets.
func union(sets ...vniSet) vniSet {
	var all []vniRange
	for _, s := range sets {
		all = append(all, s.ranges...)
	}
	return normalize(all)
}

// normalize sorts rs and merges overlapping and adjacent ranges. It may
// reorder rs in place.
func normalize(rs []vniRange) vniSet {
	if len(rs) == 0 {
		return vniSet{}
	}
	slices.SortFunc(rs, func(a, b vniRange) int { return cmp.Compare(a.lo, b.lo) })
	out := make([]vniRange, 0, len(rs))
	cur := rs[0]
	for _, r := range rs[1:] {
		if uint64(r.lo) <= uint64(cur.hi)+1 {
			cur.hi = max(cur.hi, r.hi)
			continue
		}
		out = append(out, cur)
		cur = r
	}
	return vniSet{ranges: append(out, cur)}
}

// String formats s as the policy file would: "*", or a comma-separated list
// of VNIs and ranges; "none" for the empty set.
func (s vniSet) String() string {
	switch {
	case s.empty():
		return "none"
	case len(s.ranges) == 1 && s.ranges[0] == allVNIs.ranges[0]:
		return "*"
	}
	var b strings.Builder
	for i, r := range s.ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.lo.String())
		if r.hi != r.lo {
			b.WriteByte('-')
			b.WriteString(r.hi.String())
		}
	}
	return b.String()
}

// parseVNIRange parses one element of a VNI list: "*", a VNI such as
// "23", or an inclusive range such as "100-199".
func parseVNIRange(s string) (vniRange, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return allVNIs.ranges[0], nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := parseVNI(lo)
	if err != nil || !isRange {
		return vniRange{a, a}, err
	}
	b, err := parseVNI(hi)
	if err != nil {
		return vniRange{}, err
	}
	if b < a {
		return vniRange{}, fmt.Errorf("range %q: %d is greater than %d", s, a, b)
	}
	return vniRange{a, b}, nil
}

func parseVNI(s string) (route.VNI, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || route.VNI(n) > route.MaxVNI {
		return 0, fmt.Errorf("invalid VNI %q: want a number from 0 to %d, a range like 100-199, or \"*\"", s, route.MaxVNI)
	}
	return route.VNI(n), nil
}
