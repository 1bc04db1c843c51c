package deploy

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

var update = flag.Bool("update", false, "rewrite prometheusrule.yaml from metalbond.rules.yaml")

var (
	monitoringDir  = filepath.Join(manifestsDir, "components", "monitoring")
	rulesFile      = filepath.Join(monitoringDir, "metalbond.rules.yaml")
	promRuleFile   = filepath.Join(monitoringDir, "prometheusrule.yaml")
	promRuleHeader = `# Generated from metalbond.rules.yaml by ` + "`go test ./... -update`" + ` in deploy/:
# edit that file, not this one.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: metalbond
  labels:
    app.kubernetes.io/name: metalbond
spec:
`
)

// promRuleYAML returns the PrometheusRule whose spec is the rules file:
// the file's groups, indented under spec, comments and order kept.
func promRuleYAML(rules []byte) []byte {
	var b bytes.Buffer
	b.WriteString(promRuleHeader)
	for _, line := range strings.SplitAfter(string(rules), "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue // the rules file's own header
		}
		if line != "\n" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestPrometheusRuleIsRulesFile checks that the PrometheusRule that the
// monitoring component deploys holds exactly the groups of
// metalbond.rules.yaml, the file promtool checks and tests. The rules file
// decodes strictly as the operator's PrometheusRuleSpec, so it uses no
// field the operator would drop.
func TestPrometheusRuleIsRulesFile(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(promRuleFile, promRuleYAML(rules), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := strictYAML(rules, &want); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(want.Groups) == 0 || len(want.Groups[0].Rules) == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
	got := find[monitoringv1.PrometheusRule](t, renderDir(t, filepath.Join(manifestsDir, "overlays", "monitoring")), "metalbond")
	if !reflect.DeepEqual(got.Spec, want) {
		t.Fatalf("%s differs from %s: run `go test ./... -update` in deploy/", promRuleFile, rulesFile)
	}
	// The file is what -update writes, byte for byte.
	have, err := os.ReadFile(promRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, promRuleYAML(rules)) {
		t.Fatalf("%s was edited by hand: run `go test ./... -update` in deploy/", promRuleFile)
	}
}

// metricNames returns the names of the samples of a Prometheus text
// exposition.
func metricNames(body []byte) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

var metricRE = regexp.MustCompile(`\bmetalbond_[a-z0-9_]+`)

// checkAlertMetrics checks that every metric with one of these prefixes
// that an alert expression of the rules file uses is in exported (a prefix
// matches names the earlier prefixes did not take, so "metalbond_" after
// "metalbond_cluster_" means the rest).
func checkAlertMetrics(t *testing.T, exported map[string]bool, prefixes ...string) {
	t.Helper()
	var spec monitoringv1.PrometheusRuleSpec
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictYAML(b, &spec); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			for _, name := range metricRE.FindAllString(r.Expr.String(), -1) {
				if !ownedBy(name, prefixes) {
					continue
				}
				checked++
				if !exported[name] {
					t.Errorf("alert %s uses %s, which /metrics does not export", r.Alert, name)
				}
			}
		}
	}
	if checked == 0 {
		t.Errorf("no alert uses a metric with the prefixes %q", prefixes)
	}
}

// ownedBy reports whether name has one of prefixes and none of the client,
// kernel or cluster prefixes that prefixes leave out.
func ownedBy(name string, prefixes []string) bool {
	for _, p := range []string{"metalbond_client_", "metalbond_kernel_", "metalbond_cluster_"} {
		if strings.HasPrefix(name, p) {
			return slices.Contains(prefixes, p)
		}
	}
	return slices.Contains(prefixes, "metalbond_")
}
