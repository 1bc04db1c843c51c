// Package debversion turns git's description of a commit into a Debian
// package version, and Go architecture names into Debian's.
package debversion

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

var (
	// describeAfterTag matches `git describe --tags` output for a commit
	// after a tag: TAG-COUNT-gHASH.
	describeAfterTag = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]{4,40})$`)
	// describeHashOnly matches `git describe --always` output when no tag
	// is reachable: the abbreviated commit hash alone.
	describeHashOnly = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
	// upstream is what Debian policy allows for an upstream version
	// without a Debian revision (so no hyphen).
	upstream = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
)

// FromDescribe turns the output of `git describe --tags --always --dirty`
// into a Debian package version that sorts the way the commits were made:
//
//	v1.2.0                   → 1.2.0
//	v1.2.0-rc.1              → 1.2.0~rc.1           (before 1.2.0)
//	v1.2.0-5-gabc1234        → 1.2.0+git5.gabc1234  (after 1.2.0)
//	abc1234 (no tag yet)     → 0.0.0~git20261205130618.gabc1234
//	any of them with -dirty  → the same followed by .dirty (or +dirty)
//
// commitTime is the time of the commit described; it orders builds from
// before the first tag.
func FromDescribe(describe string, commitTime time.Time) (string, error) {
	d, dirty := strings.CutSuffix(describe, "-dirty")
	var v string
	switch {
	case describeHashOnly.MatchString(d):
		v = fmt.Sprintf("0.0.0~git%s.g%s", commitTime.UTC().Format("20060102150405"), d)
	case describeAfterTag.MatchString(d):
		m := describeAfterTag.FindStringSubmatch(d)
		tag, err := tagVersion(m[1])
		if err != nil {
			return "", fmt.Errorf("git describe %q: %w", describe, err)
		}
		v = fmt.Sprintf("%s+git%s.g%s", tag, m[2], m[3])
	default:
		tag, err := tagVersion(d)
		if err != nil {
			return "", fmt.Errorf("git describe %q: %w", describe, err)
		}
		v = tag
	}
	if dirty {
		if strings.Contains(v, "+") || strings.Contains(v, "~git") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	if !upstream.MatchString(v) {
		return "", fmt.Errorf("git describe %q gives %q, not a valid Debian version", describe, v)
	}
	return v, nil
}

// tagVersion returns the version a release tag names: "v1.2.0" is 1.2.0
// and a semantic-version pre-release "v1.2.0-rc.1" is 1.2.0~rc.1, which
// Debian sorts before 1.2.0.
func tagVersion(tag string) (string, error) {
	v := strings.TrimPrefix(tag, "v")
	v = strings.Replace(v, "-", "~", 1)
	v = strings.ReplaceAll(v, "-", ".")
	if !upstream.MatchString(v) {
		return "", fmt.Errorf("tag %q is not a version (want vMAJOR.MINOR.PATCH[-PRERELEASE])", tag)
	}
	return v, nil
}

// Arch returns Debian's name for a Go GOARCH.
func Arch(goarch string) (string, error) {
	switch goarch {
	case "amd64", "arm64", "riscv64", "s390x", "mips64le", "ppc64":
		return goarch, nil
	case "386":
		return "i386", nil
	case "arm":
		return "armhf", nil
	case "ppc64le":
		return "ppc64el", nil
	case "loong64":
		return "loong64", nil
	}
	return "", fmt.Errorf("GOARCH %q has no Debian architecture name here", goarch)
}

// Valid reports whether v is a Debian version without a Debian revision.
func Valid(v string) bool { return upstream.MatchString(v) }
