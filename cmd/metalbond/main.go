// Command metalbond runs a MetalBond route server or client, and queries a
// running one over its HTTP API.
//
//	metalbond server --listen [::]:4711 --http [::1]:4712
//	metalbond client --server [::1]:4711 --subscribe 23 \
//	    --announce 23#10.0.23.0/24#2001:db8::1 --install-routes 23#100 --tun overlay-tun
//	metalbond peers --http [::1]:4712
//	metalbond routes --vni 23 --http [::1]:4712
//
// Run "metalbond help" or "metalbond COMMAND --help" for every flag. The
// command exits with status 0 after a clean shutdown (SIGINT or SIGTERM; a
// client withdraws its routes, and SIGUSR1 stops it for a restart instead),
// 1 after a runtime failure (for example an address already in use) and 2
// for a malformed command line or configuration file.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr, defaultRunners)
	stop()
	os.Exit(code)
}
