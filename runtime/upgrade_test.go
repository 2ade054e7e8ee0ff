package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/shmactor"
)

// testBuildVersion is the version this test binary reports; the upgrade
// test builds a second binary with another (-ldflags -X).
var testBuildVersion = "v1"

// Regions and offsets of the upgrade test's shared-memory pair.
const (
	upQueue     = "up_queue"
	upStats     = "up_stats"
	upProduced  = 0
	upConsumed  = 64
	upMsgSize   = 64
	upMsgPeriod = 2 * time.Millisecond
)

func init() {
	// versioned: an actor that answers "version" with its binary's.
	actors.MustDefine(actors.Spec{Name: "versioned", Props: func(w actors.Worker) *actor.Props {
		return actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case *actors.Terminate:
				ctx.Stop(ctx.Self())
			case string:
				if m == "version" && ctx.Sender() != nil {
					ctx.Respond(testBuildVersion)
				}
			}
		})
	}})
	regions := []shmactor.Region{
		{Name: upQueue, Size: shmactor.QueueSize(16 << 10), Init: func(mem []byte) {
			if err := shmactor.InitQueue(mem); err != nil {
				panic(err)
			}
		}},
		{Name: upStats, Size: 128},
	}
	// up_writer sends numbered messages on a shared-memory queue; up_reader
	// checks that none is missing. Their counters live in shared memory,
	// so a restart on the same segment carries on the sequence.
	actors.MustDefine(actors.Spec{Name: "up_writer", StartAt: phases.ConsistentState, SharedMemory: true, Regions: regions,
		Run: func(ctx context.Context, w actors.Worker) error {
			qm, _ := w.Segment().Region(upQueue)
			stats, _ := w.Segment().Region(upStats)
			q, err := shmactor.AttachSender(qm)
			if err != nil {
				return err
			}
			defer q.Detach()
			produced := shmactor.Uint64At(stats, upProduced)
			msg := make([]byte, upMsgSize)
			tick := time.NewTicker(upMsgPeriod)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
				n := produced.Load() + 1
				binary.LittleEndian.PutUint64(msg, n)
				for {
					err := q.Send(ctx, msg)
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						return nil
					}
					if !errors.Is(err, shmactor.ErrDetached) {
						return err
					}
					// The reader is away (restarting with its group, whose
					// members a roll starts again on the same queue): it
					// comes back, as the reader waits for this writer.
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(time.Millisecond):
					}
				}
				produced.Store(n)
			}
		}})
	actors.MustDefine(actors.Spec{Name: "up_reader", StartAt: phases.ConsistentState, SharedMemory: true, Regions: regions,
		Run: func(ctx context.Context, w actors.Worker) error {
			qm, _ := w.Segment().Region(upQueue)
			stats, _ := w.Segment().Region(upStats)
			q, err := shmactor.AttachReceiver(qm)
			if err != nil {
				return err
			}
			defer q.Detach()
			consumed := shmactor.Uint64At(stats, upConsumed)
			buf := make([]byte, upMsgSize)
			for {
				m, err := q.Receive(ctx, buf)
				switch {
				case err == nil: // taken off the ring: counted, even if asked to stop meanwhile
				case ctx.Err() != nil:
					return nil
				case errors.Is(err, shmactor.ErrDetached):
					// The writer is away (restarting with its group): it
					// comes back on the same queue.
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(time.Millisecond):
					}
					continue
				case err != nil:
					return err
				}
				if got, want := binary.LittleEndian.Uint64(m), consumed.Load()+1; got != want {
					return fmt.Errorf("up_reader: message %d arrived, want %d: a message was lost", got, want)
				}
				consumed.Add(1)
			}
		}})
}

