package tlsauth

import (
	"context"
	"fmt"
	"log/slog"
)

// Reloader is something that rereads its files and keeps its current state
// if they are not valid: *Credentials and *Policy are Reloaders.
type Reloader interface {
	Reload() error
}

// Watch calls Reload on each of rs every time trigger delivers a value,
// until ctx is done or trigger is closed. It logs each success at Info and
// each failure at Error (the failed Reloader keeps its previous state; the
// others are still reloaded). A command connects it to SIGHUP:
//
//	hup := make(chan os.Signal, 1)
//	signal.Notify(hup, syscall.SIGHUP)
//	defer signal.Stop(hup)
//	go tlsauth.Watch(ctx, hup, log, creds, policy)
//
// A nil log discards.
func Watch[T any](ctx context.Context, trigger <-chan T, log *slog.Logger, rs ...Reloader) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-trigger:
			if !ok {
				return
			}
			reloadAll(log, rs)
		}
	}
}

func reloadAll(log *slog.Logger, rs []Reloader) {
	for _, r := range rs {
		if err := r.Reload(); err != nil {
			log.Error("reload failed, keeping the previous version", "err", err)
			continue
		}
		log.Info("reloaded", "what", describe(r))
	}
}

func describe(r Reloader) string {
	if s, ok := r.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", r)
}
