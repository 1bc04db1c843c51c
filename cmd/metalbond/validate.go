package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/metalbond/metalbond"
)

// flagError is a malformed flag value: "invalid --flag "value": reason".
func flagError(flag, value string, reason error) error {
	return fmt.Errorf("invalid --%s %q: %w", flag, value, reason)
}

// checkAddr checks a TCP address of the form host:port. A listening address
// (listen true) may leave the host empty (all addresses) and use port 0 (any
// free port); an address to connect to needs both.
func checkAddr(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err) // drop the repeated address
		}
		if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
			return fmt.Errorf("%w (write IPv6 addresses in brackets, as in [::1]:4711)", err)
		}
		return fmt.Errorf("%w: want HOST:PORT", err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		return fmt.Errorf("invalid port %q: want a number from 1 to 65535", port)
	case n == 0 && !listen:
		return errors.New("port 0: want a number from 1 to 65535")
	}
	switch {
	case host == "":
		if !listen {
			return errors.New("missing host")
		}
	case strings.Contains(host, ":") || strings.Trim(host, "0123456789.") == "":
		// It looks like an IP address, so it must be one.
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("invalid IP address %q", host)
		}
	default:
		if !validHostname(host) {
			return fmt.Errorf("invalid host name %q", host)
		}
	}
	return nil
}

// validHostname reports whether s is a syntactically valid DNS name.
func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parseKeepalive parses a keepalive interval: whole seconds as a plain number
// (the historical form, "5") or a Go duration ("5s", "1m").
func parseKeepalive(s string) (time.Duration, error) {
	d, err := parseSeconds(s)
	if err != nil {
		return 0, err
	}
	switch {
	case d < time.Second:
		return 0, errors.New("must be at least 1 second")
	case d%time.Second != 0:
		return 0, errors.New("must be whole seconds")
	case d > metalbond.MaxKeepalive:
		return 0, fmt.Errorf("must be at most %d seconds", metalbond.MaxKeepalive/time.Second)
	}
	return d, nil
}

// parseSeconds parses a plain number of seconds or a Go duration.
func parseSeconds(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("want a number of seconds (5) or a duration (5s, 1m30s)")
	}
	return d, nil
}
