// Package kernel installs the routes a MetalBond client receives into Linux
// routing tables, as IP-in-IPv6 encapsulated routes on a tunnel device.
//
// A route for VNI v becomes, in the table mapped to v, a route of its
// prefix towards a nexthop object that encapsulates to the nexthop's
// underlay address on Config.Device:
//
//	ip -6 nexthop add id 1 encap ip6 dst 2001:db8::1 dev overlay-tun proto 254
//	ip route add 10.0.23.0/24 nhid 1 table 100 proto 254
//
// Several nexthops for one prefix become a nexthop group, so the route is
// one multipath route whose members are sorted by route.NextHop.Compare.
// The same form serves IPv4 and IPv6 prefixes; docs/kernel.md explains why.
//
// An Installer holds the desired state (AddRoute and RemoveRoute only
// record changes and never wait for the kernel); Run applies changes in
// pipelined netlink batches, retries what the kernel refuses with
// exponential backoff, and reconciles the tables with the desired state
// periodically and whenever the device changes state. Everything of ours
// carries Config.Protocol, so Cleanup can remove all of it at exit.
//
// Several installers (in one process or several) can share a network
// namespace and a device, each with tables of its own: New claims the
// mapped tables and fails with ErrTableInUse if another installer holds
// one, and an installer touches only the routes in its tables and the
// nexthop objects it can tell are its own (docs/kernel.md, "Several
// installers on one host").
//
// A restart does not withdraw routes: New adopts the routes of ours it
// finds (Config.AdoptGrace), re-adding one with the same nexthops changes
// nothing in the kernel, and what the client does not confirm is removed
// when it reports a complete view (Synced, metalbond.SyncNotifier) or when
// the grace time ends.
//
// Typical use, with the client library's Installer seam:
//
//	inst, err := kernel.New(kernel.Config{
//		Tables: map[route.VNI]int{23: 100},
//		Device: "overlay-tun",
//	})
//	if err != nil {
//		return err
//	}
//	defer inst.Close()
//	go inst.Run(ctx)
//	// hand inst to the client as its Installer (the client calls
//	// AddRoute, RemoveRoute and Synced); at exit, optionally:
//	// inst.Cleanup()
//
// The package works only on Linux; elsewhere New returns ErrNotSupported.
package kernel
