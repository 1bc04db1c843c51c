package metalbond

import "github.com/metalbond/metalbond/route"

// Installer is told about the routes a Client learns from its servers. It is
// the seam between the protocol and the kernel (see package kernel) or any
// other consumer.
//
// The Client calls an Installer from a single goroutine, never concurrently,
// and in the order the changes happened. AddRoute is called once per route
// (VNI, prefix, nexthop), however many servers sent it; RemoveRoute once,
// when the last server has withdrawn it. The one exception is
// Client.Replay, which asks for AddRoute again for routes already given.
// The Client holds none of its locks during these calls: an Installer may
// call the Client's methods, but must not wait for Run to return (Run waits
// for the Installer's current call). Implementations must not block for
// long: a slow installer delays every later change. An error is logged and
// counted by the Client; an installer that can retry (as the kernel installer
// does) should do so itself and return nil.
type Installer interface {
	AddRoute(r route.Route) error
	RemoveRoute(r route.Route) error
}

// NopInstaller discards every change. It is the default Installer.
type NopInstaller struct{}

// AddRoute does nothing.
func (NopInstaller) AddRoute(route.Route) error { return nil }

// RemoveRoute does nothing.
func (NopInstaller) RemoveRoute(route.Route) error { return nil }

// SyncNotifier is an optional interface of an Installer. The Client calls
// Synced once, after the AddRoute calls of the routes it has learned, when a
// server has sent it the complete table of every subscribed VNI for the
// first time (END_OF_SYNC, a protocol extension). An installer that kept
// what it found installed from before a restart may then remove what was
// not confirmed. With plain v1 servers it is never called: such an
// installer needs a timeout of its own.
type SyncNotifier interface {
	Synced()
}

// StopNotifier is an optional interface of an Installer: a shutdown hook.
// The Client calls Stopped once, when Run's context is done, from the
// goroutine that calls the Installer and after its last AddRoute or
// RemoveRoute call: none follows. Run returns only after Stopped has. An
// installer may release what it holds there, or remove the routes it
// installed. A returned error is logged.
type StopNotifier interface {
	Stopped() error
}