// pmtUpgradeRole runs a host with plain and shared-memory workers and obeys
// lines on stdin: "upgrade PATH", "roll", "versions", "counters", "quit".
// After an upgrade the new image runs this same role and says "ready" again.
func pmtUpgradeRole() int {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	rt, err := New(Config{Workers: []actors.Spec{}, HTTPAddr: "127.0.0.1:0", LockFile: os.Getenv("RTTEST_LOCK"),
		Version: testBuildVersion, WarmPool: 2, GroupStopTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		say("error %v", err)
		return 1
	}
	ctx := context.Background()
	rt.Subscribe(func(e Event) {
		switch e := e.(type) {
		case PhaseEvent:
			if e.Adopted {
				say("adopted-phase %s", e.Phase)
			}
		case SegmentEvent:
			if e.Adopted {
				say("adopted-segment %d", e.Generation)
			}
		}
	})
	if err := rt.Start(ctx); err != nil {
		say("error %v", err)
		return 1
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		say("error %v", err)
		return 1
	}
	names := []string{"v-a", "v-b", "up-w", "up-r"}
	if !rt.Upgraded() {
		for _, sp := range []actors.Spec{
			{Name: "v-a", Type: "versioned"}, {Name: "v-b", Type: "versioned"},
			{Name: "up-w", Type: "up_writer", StartAt: phases.ConsistentState, SharedMemory: true},
			{Name: "up-r", Type: "up_reader", StartAt: phases.ConsistentState, SharedMemory: true},
		} {
			sp.StopTimeout = 2 * time.Second
			h, err := rt.StartWorker(ctx, sp)
			if err == nil {
				_, err = h.WaitStarted(ctx)
			}
			if err != nil {
				say("error %v", err)
				return 1
			}
		}
	}
	say("ready %s %s", rt.Version(), rt.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "upgrade":
			uctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := rt.Upgrade(uctx, arg) // returns only if it did not happen
			cancel()
			say("upgrade-failed %v", err)
		case "roll":
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := rt.Roll(rctx, RollPolicy{})
			cancel()
			say("rolled %v", err)
		case "versions":
			for _, n := range names[:2] {
				v, err := rt.System().Root.RequestFuture(rt.PID(n), "version", 5*time.Second).Result()
				say("version %s %v %v", n, v, err)
			}
			say("end")
		case "counters":
			b, err := rt.Segment().Region(upStats)
			if err != nil {
				say("counters error %v", err)
				continue
			}
			say("counters %d %d", shmactor.Uint64At(b, upProduced).Load(), shmactor.Uint64At(b, upConsumed).Load())
		case "quit":
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := rt.Shutdown(sctx, phases.Fast)
			cancel()
			if err != nil {
				say("error %v", err)
				return 1
			}
			return 0
		}
	}
	return 0
}

// buildTestBinary builds this package's test binary again with ldflags,
// into dir.
func buildTestBinary(t *testing.T, dir, name, ldflags string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	args := []string{"test", "-c", "-o", out, "-ldflags", ldflags}
	if raceEnabled {
		args = append(args, "-race") // the same build as this one: its packages are cached
	}
	cmd := exec.Command("go", append(args, ".")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, b)
	}
	return out
}

// upgradeState is what the test reads of the role's workers.
// upgradeStatus returns GET /status of the role's host.
func (s *pmtSub) upgradeStatus(t *testing.T, addr string) map[string]any {
	t.Helper()
	_, body := httpDo(t, "GET", "http://"+addr+"/status")
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /status: %v: %s", err, body)
	}
	return st
}

func (s *pmtSub) upgradeRows(t *testing.T, addr string) map[string]map[string]any {
	t.Helper()
	rows := map[string]map[string]any{}
	for _, r := range workersRows(t, "http://"+addr) {
		rows[r["name"].(string)] = r
	}
	return rows
}

func (s *pmtSub) command(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// next returns the role's next line that starts with prefix.
func (s *pmtSub) next(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.NewTimer(90 * time.Second * timeoutMult())
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("role ended before %q; stderr:\n%s", prefix, s.tail())
			}
			if strings.HasPrefix(l, "error") {
				t.Fatalf("role: %s; stderr:\n%s", l, s.tail())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline.C:
			t.Fatalf("timed out waiting for %q; stderr:\n%s", prefix, s.tail())
		}
	}
}

func (s *pmtSub) counters(t *testing.T) (produced, consumed uint64) {
	t.Helper()
	s.command(t, "counters")
	if _, err := fmt.Sscanf(s.next(t, "counters"), "counters %d %d", &produced, &consumed); err != nil {
		t.Fatal(err)
	}
	return produced, consumed
}

func (s *pmtSub) versions(t *testing.T) map[string]string {
	t.Helper()
	s.command(t, "versions")
	out := map[string]string{}
	for {
		l := s.next(t, "")
		if l == "end" {
			return out
		}
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "version" {
			out[f[1]] = f[2]
		}
	}
}

// waitFlow waits until the shared-memory pair has moved on by n messages.
func (s *pmtSub) waitFlow(t *testing.T, from uint64, n uint64) uint64 {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(30 * time.Second * timeoutMult()); time.Now().Before(end); <-tick.C {
		if _, c := s.counters(t); c >= from+n {
			return c
		}
	}
	p, c := s.counters(t)
	t.Fatalf("the shared-memory queue did not move on by %d messages from %d (produced %d, consumed %d); stderr:\n%s", n, from, p, c, s.tail())
	return 0
}

