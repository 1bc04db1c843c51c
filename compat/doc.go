// Package compat offers the API of the existing MetalBond Go library
// (v0.5.0) on top of this module's Client and Server, so that a program
// embedding that library migrates by changing two import paths:
//
//	github.com/metalbond/metalbond/compat
//	github.com/metalbond/metalbond/compat/pb
//
// Everything the existing library did is done by metalbond.Client (AddPeer,
// Subscribe, the route methods, the Client callbacks) and metalbond.Server
// (StartServer), so the framing, reconnects with backoff, end-of-sync,
// graceful restart and pacing of this module come along. Calls made before
// a session is up are kept and sent when it is, subscriptions included.
//
// Errors keep the texts that embedders match (case-insensitively, by
// substring): "already subscribed to VNI", "already unsubscribed from VNI",
// "nexthop already exists", "VNI does not exist", "destination does not
// exist" and "nexthop does not exist".
//
// docs/migration.md lists every behaviour that differs from the existing
// library, why, and how to get the old one where a program relies on it.
package compat
