package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

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

func TestPrintPeersShowsNamesAndHeldRoutes(t *testing.T) {
	until := time.Date(2026, 12, 5, 14, 30, 7, 0, time.Local)
	var out bytes.Buffer
	err := printPeers(&out, []httpapi.PeerJSON{
		{ID: 1, Remote: "[::1]:40001", Name: "hv-1", Identity: "spiffe://x/hv-1", Direction: "inbound", State: "ESTABLISHED"},
		{ID: 2, Remote: "[::1]:40002", Identity: "CN=hv-2", Direction: "inbound", State: "ESTABLISHED"},
		{ID: 3, Remote: "[::1]:40003", Direction: "inbound", State: "ESTABLISHED"},
		{ID: 4, Remote: "[::1]:40004", Name: "hv-4", Direction: "inbound", State: "STALE", Routes: 12, HeldRoutes: 12, StaleUntil: &until},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], " NAME ") {
		t.Fatalf("want a header with NAME and 4 peers:\n%s", out.String())
	}
	for i, want := range []string{"[::1]:40001  hv-1 ", "[::1]:40002  CN=hv-2 ", "[::1]:40003  - ", "STALE (12 held until 14:30:07)"} {
		if !strings.Contains(lines[i+1], want) {
			t.Errorf("line %d lacks %q: %q", i+1, want, lines[i+1])
		}
	}
}

func TestPrintRoutesShowsHeldUntil(t *testing.T) {
	until := time.Date(2026, 12, 5, 14, 30, 7, 0, time.Local)
	var out bytes.Buffer
	err := printRoutes(&out, []httpapi.RouteJSON{{VNI: 23, Prefix: "10.0.0.0/24",
		NextHop: httpapi.NextHopJSON{Address: "2001:db8::1", Type: "STD"},
		Peers:   []httpapi.PeerRef{{ID: 4, Remote: "[::1]:4711", Name: "srv-1", HeldUntil: &until}}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "srv-1([::1]:4711)(held until 14:30:07)"; !strings.Contains(out.String(), want) {
		t.Errorf("routes table lacks %q:\n%s", want, out.String())
	}
}
