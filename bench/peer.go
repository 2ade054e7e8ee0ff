package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The bridge suite measures hashicorp/go-plugin through bgwpeers, the
// command of the module bench/peers (its own module, so that this one does
// not depend on go-plugin). bgwpeers is started once per suite with pipes
// on its stdin and stdout and answers one line per command; its package doc
// describes the commands. Each go-plugin measurement is one command, so the
// suite interleaves them with its own.

type peersKey struct{}

// WithPeers returns a context that tells the bridge suite to measure
// go-plugin with the bgwpeers binary at path (the command's -peers flag);
// "" leaves those rows out.
func WithPeers(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, peersKey{}, path)
}

// PeersOf returns the path set with [WithPeers], or "".
func PeersOf(ctx context.Context) string {
	p, _ := ctx.Value(peersKey{}).(string)
	return p
}

// peerDriver is a running bgwpeers.
type peerDriver struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *peerStderr
}

// peerYamuxNoise is the line go-plugin's net/rpc transport (yamux, whose
// logger go-plugin does not configure) writes to stderr when Kill closes
// the session after the plugin has gone: it is dropped and counted.
const peerYamuxNoise = "[ERR] yamux: Failed to write header"

// peerStderr passes bgwpeers' stderr on line by line, dropping the
// peerYamuxNoise lines.
type peerStderr struct {
	w       io.Writer
	partial []byte
	dropped int
}

func (p *peerStderr) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := strings.IndexByte(string(p.partial), '\n')
		if i < 0 {
			return len(b), nil
		}
		line := p.partial[:i+1]
		if strings.Contains(string(line), peerYamuxNoise) {
			p.dropped++
		} else if _, err := p.w.Write(line); err != nil {
			return len(b), err
		}
		p.partial = p.partial[i+1:]
	}
}

// startPeerDriver starts the bgwpeers binary at path.
func startPeerDriver(path string) (*peerDriver, error) {
	cmd := exec.Command(path)
	stderr := &peerStderr{w: os.Stderr}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start bgwpeers %s: %w", path, err)
	}
	return &peerDriver{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<16), stderr: stderr}, nil
}

// do sends one command and returns the durations of its answer.
func (p *peerDriver) do(cmd string) ([]time.Duration, error) {
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		return nil, fmt.Errorf("bench: bgwpeers %q: %w", cmd, err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("bench: bgwpeers %q: no answer: %w", cmd, err)
	}
	ds, err := parsePeerAnswer(line)
	if err != nil {
		return nil, fmt.Errorf("bench: bgwpeers %q: %w", cmd, err)
	}
	return ds, nil
}

// one sends a command whose answer is a single duration.
func (p *peerDriver) one(cmd string) (time.Duration, error) {
	ds, err := p.do(cmd)
	if err == nil && len(ds) != 1 {
		err = fmt.Errorf("bench: bgwpeers %q: %d durations, want 1", cmd, len(ds))
	}
	if err != nil {
		return 0, err
	}
	return ds[0], nil
}

// close tells bgwpeers to kill its clients and quit, and reaps it (killing
// it if it has not exited within 10 s).
func (p *peerDriver) close() error {
	_, qerr := io.WriteString(p.in, "quit\n")
	p.in.Close()
	t := time.AfterFunc(10*time.Second, func() { p.cmd.Process.Kill() })
	defer t.Stop()
	io.Copy(io.Discard, p.out)
	werr := p.cmd.Wait() // after Wait, stderr is no longer written
	if p.stderr.dropped > 0 {
		fmt.Fprintf(os.Stderr, "bench: bgwpeers: %d × %q on stderr (go-plugin's Kill of a net/rpc plugin), dropped\n", p.stderr.dropped, peerYamuxNoise)
	}
	if err := errors.Join(qerr, werr); err != nil {
		return fmt.Errorf("bench: bgwpeers: %w", err)
	}
	return nil
}

// parsePeerAnswer parses one answer line of bgwpeers: "ok" and zero or more
// durations in nanoseconds, or "err" and a message.
func parsePeerAnswer(line string) ([]time.Duration, error) {
	line = strings.TrimRight(line, "\r\n")
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return nil, errors.New("empty answer")
	case f[0] == "err":
		return nil, fmt.Errorf("bgwpeers: %s", strings.TrimSpace(strings.TrimPrefix(line, "err")))
	case f[0] != "ok":
		return nil, fmt.Errorf("answer %.60q is neither ok nor err", line)
	}
	ds := make([]time.Duration, 0, len(f)-1)
	for _, s := range f[1:] {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ns <= 0 {
			return nil, fmt.Errorf("answer %.60q: %q is not a duration in nanoseconds", line, s)
		}
		ds = append(ds, time.Duration(ns))
	}
	return ds, nil
}
