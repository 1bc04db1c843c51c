package metalbond

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// unnamedClients counts the Clients this program created without a Name.
var unnamedClients atomic.Uint64

// defaultName returns the name of a Client without ClientConfig.Name.
//
// The server recognises a returning client by its name (and address), and
// releases the routes its earlier session left when it has re-announced:
// two different clients on one host must therefore not share a name, and a
// restarted client must get its old one. The host name alone does the
// second but not the first (two `metalbond client` commands on one host).
// What tells two clients on a host apart, and stays the same when one is
// restarted (also by systemd, or after an upgrade of the binary in place),
// is how they were started: the command line. The servers and the number of
// unnamed Clients this program created before tell apart several clients
// in one program. So the name is "host/digest", the digest being the first
// 8 bytes of SHA-256 over those, in hex.
func defaultName(servers []string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	servers = slices.Clone(servers)
	slices.Sort(servers)
	n := unnamedClients.Add(1)
	parts := append(slices.Clone(os.Args), "\x00servers", strings.Join(servers, ","), "\x00client", strconv.FormatUint(n, 10))
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	if len(host) > 200 {
		host = host[:200]
	}
	return host + "/" + hex.EncodeToString(sum[:8])
}
