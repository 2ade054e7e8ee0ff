package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// EnvSocket is the environment variable through which systemd passes the
// address of the notification socket.
const EnvSocket = "NOTIFY_SOCKET"

// Notifier sends state notifications to the systemd notification socket.
//
// A nil *Notifier is valid: all of its methods do nothing and return nil.
// A Notifier is safe for concurrent use by multiple goroutines.
type Notifier struct {
	addr string

	// send, when non-nil, replaces the socket write; tests use it to
	// observe datagrams inside a testing/synctest bubble, where real
	// socket I/O does not count as durably blocking.
	send func(msg []byte) error
}

// FromEnv returns a Notifier for the socket named by NOTIFY_SOCKET.
//
// If NOTIFY_SOCKET is unset or empty, FromEnv returns a nil Notifier and a
// nil error, so the caller may use the result unconditionally. It returns
// an error if the variable holds something other than an absolute path or
// an abstract socket name beginning with '@'.
func FromEnv() (*Notifier, error) {
	addr := os.Getenv(EnvSocket)
	if addr == "" {
		return nil, nil
	}
	if err := validAddr(addr); err != nil {
		return nil, err
	}
	return New(addr), nil
}

func validAddr(addr string) error {
	switch {
	case addr[0] == '/':
		return nil
	case addr[0] == '@':
		if len(addr) == 1 {
			return errors.New("sdnotify: " + EnvSocket + " names an empty abstract socket")
		}
		return nil
	default:
		return fmt.Errorf("sdnotify: unsupported %s address %q: want an absolute path or @abstract name", EnvSocket, addr)
	}
}

// New returns a Notifier that sends to the Unix datagram socket at
// socketPath. A socketPath beginning with '@' denotes a socket in the
// abstract namespace. New does not validate or contact the socket; errors
// surface on the first send. It exists mainly for tests; services should
// use [FromEnv].
func New(socketPath string) *Notifier {
	return &Notifier{addr: socketPath}
}

// Ready tells systemd that service start-up is finished ("READY=1").
func (n *Notifier) Ready() error { return n.Send("READY=1") }

// Stopping tells systemd that the service is beginning its shutdown
// ("STOPPING=1").
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Watchdog sends one watchdog keep-alive ping ("WATCHDOG=1").
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// Status sends a free-form, single-line status description ("STATUS=s"),
// shown by systemctl status. It returns an error if s contains a newline,
// which would otherwise be read as the start of another assignment.
func (n *Notifier) Status(s string) error {
	if n == nil {
		return nil
	}
	if strings.Contains(s, "\n") {
		return fmt.Errorf("sdnotify: status %q contains a newline", s)
	}
	return n.Send("STATUS=" + s)
}

// Send sends state verbatim as one datagram. The state is one or more
// newline-separated VARIABLE=VALUE assignments as listed in sd_notify(3),
// for example "RELOADING=1\nMONOTONIC_USEC=123". Send returns an error if
// state is empty or the datagram cannot be delivered.
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	if state == "" {
		return errors.New("sdnotify: empty state")
	}
	if n.send != nil {
		return n.send([]byte(state))
	}
	return n.write([]byte(state))
}

func (n *Notifier) write(msg []byte) error {
	// The net package maps a leading '@' to the NUL byte that starts an
	// abstract address on Linux.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: dial %s: %w", n.addr, err)
	}
	_, werr := conn.Write(msg)
	cerr := conn.Close()
	if werr != nil {
		return fmt.Errorf("sdnotify: send %q: %w", msg, werr)
	}
	if cerr != nil {
		return fmt.Errorf("sdnotify: close %s: %w", n.addr, cerr)
	}
	return nil
}
