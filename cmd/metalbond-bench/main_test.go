package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/internal/bench"
)

// TestHelpDescribesEveryScenario runs -h and checks that it describes every
// scenario Run accepts, with its defaults, and explains the table's '*'.
func TestHelpDescribesEveryScenario(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code, err := run(context.Background(), []string{"-h"}, &stdout, &stderr)
	if code != 0 || err != nil {
		t.Fatalf("-h: exit %d, err %v", code, err)
	}
	help := stderr.String()
	for _, name := range bench.Scenarios {
		// "  NAME     description...\n ... defaults: ..." up to the next entry.
		re := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + ` +(\S.*(?:\n {11}.*)*)`)
		m := re.FindStringSubmatch(help)
		if m == nil {
			t.Errorf("scenario %q is not described in -h:\n%s", name, help)
			continue
		}
		desc := m[1]
		if len(strings.Fields(desc)) < 10 {
			t.Errorf("scenario %q: description too short: %q", name, desc)
		}
		if !strings.Contains(desc, "defaults: -") {
			t.Errorf("scenario %q: no defaults in %q", name, desc)
		}
		if !strings.Contains(desc, "headline") {
			t.Errorf("scenario %q: does not say which phase is the headline: %q", name, desc)
		}
	}
	if len(scenarioHelp) != len(bench.Scenarios) {
		t.Errorf("scenarioHelp has %d entries, bench.Scenarios %d", len(scenarioHelp), len(bench.Scenarios))
	}
	if !strings.Contains(help, "marked with * is the\nheadline phase") {
		t.Errorf("-h does not explain the * of the result table:\n%s", help)
	}
	if !strings.Contains(help, "-scenario string") {
		t.Errorf("-h does not list the flags:\n%s", help)
	}
}

// TestScenarioDefaultsFollowBench checks the rendered defaults against
// bench.Defaults for a value of each kind.
func TestScenarioDefaultsFollowBench(t *testing.T) {
	for _, name := range bench.Scenarios {
		d := bench.Defaults(bench.Config{Scenario: name})
		got := scenarioDefaults(name)
		if d.N != 0 && !strings.Contains(got, "-N ") {
			t.Errorf("%s: defaults %q lack -N (bench.Defaults: %d)", name, got, d.N)
		}
		if got == "" {
			t.Errorf("%s: no defaults rendered", name)
		}
	}
}
