//go:build !linux

package kernel

import (
	"context"

	"github.com/metalbond/metalbond/route"
)

// Installer installs routes into Linux routing tables. On this system it
// cannot be created: New returns ErrNotSupported.
type Installer struct{}

// New returns ErrNotSupported: route installation needs Linux.
func New(Config) (*Installer, error) { return nil, ErrNotSupported }

// AddRoute returns ErrNotSupported.
func (*Installer) AddRoute(route.Route) error { return ErrNotSupported }

// RemoveRoute returns ErrNotSupported.
func (*Installer) RemoveRoute(route.Route) error { return ErrNotSupported }

// Run returns ErrNotSupported.
func (*Installer) Run(context.Context) error { return ErrNotSupported }

// Synced does nothing.
func (*Installer) Synced() {}

// Flush returns ErrNotSupported.
func (*Installer) Flush(context.Context) error { return ErrNotSupported }

// Cleanup returns ErrNotSupported.
func (*Installer) Cleanup() error { return ErrNotSupported }

// Stats returns zero Stats.
func (*Installer) Stats() Stats { return Stats{} }

// Close returns nil.
func (*Installer) Close() error { return nil }
