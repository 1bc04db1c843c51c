package deploy

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
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
