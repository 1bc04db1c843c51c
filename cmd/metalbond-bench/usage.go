package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/metalbond/metalbond/internal/bench"
)

// scenarioHelp says what each scenario of bench.Scenarios does; its
// defaults are added from bench.Defaults, so that they cannot drift.
var scenarioHelp = map[string]string{
	"fanout":  "one announcer adds N routes to a VNI with S subscribers, then removes them. Phases: add (headline), remove; each ends when the last subscriber holds the exact table.",
	"join":    "an announcer loads N routes into a VNI (phase load), then S connected peers subscribe at once (phase join, headline), which ends when the last one holds all N routes.",
	"many":    "C clients in V VNIs each subscribe to their VNI and announce R routes, as a fleet of hypervisors does after a restart (phases connect and announce; headline converge = connect + announce); then half of every VNI's clients die and the others must lose exactly their routes (phase die). With -observers, clients only announce and that many subscribe-only peers per VNI receive.",
	"churn":   "a VNI holds a window of N routes; for -duration an announcer replaces the oldest with new ones at -rate changes per second while S subscribers stay (they sample the delivery delay) and -joiners subscribers come and go. Phases: load, churn (headline).",
	"install": "N routes go into a kernel routing table through the netlink installer, then are removed, in a network namespace created for the run (needs root; with -lib through the server and a client library). Phases: add (headline), remove.",
	"memory":  "C announcers connect to a server without subscribers (phase connect: memory per idle peer), then load N routes in V VNIs (phase load, headline: memory per stored route).",
}

// scenarioDefaults renders the defaults bench.Defaults gives a scenario.
func scenarioDefaults(name string) string {
	d := bench.Defaults(bench.Config{Scenario: name})
	var parts []string
	add := func(flag string, v int) {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("-%s %d", flag, v))
		}
	}
	add("N", d.N)
	add("S", d.S)
	add("C", d.C)
	add("V", d.V)
	add("R", d.R)
	add("rate", d.Rate)
	add("joiners", d.Joiners)
	if name == "churn" {
		parts = append(parts, "-duration "+d.Duration.String())
	}
	return strings.Join(parts, " ")
}

// usage writes the help of metalbond-bench: what it does, each scenario
// with its defaults, how to read the result table, and the flags.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage: metalbond-bench [flags]

metalbond-bench measures a MetalBond route server: it starts one (as a child
process unless -in-process or -server is given), drives it with lean v1 peers
(or library clients with -lib) through the scenarios chosen with -scenario,
checks that every receiver ends with exactly the expected table, and prints
for each phase the time, routes/s, deliveries/s and the CPU time of the
server, of the benchmark and of the rest of the machine.

Scenarios (a flag given overrides the defaults):
`)
	for _, name := range bench.Scenarios {
		fmt.Fprintf(w, "  %-8s %s\n", name, wrap(scenarioHelp[name], 66, 11))
		fmt.Fprintf(w, "           defaults: %s\n", scenarioDefaults(name))
	}
	fmt.Fprintf(w, `
Reading the result table: one row per phase. The row marked with * is the
headline phase, the one a scenario's figure refers to (fanout: add, join:
join, many: converge, churn: churn, install: add, memory: load). "exact" is
yes when every receiver held exactly the expected routes at the end of the
phase (NO: missing, extra or duplicate routes; -: not checked in that
phase). "other CPU" is what the rest of the machine used meanwhile: a
large value means the figures were disturbed. The exit code is 0 when every
run was exact or skipped, 1 otherwise, 2 for bad usage. Every run is bounded
by -timeout (default %s).

Flags:
`, bench.Defaults(bench.Config{}).Timeout)
	fs.PrintDefaults()
}

// wrap breaks s into lines of at most width characters (longer words stay
// whole) and indents every line after the first by indent spaces.
func wrap(s string, width, indent int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		switch {
		case n == 0:
		case n+1+len(word) > width:
			b.WriteString("\n" + strings.Repeat(" ", indent))
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
