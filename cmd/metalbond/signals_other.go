//go:build !unix

package main

import (
	"context"
	"log/slog"

	"github.com/metalbond/metalbond"
)

// stopForRestartOnSIGUSR1 does nothing where there is no SIGUSR1.
func stopForRestartOnSIGUSR1(context.Context, *metalbond.Client, *slog.Logger) func() {
	return func() {}
}
