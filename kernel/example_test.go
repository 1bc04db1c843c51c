package kernel_test

import (
	"context"
	"log"
	"log/slog"
	"net/netip"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// The installer a client would use for
// `--install-routes 23#100 --tun overlay-tun --cleanup`. (Not run: it
// needs root and the tunnel device.)
func ExampleNew() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inst, err := kernel.New(kernel.Config{
		Tables: map[route.VNI]int{23: 100},
		Device: "overlay-tun",
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err) // names the missing device, or the missing privilege
	}
	done := make(chan error, 1)
	go func() { done <- inst.Run(ctx) }()

	// What the client does for each received route:
	r := route.Route{
		VNI:     23,
		Prefix:  netip.MustParsePrefix("10.0.23.0/24"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")},
	}
	if err := inst.AddRoute(r); err != nil {
		log.Print(err)
	}

	// At exit:
	cancel()
	<-done
	if err := inst.Cleanup(); err != nil {
		log.Print(err)
	}
	inst.Close()
}

// The client library's installer seam, and its notice of a complete view.
var (
	_ metalbond.Installer    = (*kernel.Installer)(nil)
	_ metalbond.SyncNotifier = (*kernel.Installer)(nil)
)
