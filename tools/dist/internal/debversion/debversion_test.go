package debversion

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestFromDescribe(t *testing.T) {
	at := time.Date(2026, 12, 5, 13, 6, 18, 0, time.UTC)
	tests := []struct {
		describe, want string
	}{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-rc.1", "1.2.0~rc.1"},
		{"v1.2.0-rc-1", "1.2.0~rc.1"},
		{"v1.2.0-5-gabc1234", "1.2.0+git5.gabc1234"},
		{"v1.2.0-rc.1-5-gabc1234", "1.2.0~rc.1+git5.gabc1234"},
		{"ffa0c18", "0.0.0~git20261205130618.gffa0c18"},
		{"ffa0c18-dirty", "0.0.0~git20261205130618.gffa0c18.dirty"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"v1.2.0-5-gabc1234-dirty", "1.2.0+git5.gabc1234.dirty"},
	}
	for _, tt := range tests {
		t.Run(tt.describe, func(t *testing.T) {
			got, err := FromDescribe(tt.describe, at)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("FromDescribe(%q) = %q, want %q", tt.describe, got, tt.want)
			}
		})
	}
}

func TestFromDescribeRefusesNonVersionTags(t *testing.T) {
	for _, describe := range []string{"release-1", "vfoo", "v1.2 beta", "", "-dirty"} {
		t.Run(describe, func(t *testing.T) {
			_, err := FromDescribe(describe, time.Unix(0, 0))
			if err == nil {
				t.Fatalf("FromDescribe(%q) succeeded, want an error", describe)
			}
			if describe != "" && !strings.Contains(err.Error(), describe) {
				t.Errorf("error %q does not name %q", err, describe)
			}
		})
	}
}

// TestFromDescribesSort checks with dpkg itself that the versions sort in
// the order the commits were made.
func TestFromDescribesSort(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	at := time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)
	ordered := []struct {
		describe string
		at       time.Time
	}{
		{"aaaa111", at},
		{"0000222", at.Add(time.Second)},
		{"v0.1.0-rc.1", at},
		{"v0.1.0-rc.1-3-gabcd123", at},
		{"v0.1.0", at},
		{"v0.1.0-dirty", at},
		{"v0.1.0-1-gabcd123", at},
		{"v0.1.0-2-g0000123", at},
		{"v0.2.0", at},
	}
	var prev string
	for _, o := range ordered {
		v, err := FromDescribe(o.describe, o.at)
		if err != nil {
			t.Fatal(err)
		}
		if prev != "" {
			if out, err := exec.Command("dpkg", "--compare-versions", prev, "lt", v).CombinedOutput(); err != nil {
				t.Errorf("dpkg: %s is not lower than %s (%v %s)", prev, v, err, out)
			}
		}
		prev = v
	}
}

func TestArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386", "ppc64le": "ppc64el"} {
		if got, err := Arch(goarch); err != nil || got != want {
			t.Errorf("Arch(%q) = %q, %v; want %q", goarch, got, err, want)
		}
	}
	if _, err := Arch("wasm"); err == nil || !strings.Contains(err.Error(), "wasm") {
		t.Errorf("Arch(wasm) error = %v, want one naming wasm", err)
	}
}
