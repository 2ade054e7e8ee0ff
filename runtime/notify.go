package runtime

import (
	"context"
	"strings"

	"github.com/bgworker/bgworker/internal/sdnotify"
	"github.com/bgworker/bgworker/phases"
)

// startNotify speaks systemd's notify protocol when the host runs under
// systemd with Type=notify (NOTIFY_SOCKET set): READY=1 once
// RecoveryFinished is entered, STOPPING=1 when a shutdown begins, and
// WATCHDOG=1 at half of WATCHDOG_USEC while the postmaster answers. Nothing
// happens when NOTIFY_SOCKET is unset. Children never see these variables.
func (rt *Runtime) startNotify() {
	n, err := sdnotify.FromEnv()
	if err != nil {
		rt.log.Warn("runtime: NOTIFY_SOCKET ignored", "err", err)
		return
	}
	if n == nil {
		return
	}
	unsub := rt.Subscribe(func(e Event) {
		switch e := e.(type) {
		case PhaseEvent:
			if e.Phase == phases.RecoveryFinished && !e.Reset {
				_ = n.Ready()
			}
		case ShutdownEvent:
			if !e.Done {
				_ = n.Stopping()
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	rt.notifyStop = func() { cancel(); unsub() }
	if every, ok := sdnotify.WatchdogInterval(); ok {
		rt.wg.Go("systemd watchdog", func() {
			n.RunWatchdog(ctx, every, func() bool {
				// Healthy while the postmaster answers within the interval.
				qctx, qcancel := context.WithTimeout(ctx, every)
				defer qcancel()
				return rt.pingPostmaster(qctx) == nil
			})
		})
	}
}

// notifyEnv reports whether an environment entry belongs to systemd's notify
// protocol, which is the host's alone.
func notifyEnv(kv string) bool {
	return strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_USEC=") || strings.HasPrefix(kv, "WATCHDOG_PID=")
}
