//go:build unix

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/metalbond/metalbond"
)

// stopForRestartOnSIGUSR1 makes SIGUSR1 stop c for a restart (routes kept
// on the servers for the graceful restart time) until ctx is done or the
// returned function is called.
func stopForRestartOnSIGUSR1(ctx context.Context, c *metalbond.Client, log *slog.Logger) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ch:
			log.Info("SIGUSR1: stopping for a restart, routes kept for the graceful restart time")
			c.StopForRestart(ctx)
		case <-ctx.Done():
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}
