package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
)

// Machine describes where a run took place.
type Machine struct {
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	// Load is the 1-minute load average when the run started.
	Load string `json:"load"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.Load, _, _ = strings.Cut(string(b), " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// Format writes a human-readable report of r.
func Format(w io.Writer, r *Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s  %s\n", r.Scenario, r.Params)
	if r.Server.Mode != "" {
		fmt.Fprintf(&b, "server   %s %s", r.Server.Mode, r.Server.Addr)
		if r.Server.PID != 0 {
			fmt.Fprintf(&b, " pid %d", r.Server.PID)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "machine  %d CPUs, %s, Linux %s, %s, load average %s\n", r.Machine.CPUs, r.Machine.CPU, r.Machine.Kernel, r.Machine.Go, r.Machine.Load)
	if r.Skipped != "" {
		fmt.Fprintf(&b, "SKIPPED  %s\n", r.Skipped)
		_, err := io.WriteString(w, b.String())
		return err
	}
	if len(r.Phases) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "phase\ttime\troutes\troutes/s\tdeliveries\tdeliveries/s\tserver CPU\tbench CPU\tother CPU\texact\t")
		for _, p := range r.Phases {
			exact := "-"
			if p.Exactness != nil {
				exact = "yes"
				if !p.Exactness.Exact() {
					exact = "NO"
				}
			}
			name := p.Name
			if name == r.Headline {
				name = "*" + name
			}
			fmt.Fprintf(tw, "%s\t%.3fs\t%d\t%s\t%d\t%s\t%.3fs\t%.3fs\t%.2fs\t%s\t\n", name, p.Seconds, p.Routes, si(p.RoutesPerSec),
				p.Deliveries, si(p.DeliveriesPerSec), p.ServerCPUSeconds, p.LoadCPUSeconds, p.OtherCPUSeconds, exact)
		}
		tw.Flush()
	}
	if r.ServerPeakRSS > 0 {
		fmt.Fprintf(&b, "server peak RSS %s, CPU %.3fs over the phases\n", bytesSI(r.ServerPeakRSS), r.ServerCPUSeconds)
	}
	if len(r.Metrics) > 0 {
		keys := make([]string, 0, len(r.Metrics))
		for k := range r.Metrics {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s\n", k, trimFloat(r.Metrics[k]))
		}
	}
	x := r.Exactness
	verdict := "EXACT"
	if !x.Exact() {
		verdict = "NOT EXACT"
	}
	fmt.Fprintf(&b, "%s: %d receiver checks, missing %d, extra %d, duplicate %d, failed %d\n",
		verdict, x.Receivers, x.Missing, x.Extra, x.Duplicate, x.Failed)
	for _, s := range x.Errors {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "ERROR: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (p Params) String() string {
	var parts []string
	add := func(k string, v int) {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	add("N", p.N)
	add("S", p.S)
	add("C", p.C)
	add("V", p.V)
	add("R", p.R)
	add("observers", p.Observers)
	add("rate", p.Rate)
	if p.Duration > 0 {
		parts = append(parts, fmt.Sprintf("duration=%gs", p.Duration))
	}
	add("joiners", p.Joiners)
	if p.Lib {
		parts = append(parts, "lib")
	}
	if p.Ext {
		parts = append(parts, "ext")
	}
	if p.NoPaceV1 {
		parts = append(parts, "no-pace-v1")
	}
	return strings.Join(parts, " ")
}

// si formats a rate with a metric suffix.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func bytesSI(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

func trimFloat(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.3f", v)
}
