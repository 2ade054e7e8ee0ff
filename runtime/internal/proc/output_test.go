package proc

import (
	"log/slog"
	"testing"
)

func TestChildRecord(t *testing.T) {
	for _, tc := range []struct {
		line, msg string
		level     slog.Level
		attrs     int
	}{
		{`{"time":"2026-11-25T10:00:00Z","level":"WARN","msg":"disk slow","worker":"w","ms":12}`, "disk slow", slog.LevelWarn, 2},
		{`{"time":"x","level":"DEBUG","msg":"d"}`, "d", slog.LevelDebug, 0},
		{`goroutine 1 [running]:`, `goroutine 1 [running]:`, slog.LevelInfo, 0},
		{`{"not":"a record"}`, `{"not":"a record"}`, slog.LevelInfo, 0},
		{`{broken`, `{broken`, slog.LevelInfo, 0},
	} {
		level, msg, attrs := ChildRecord(tc.line)
		if level != tc.level || msg != tc.msg || len(attrs) != tc.attrs {
			t.Errorf("ChildRecord(%q) = %v, %q, %d attrs; want %v, %q, %d", tc.line, level, msg, len(attrs), tc.level, tc.msg, tc.attrs)
		}
	}
}
