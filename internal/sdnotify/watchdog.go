package sdnotify

import (
	"context"
	"math"
	"os"
	"strconv"
	"time"
)

// Environment variables through which systemd configures the watchdog.
const (
	// EnvWatchdogUsec holds the watchdog timeout in microseconds.
	EnvWatchdogUsec = "WATCHDOG_USEC"
	// EnvWatchdogPID holds the PID of the process expected to send
	// watchdog pings; when unset, any process may.
	EnvWatchdogPID = "WATCHDOG_PID"
)

// WatchdogInterval reports whether systemd expects watchdog pings from this
// process and, if so, the interval at which to send them: half of the
// WATCHDOG_USEC timeout, as sd_watchdog_enabled(3) recommends.
//
// It returns false if WATCHDOG_USEC is unset, not a positive integer, or too
// large to represent as a [time.Duration], or if WATCHDOG_PID is set to
// anything other than the PID of the current process.
func WatchdogInterval() (time.Duration, bool) {
	s, ok := os.LookupEnv(EnvWatchdogUsec)
	if !ok {
		return 0, false
	}
	usec, err := strconv.ParseUint(s, 10, 64)
	if err != nil || usec == 0 || usec > math.MaxInt64/uint64(time.Microsecond) {
		return 0, false
	}
	if p, ok := os.LookupEnv(EnvWatchdogPID); ok {
		pid, err := strconv.Atoi(p)
		if err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}

// RunWatchdog sends "WATCHDOG=1" every interval until ctx is done, then
// returns. Before each ping it calls healthy, if non-nil, and skips the
// ping when healthy returns false, so that systemd's watchdog fires and
// restarts a service that has stopped making progress. The first ping is
// sent one interval after the call.
//
// Send errors are ignored: a lost ping is indistinguishable, for systemd,
// from a skipped one, and the next tick tries again. RunWatchdog returns
// immediately if n is nil or interval is not positive. Typical use:
//
//	if d, ok := sdnotify.WatchdogInterval(); ok {
//		go n.RunWatchdog(ctx, d, healthy)
//	}
func (n *Notifier) RunWatchdog(ctx context.Context, interval time.Duration, healthy func() bool) {
	if n == nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil {
				return
			}
			if healthy != nil && !healthy() {
				continue
			}
			_ = n.Watchdog()
		}
	}
}
