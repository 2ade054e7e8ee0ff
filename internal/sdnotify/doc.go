// Package sdnotify implements the client side of the systemd service
// notification protocol described in sd_notify(3), without linking
// libsystemd and without any dependency beyond the standard library.
//
// # The protocol
//
// When systemd starts a unit with Type=notify (or Type=notify-reload), or
// with WatchdogSec= set, it passes the service the address of a Unix
// datagram socket in the NOTIFY_SOCKET environment variable. The service
// reports its state by sending single datagrams to that socket. Each
// datagram is a newline-separated list of VARIABLE=VALUE assignments, for
// example "READY=1" once start-up is complete, "STOPPING=1" when shutdown
// begins, "STATUS=..." for a free-form line shown by systemctl status, and
// "WATCHDOG=1" as a keep-alive ping.
//
// NOTIFY_SOCKET is either an absolute file-system path or, when it begins
// with '@', a name in the Linux abstract socket namespace; the '@' stands
// for the leading NUL byte of the abstract address. The net package
// performs that substitution itself for unix addresses beginning with '@',
// so both forms are dialled the same way here. Other address families that
// newer systemd versions understand (such as "vsock:") are rejected by
// [FromEnv] with an error.
//
// # Usage
//
// A service calls [FromEnv] once at start-up. When the process was not
// started by systemd (NOTIFY_SOCKET unset) FromEnv returns a nil
// *[Notifier] and a nil error; every method on a nil Notifier is a no-op
// returning nil, so callers need no special case:
//
//	n, err := sdnotify.FromEnv()
//	if err != nil {
//		return err
//	}
//	// ... initialise ...
//	_ = n.Ready()
//	defer n.Stopping()
//
// Each notification dials a fresh connection to the socket, writes one
// datagram and closes it, exactly as sd_notify(3) does. A Notifier holds no
// open file descriptors, needs no Close, and is safe for concurrent use.
//
// # Watchdog
//
// With WatchdogSec= set, systemd exports WATCHDOG_USEC (the timeout in
// microseconds) and WATCHDOG_PID (the process expected to ping) and
// restarts or kills the service if no "WATCHDOG=1" arrives within the
// timeout. [WatchdogInterval] validates those variables and returns half
// the timeout, the ping interval systemd recommends. [Notifier.RunWatchdog]
// sends the pings on a [time.Ticker] until its context ends, and consults a
// health check before each one: while the check fails the ping is skipped,
// so a wedged service is restarted by systemd rather than kept alive by a
// goroutine that is merely still scheduled.
package sdnotify
