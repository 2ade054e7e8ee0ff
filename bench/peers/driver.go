package peers

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"
)

// MsgSize is the size of every measured Echo argument, as in the bridge
// suite.
const MsgSize = 64

// maxSamples caps the N of one rtt command.
const maxSamples = 1 << 20

// peer is one started plugin: the client and the dispensed Echo.
type peer struct {
	c    *plugin.Client
	echo Echo
}

// Driver holds the open clients of [Drive].
type Driver struct {
	exe   string
	msg   []byte
	peers map[string]*peer
}

// NewDriver returns a driver that starts exe (this module's binary, which
// must call [ServePlugin] first in main) as the plugin.
func NewDriver(exe string) *Driver {
	msg := make([]byte, MsgSize)
	for i := range msg {
		msg[i] = byte(i)
	}
	return &Driver{exe: exe, msg: msg, peers: map[string]*peer{}}
}

// Drive reads commands from r and writes one answer line per command to w
// (see the package doc), until quit or EOF; then it kills every client it
// started. It returns an error only when r or w fails; a command that
// fails is answered with "err".
func (d *Driver) Drive(r io.Reader, w io.Writer) error {
	defer d.Close()
	sc := bufio.NewScanner(r)
	bw := bufio.NewWriter(w)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if line == "quit" {
			d.Close()
			fmt.Fprintln(bw, "ok")
			return bw.Flush()
		}
		ds, err := d.Do(line)
		if err != nil {
			fmt.Fprintf(bw, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			bw.WriteString("ok")
			for _, x := range ds {
				bw.WriteByte(' ')
				bw.WriteString(strconv.FormatInt(int64(x), 10))
			}
			bw.WriteByte('\n')
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Do runs one command line and returns its durations.
func (d *Driver) Do(line string) ([]time.Duration, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return nil, fmt.Errorf("peers: command %q: want start|rtt|kill KIND", line)
	}
	kind := f[1]
	if !slices.Contains(Kinds, kind) {
		return nil, fmt.Errorf("peers: command %q: unknown kind %q (want netrpc or grpc)", line, kind)
	}
	switch {
	case f[0] == "start" && len(f) == 2:
		t, err := d.Start(kind)
		return []time.Duration{t}, err
	case f[0] == "rtt" && len(f) == 4:
		warm, err1 := strconv.Atoi(f[2])
		n, err2 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2); err != nil || warm < 0 || n < 1 || n > maxSamples {
			return nil, fmt.Errorf("peers: command %q: want rtt KIND WARM N with WARM >= 0 and 1 <= N <= %d", line, maxSamples)
		}
		return d.RoundTrips(kind, warm, n)
	case f[0] == "kill" && len(f) == 2:
		t, err := d.Kill(kind)
		return []time.Duration{t}, err
	}
	return nil, fmt.Errorf("peers: command %q: want start KIND, rtt KIND WARM N, kill KIND or quit", line)
}

// Start starts the plugin of kind and times NewClient → the answer to the
// first Echo. A client of that kind must not be open.
func (d *Driver) Start(kind string) (time.Duration, error) {
	if d.peers[kind] != nil {
		return 0, fmt.Errorf("peers: start %s: a %s client is open; kill it first", kind, kind)
	}
	cfg, err := clientConfig(kind, d.exe)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	cfg.Cmd = exec.Command(d.exe)
	c := plugin.NewClient(cfg)
	p, err := func() (*peer, error) {
		rc, err := c.Client()
		if err != nil {
			return nil, err
		}
		raw, err := rc.Dispense("echo")
		if err != nil {
			return nil, err
		}
		e, ok := raw.(Echo)
		if !ok {
			return nil, fmt.Errorf("dispensed %T, not an Echo", raw)
		}
		if err := d.echo(e); err != nil {
			return nil, err
		}
		return &peer{c: c, echo: e}, nil
	}()
	t := time.Since(t0)
	if err != nil {
		c.Kill()
		return 0, fmt.Errorf("peers: start %s: %w", kind, err)
	}
	d.peers[kind] = p
	return t, nil
}

// echo makes one call and checks the answer.
func (d *Driver) echo(e Echo) error {
	out, err := e.Echo(d.msg)
	if err != nil {
		return err
	}
	if !bytes.Equal(out, d.msg) {
		return fmt.Errorf("echo answered %d bytes that differ from the %d sent", len(out), len(d.msg))
	}
	return nil
}

// RoundTrips times n Echo calls of 64 bytes one by one on the open client
// of kind, after warm untimed ones.
func (d *Driver) RoundTrips(kind string, warm, n int) ([]time.Duration, error) {
	p := d.peers[kind]
	if p == nil {
		return nil, fmt.Errorf("peers: rtt %s: no %s client open; start one first", kind, kind)
	}
	out := make([]time.Duration, 0, n)
	for i := range warm + n {
		t0 := time.Now()
		err := d.echo(p.echo)
		t := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("peers: rtt %s: call %d: %w", kind, i, err)
		}
		if i >= warm {
			out = append(out, t)
		}
	}
	return out, nil
}

// Kill times Client.Kill of the open client of kind: go-plugin asks the
// plugin to quit and returns once the process has exited.
func (d *Driver) Kill(kind string) (time.Duration, error) {
	p := d.peers[kind]
	if p == nil {
		return 0, fmt.Errorf("peers: kill %s: no %s client open", kind, kind)
	}
	delete(d.peers, kind)
	t0 := time.Now()
	p.c.Kill()
	t := time.Since(t0)
	if !p.c.Exited() {
		return t, fmt.Errorf("peers: kill %s: the plugin process has not exited", kind)
	}
	return t, nil
}

// Close kills every open client.
func (d *Driver) Close() {
	for kind, p := range d.peers {
		p.c.Kill()
		delete(d.peers, kind)
	}
}
