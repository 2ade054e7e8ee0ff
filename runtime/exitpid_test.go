package runtime

import (
	"encoding/json"
	"net/http"
	"syscall"
	"testing"
)

// An exit names the process that ended, in the event and in the /workers
// row: without it, an exit cannot be matched to the process a signal hit
// (the exit event's PID is zero, since the slot has no process by then).
func TestExitNamesItsPID(t *testing.T) {
	h := newHarness(t, Config{HTTPAddr: "127.0.0.1:0"})
	_, pid := h.startFault("k", "run", nil)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ex := h.expectExit("k"); ex.PID != pid || ex.Reason != "signal:KILL" {
		t.Fatalf("exit %+v, want signal:KILL of pid %d", ex, pid)
	}
	resp, err := http.Get("http://" + h.rt.Addr() + "/workers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rows []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r["name"] == "k" {
			le, _ := r["last_exit"].(map[string]any)
			if le["pid"] != float64(pid) {
				t.Fatalf("last_exit %v, want pid %d", le, pid)
			}
			return
		}
	}
	t.Fatal("no row for k")
}
