package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
)

// postmasterRole runs a runtime in this process (the test binary re-executed)
// with workers in several states, prints their pids and blocks until killed.
func postmasterRole() int {
	rt, err := New(Config{Workers: []actors.Spec{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	for _, a := range []string{"run", "ignore_term", "grandchild"} {
		h, err := rt.StartWorker(ctx, actors.Spec{Name: "w-" + a, Type: "fault", Arg: []byte(a), StartAt: phases.PostmasterStart})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		pid, err := h.WaitStarted(ctx)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("pid", pid)
	}
	fmt.Println("ready")
	select {}
}

// SIGKILL of the postmaster ends every worker within 2 s: EOF on the
// bridge (authoritative) and Pdeathsig (backstop); a worker ignoring SIGTERM
// and a worker's own child die too.
func TestPostmasterSigkillEndsEveryChild(t *testing.T) {
	cmd := roleCmd("postmaster")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			break
		}
		if strings.HasPrefix(line, "error") {
			t.Fatal(line)
		}
		if f := strings.Fields(line); len(f) == 2 && f[0] == "pid" {
			n, _ := strconv.Atoi(f[1])
			pids = append(pids, n)
		}
	}
	if len(pids) != 3 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("got pids %v", pids)
	}
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	go io.Copy(io.Discard, out)
	deadline := killed.Add(2 * time.Second * timeoutMult())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := 0
		for _, pid := range pids {
			// The workers were children of the dead postmaster; init reaps
			// them, so their /proc entry goes away once they are dead.
			if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
				alive++
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers alive %v after the postmaster was killed", alive, time.Since(killed))
		}
		<-tick.C
	}
	t.Logf("all workers gone %v after SIGKILL of the postmaster", time.Since(killed))
	// The grandchild is checked by the orphan scan.
	tick2 := time.NewTicker(10 * time.Millisecond)
	defer tick2.Stop()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick2.C {
		if !orphansLeft() {
			return
		}
	}
	checkNoZombieNoOrphan(t)
}

func orphansLeft() bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && strings.Contains(string(env), "RTTEST_RUN="+runID+"\x00") {
			return true
		}
	}
	return false
}
