package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/internal/httpapi"
)

func TestPrintPeersMarksPacedPeers(t *testing.T) {
	var out bytes.Buffer
	err := printPeers(&out, []httpapi.PeerJSON{
		{ID: 1, Remote: "[::1]:40001", Direction: "inbound", State: "ESTABLISHED"},
		{ID: 2, Remote: "[::1]:40002", Direction: "inbound", State: "ESTABLISHED", Paced: true, BacklogBytes: 40000},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want a header and 2 peers:\n%s", len(lines), out.String())
	}
	if strings.Contains(lines[1], "paced") {
		t.Errorf("unpaced peer shown as paced: %q", lines[1])
	}
	if !strings.Contains(lines[2], "ESTABLISHED (paced)") {
		t.Errorf("paced peer not marked: %q", lines[2])
	}
}
