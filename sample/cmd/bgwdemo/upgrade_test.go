package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The demo upgrades itself in place on SIGUSR2: same pid, every worker
// with the pid it had, and /version counts the upgrade.
func TestDemoUpgradesOnSIGUSR2(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildDemo(t)
	tag := newTag("BGWDEMO_TEST_TAG")
	// No crash and no all-for-one reset: every worker keeps its pid
	// unless the upgrade changed it.
	p := startProcess(t, "bgwdemo", tag, bin, "-duration", "60s", "-crash", "0", "-shm-crash", "0", "-http", "127.0.0.1:0")
	defer func() {
		p.stop(t, os.Interrupt, 20*time.Second)
		if left := processesTagged(tag); len(left) > 0 {
			t.Errorf("processes of the demo left: %v", left)
		}
	}()
	base := p.httpBase(t, 20*time.Second)
	pids := func() (map[string]float64, error) {
		body, err := get(base + "/workers")
		if err != nil {
			return nil, err
		}
		var rows []map[string]any
		if err := json.Unmarshal(body, &rows); err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, r := range rows {
			if r["state"] != "running" {
				return nil, fmt.Errorf("%v is %v", r["name"], r["state"])
			}
			out[r["name"].(string)] = r["pid"].(float64)
		}
		return out, nil
	}
	var before map[string]float64
	if err := poll(time.Now().Add(20*time.Second), p.exited, func() error {
		var err error
		before, err = pids()
		if err == nil && len(before) < len(demoWorkers) {
			err = fmt.Errorf("only %d of %d workers running", len(before), len(demoWorkers))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGUSR2)
	if err := poll(time.Now().Add(30*time.Second), p.exited, func() error {
		body, err := get(base + "/version")
		if err != nil {
			return err
		}
		if !strings.Contains(string(body), `"upgrades":1`) {
			return fmt.Errorf("/version = %s", body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after, err := pids()
	if err != nil {
		t.Fatal(err)
	}
	for n, pid := range before {
		if after[n] != pid {
			t.Errorf("%s had pid %v before the upgrade, %v after", n, pid, after[n])
		}
	}
}