// poolFull waits until the role's warm pool has its 2 idle children.
func (s *pmtSub) poolFull(t *testing.T, addr string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(20 * time.Second * timeoutMult()); time.Now().Before(end); <-tick.C {
		if _, b := httpDo(t, "GET", "http://"+addr+"/status"); strings.Contains(string(b), `"idle":2`) {
			return
		}
	}
	t.Fatal("the warm pool did not fill")
}

// fdsOf counts pid's descriptors, but for its TCP connections: the test's
// own HTTP requests come and go on those.
func fdsOf(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid)
	tcp := map[string]bool{}
	for _, f := range []string{"/net/tcp", "/net/tcp6"} {
		b, _ := os.ReadFile(dir + f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] != "0A" { // not a listener
				tcp["socket:["+fs[9]+"]"] = true
			}
		}
	}
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink(dir + "/fd/" + e.Name()); !tcp[l] {
			n++
		}
	}
	return n
}

// fdLinks lists what pid's descriptors point to, for a failure's message.
func fdLinks(pid int) []string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(dir + e.Name())
		out = append(out, e.Name()+"="+l)
	}
	return out
}

// An in-place upgrade: the host exec's a second build of itself (which
// reports another version), every worker keeps its pid, no message on the
// shared-memory queue is lost, the rows, restart counters and metrics carry
// on; Roll then restarts the workers onto the new code. A binary that
// refuses the state (another state format) leaves the host unchanged.
func TestInPlaceUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two test binaries")
	}
	dir := t.TempDir()
	v2 := buildTestBinary(t, dir, "v2.test", "-X github.com/bgworker/bgworker/runtime.testBuildVersion=v2")
	v3 := buildTestBinary(t, dir, "v3.test", "-X github.com/bgworker/bgworker/runtime.testBuildVersion=v3 "+
		"-X github.com/bgworker/bgworker/runtime.stateFormat=bgworker-upgrade/999")
	sub := pmtStartRole(t, "pmt_upgrade", "RTTEST_LOCK="+filepath.Join(dir, "lock"))
	var ver, addr string
	fmt.Sscanf(sub.next(t, "ready"), "ready %s %s", &ver, &addr)
	if ver != "v1" {
		t.Fatalf("first image reports %q, want v1", ver)
	}
	host := sub.cmd.Process.Pid
	// A restart before the upgrade, so that the restart counters have
	// something to carry.
	va := sub.upgradeRows(t, addr)["v-a"]
	syscall.Kill(int(va["pid"].(float64)), syscall.SIGKILL)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second * timeoutMult()); ; <-tick.C {
		if r := sub.upgradeRows(t, addr)["v-a"]; r["state"] == "running" && r["restarts"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v-a never ran again after its SIGKILL: %v", sub.upgradeRows(t, addr)["v-a"])
		}
	}
	before := sub.upgradeRows(t, addr)
	workerSeries := func() map[string]string {
		_, body := httpDo(t, "GET", "http://"+addr+"/metrics")
		m := map[string]string{}
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "bgworker_worker_") && strings.Contains(l, `worker="versioned"`) && !strings.Contains(l, "_seconds") {
				k, v, _ := strings.Cut(l, " ")
				m[k] = v
			}
		}
		return m
	}
	series0 := workerSeries()
	if series0[`bgworker_worker_restarts_total{worker="versioned"}`] != "1" {
		t.Fatalf("before the upgrade: %v; want one restart of the versioned workers", series0)
	}
	_, c0 := sub.counters(t)
	sub.waitFlow(t, c0, 20)
	sub.poolFull(t, addr)
	fds0, links0 := fdsOf(t, host), fdLinks(host)

	// Refused: the host goes on as it was.
	sub.command(t, "upgrade "+v3)
	if l := sub.next(t, "upgrade-failed"); !strings.Contains(l, "refused") || !strings.Contains(l, "format") {
		t.Fatalf("an upgrade to a binary of another state format: %s; want it refused, naming the format", l)
	}
	for n, r := range sub.upgradeRows(t, addr) {
		if r["pid"] != before[n]["pid"] || r["state"] != "running" {
			t.Fatalf("after a refused upgrade %s is %v with pid %v, was pid %v", n, r["state"], r["pid"], before[n]["pid"])
		}
	}
	// A program that exits 0 in check mode without being a bgworker host
	// (here /bin/true) is refused too, before its exec would end every
	// worker.
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	sub.command(t, "upgrade "+truePath)
	if l := sub.next(t, "upgrade-failed"); !strings.Contains(l, "without accepting") {
		t.Fatalf("an upgrade to %s: %s; want it refused as not accepting the state", truePath, l)
	}
	for n, r := range sub.upgradeRows(t, addr) {
		if r["pid"] != before[n]["pid"] || r["state"] != "running" {
			t.Fatalf("after an upgrade to %s was refused, %s is %v with pid %v, was pid %v", truePath, n, r["state"], r["pid"], before[n]["pid"])
		}
	}

	// The exec fails after the check passed (the binary is gone from disk
	// by then): the host takes its children back, on the same descriptors'
	// worth, and goes on as it was.
	gone := filepath.Join(dir, "gone.sh")
	if err := os.WriteFile(gone, []byte("#!/bin/sh\nrm -f -- \"$0\"\nexec "+v2+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, cg := sub.counters(t)
	sub.command(t, "upgrade "+gone)
	if l := sub.next(t, "upgrade-failed"); !strings.Contains(l, "exec "+gone) {
		t.Fatalf("an upgrade whose exec fails: %s; want it refused, naming the exec", l)
	}
	for n, r := range sub.upgradeRows(t, addr) {
		if r["pid"] != before[n]["pid"] || r["state"] != "running" || r["restarts"] != before[n]["restarts"] {
			t.Fatalf("after a failed exec %s is %v with pid %v and %v restarts, was pid %v", n, r["state"], r["pid"], r["restarts"], before[n]["pid"])
		}
	}
	sub.waitFlow(t, cg, 20)
	if v := sub.versions(t); v["v-a"] != "v1" || v["v-b"] != "v1" {
		t.Fatalf("after a failed exec the workers answer %v, want v1", v)
	}
	sub.poolFull(t, addr)
	if n := fdsOf(t, host); n != fds0 {
		t.Errorf("the host holds %d descriptors after a failed exec, %d before:\nbefore %v\nafter  %v", n, fds0, links0, fdLinks(host))
	}

	// Upgrade.
	_, c1 := sub.counters(t)
	gen0 := sub.upgradeStatus(t, addr)["segment"].(map[string]any)["generation"]
	sub.command(t, "upgrade "+v2)
	// The new image publishes what it took over, once, for subscribers
	// that start with it.
	if l := sub.next(t, "adopted-phase"); l != "adopted-phase recovery_finished" {
		t.Fatalf("the new image's first phase event: %q, want the adopted recovery_finished", l)
	}
	if l := sub.next(t, "adopted-segment"); l != fmt.Sprintf("adopted-segment %v", gen0) {
		t.Fatalf("the new image's first segment event: %q, want the adopted generation %v", l, gen0)
	}
	fmt.Sscanf(sub.next(t, "ready"), "ready %s %s", &ver, &addr)
	if ver != "v2" {
		t.Fatalf("the new image reports %q, want v2", ver)
	}
	if sub.cmd.Process.Pid != host {
		t.Fatal("the host's pid changed")
	}
	after := sub.upgradeRows(t, addr)
	for n, r := range before {
		a := after[n]
		if a == nil || a["pid"] != r["pid"] || a["state"] != "running" || a["restarts"] != r["restarts"] || a["incarnation"] != r["incarnation"] {
			t.Errorf("%s after the upgrade: %v; before: %v", n, a, r)
		}
	}
	c2 := sub.waitFlow(t, c1, 50) // the reader checks every sequence number: a gap ends it
	if r := sub.upgradeRows(t, addr)["up-r"]; r["restarts"] != float64(0) {
		t.Fatalf("the queue's reader restarted across the upgrade: %v", r)
	}
	if v := sub.versions(t); v["v-a"] != "v1" || v["v-b"] != "v1" {
		t.Fatalf("before Roll the workers run %v, want the old code (v1)", v)
	}
	if series := workerSeries(); !maps.Equal(series, series0) {
		t.Errorf("the versioned workers' counters after the upgrade:\n%v\nbefore:\n%v", series, series0)
	}
	_, metrics := httpDo(t, "GET", "http://"+addr+"/metrics")
	for _, want := range []string{"bgworker_upgrades_total 1", `bgworker_build_info{version="v2"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, body := httpDo(t, "GET", "http://"+addr+"/version"); !strings.Contains(string(body), `"version":"v2"`) || !strings.Contains(string(body), `"upgrades":1`) {
		t.Errorf("/version = %s", body)
	}
	// The same descriptors, less the duplicate of the segment that the old
	// image kept per shared-memory child to pass it at the assignment: the
	// new image has no assignment to make to them.
	sub.poolFull(t, addr)
	if n := fdsOf(t, host); n != fds0-2 {
		t.Errorf("the host holds %d descriptors after the upgrade, %d before (want %d: the two shared-memory children's segment duplicates fewer)", n, fds0, fds0-2)
	}

	// Roll onto the new code.
	sub.command(t, "roll")
	if l := sub.next(t, "rolled"); l != "rolled <nil>" {
		t.Fatalf("Roll: %s", l)
	}
	if v := sub.versions(t); v["v-a"] != "v2" || v["v-b"] != "v2" {
		t.Fatalf("after Roll the workers run %v, want v2", v)
	}
	rolled := sub.upgradeRows(t, addr)
	for n, r := range rolled {
		if r["pid"] == before[n]["pid"] || r["state"] != "running" {
			t.Errorf("%s after Roll: %v", n, r)
		}
		if le, _ := r["last_exit"].(map[string]any); le == nil || le["reason"] != ReasonRolled || le["crash"] != false {
			t.Errorf("%s's last exit after Roll: %v, want rolled, not a crash", n, r["last_exit"])
		}
	}
	sub.waitFlow(t, c2, 50) // the sequence goes on after the group's roll too

	sub.command(t, "quit")
	if _, code := sub.wait(); code != 0 {
		t.Fatalf("role exited %d; stderr:\n%s", code, sub.tail())
	}
	checkNoZombieNoOrphan(t)
}

// A stop asked while an upgrade is under way is held: it would act on a
// child being handed over. The upgrade then calls itself off rather than
// swallow it in the exec, and once it has, the stop is carried out.
func TestStopHeldDuringUpgrade(t *testing.T) {
	h := newHarness(t, Config{})
	h.startFault("w", "run", nil)
	quiet := make(chan error, 1)
	h.rt.tell(msgUpgradeQuiesce{reply: quiet})
	if err := <-quiet; err != nil {
		t.Fatalf("quiesce: %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- h.rt.Stop(ctx(t), "w") }()
	held := func() int {
		n := make(chan int, 1)
		h.rt.tell(msgFunc{fn: func(pm *postmaster) { n <- len(pm.up.held) }})
		return <-n
	}
	h.eventually("the stop held", func() bool { return held() == 1 })
	if st := h.info("w").State; st != Running {
		t.Fatalf("w is %v while the upgrade holds its stop, want running", st)
	}
	if _, err := h.rt.finalSnapshot(ctx(t)); !errors.Is(err, ErrUpgradeRefused) {
		t.Fatalf("final snapshot with a stop held: %v, want ErrUpgradeRefused", err)
	}
	if err := h.rt.heldDuringUpgrade(ctx(t)); !errors.Is(err, ErrUpgradeRefused) {
		t.Fatalf("the check before the exec with a stop held: %v, want ErrUpgradeRefused", err)
	}
	h.rt.tell(msgUpgradeResume{})
	if err := <-stopped; err != nil {
		t.Fatalf("Stop after the upgrade was called off: %v", err)
	}
	h.waitState("w", Stopped)
}

// A shutdown that begins while an upgrade waits for the postmaster to be
// quiet calls the upgrade off at once, rather than waiting behind it.
func TestShutdownCallsOffAQuiescingUpgrade(t *testing.T) {
	h := newHarness(t, Config{})
	h.startFault("slow", "ignore_term", func(s *actors.Spec) { s.StopTimeout = time.Second })
	stopped := make(chan error, 1)
	go func() { stopped <- h.rt.Stop(ctx(t), "slow") }()
	h.waitState("slow", Stopping) // not quiet while it stops
	quiet := make(chan error, 1)
	h.rt.tell(msgUpgradeQuiesce{reply: quiet})
	h.rt.tell(msgShutdown{mode: phases.Fast})
	if err := <-quiet; !errors.Is(err, ErrUpgradeRefused) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("the quiescing upgrade's answer: %v, want it called off by the shutdown", err)
	}
	h.rt.tell(msgUpgradeResume{})
	<-stopped
	select {
	case <-h.rt.Done():
	case <-time.After(30 * time.Second * timeoutMult()):
		t.Fatal("the shutdown did not finish")
	}
}
