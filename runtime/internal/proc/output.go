package proc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// outputDrain is how long the output of a reaped child is still read before
// its pipe is closed: what the child wrote just before it exited is in the
// pipe already, so this only waits for the reader to get to it.
const outputDrain = 200 * time.Millisecond

// output logs the child's stdout and stderr line by line, each line capped,
// so a child that floods output never blocks on a full pipe.
func (p *proc) output(r *os.File) {
	defer close(p.outDone)
	defer func() {
		if !p.detaching.Load() {
			r.Close()
		}
	}()
	log := p.l.env.Log
	br := bufio.NewReaderSize(r, 4096)
	const maxLine = 4096
	for {
		line, err := br.ReadSlice('\n')
		truncated := false
		if errors.Is(err, bufio.ErrBufferFull) {
			truncated = true
			// Drop the rest of an over-long line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if len(line) > 0 {
			s := strings.TrimRight(string(line[:min(len(line), maxLine)]), "\n")
			p.tail.add(s)
			p.mu.Lock()
			name := p.name
			p.mu.Unlock()
			level, msg, attrs := ChildRecord(s)
			// The host adds who wrote the line; the child's own record
			// (its logger carries the worker's name) must not repeat it.
			attrs = slices.DeleteFunc(attrs, func(a slog.Attr) bool {
				return a.Key == "worker" && a.Value.String() == name || a.Key == "pid" || a.Key == "source"
			})
			attrs = append(attrs, slog.String("worker", name), slog.Int("pid", p.pid), slog.String("source", "child"))
			if truncated {
				attrs = append(attrs, slog.Bool("truncated", true))
			}
			log.LogAttrs(context.Background(), level, msg, attrs...)
		}
		if err != nil {
			if p.detaching.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return // detached: the pipe goes on in the next image
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				log.Debug("runtime: child output", "pid", p.pid, "err", err)
			}
			return
		}
	}
}

// ChildRecord turns one line of a child's output into a log record: a JSON
// line written by the child's slog handler keeps its level, message and
// attributes; any other line (a panic's stack, a print) is logged as is at
// Info.
func ChildRecord(line string) (slog.Level, string, []slog.Attr) {
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return slog.LevelInfo, line, nil
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		return slog.LevelInfo, line, nil
	}
	msg, ok := rec[slog.MessageKey].(string)
	lv, ok2 := rec[slog.LevelKey].(string)
	if !ok || !ok2 {
		return slog.LevelInfo, line, nil
	}
	var level slog.Level
	if level.UnmarshalText([]byte(lv)) != nil {
		level = slog.LevelInfo
	}
	attrs := make([]slog.Attr, 0, len(rec))
	for k, v := range rec {
		switch k {
		case slog.MessageKey, slog.LevelKey, slog.TimeKey:
		default:
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return level, msg, attrs
}

// tailBuffer keeps the last n lines of a child's output.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
	n     int
}

func newTail(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.n {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.n-1]
	}
	t.lines = append(t.lines, s)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
