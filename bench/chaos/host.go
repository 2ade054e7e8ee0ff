package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	bgw "github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/shmactor"
)

// Environment of the host mode, set by the soak.
const (
	// RoleEnv makes the binary run as the soak's host.
	RoleEnv     = "BGWCHAOS_ROLE"
	envTag      = "BGWCHAOS_RUN"       // tags every process of a run (inherited by all)
	envLock     = "BGWCHAOS_LOCK"      // the host's LockFile
	envJournal  = "BGWCHAOS_JOURNAL"   // where the host appends its event journal
	envNoCg     = "BGWCHAOS_NOCGROUPS" // "1": Config.NoCgroups
	envHostLife = "BGWCHAOS_LIFE"      // the host's life number, for its log
)

// The host's configuration: short heartbeats so that a stopped process is
// judged within seconds, unlimited restarts and resets so that the soak
// can go on killing.
const (
	heartbeatInterval = 250 * time.Millisecond
	heartbeatTimeout  = 2 * time.Second
	warmPool          = 3
	shmMembers        = 3
	shutdownTimeout   = 10 * time.Second
)

// Worker names. The soak picks its victims by these.
var (
	plainNames   = []string{"plain-1", "plain-2"}
	escaperNames = []string{"escaper-1", "escaper-2"}
	leaverName   = "leaver"
	shmNames     = []string{"shm-0", "shm-1", "shm-2"}
)

// The ledger region shared by the shm members.
const (
	ledgerRegion = "chaos-ledger"
	ledgerMagic  = 0xC4A05_1ED6E5
	offMagic     = 0
	offDirty     = 64 // set by every member while it runs; zero in a fresh generation
	offSlots     = 128
	slotSize     = 64 // pid, generation, ticks
)

func init() {
	actors.MustDefine(actors.Spec{Name: "chaos-plain", Run: func(ctx context.Context, w actors.Worker) error {
		<-ctx.Done()
		return nil
	}})
	actors.MustDefine(actors.Spec{Name: "chaos-escaper", Run: runEscaper})
	actors.MustDefine(actors.Spec{Name: "chaos-leaver", Run: runLeaver})
	actors.MustDefine(actors.Spec{Name: "chaos-shm", SharedMemory: true, StartAt: phases.ConsistentState,
		Regions: []shmactor.Region{{Name: ledgerRegion, Size: 4096, Init: func(mem []byte) {
			shmactor.Uint64At(mem, offMagic).Store(ledgerMagic)
		}}},
		Run: runShm})
}

// startEscapee starts a process in a new session that shares the worker's
// stdout and stderr: it leaves the worker's process group and holds the
// worker's output pipe, as a careless daemonising child does.
func startEscapee() (*exec.Cmd, error) {
	cmd := exec.Command("sleep", "3600")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd, cmd.Start()
}

// runEscaper keeps one escaped grandchild alive (restarting it when the
// soak kills it) and, when stopped, leaves it behind.
func runEscaper(ctx context.Context, w actors.Worker) error {
	for ctx.Err() == nil {
		cmd, err := startEscapee()
		if err != nil {
			return err
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-ctx.Done():
			return nil // the grandchild is left running
		case <-done:
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// runLeaver starts an escaped grandchild and exits 1 after 2–6 s, leaving
// it behind; it is restarted after its backoff.
func runLeaver(ctx context.Context, w actors.Worker) error {
	if _, err := startEscapee(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(2*time.Second + rand.N(4*time.Second)):
		return errors.New("leaver: exiting for a restart, my grandchild stays")
	}
}

// runShm writes its pid and generation into its slot of the ledger and
// marks the segment dirty, every 5 ms, until stopped.
func runShm(ctx context.Context, w actors.Worker) error {
	i, err := strconv.Atoi(string(w.Arg()))
	if err != nil || i < 0 || i >= shmMembers {
		return fmt.Errorf("chaos-shm: bad member index %q", w.Arg())
	}
	mem, err := w.Segment().Region(ledgerRegion)
	if err != nil {
		return err
	}
	if m := shmactor.Uint64At(mem, offMagic).Load(); m != ledgerMagic {
		return fmt.Errorf("chaos-shm: ledger magic %#x, want %#x: the region was not initialised", m, ledgerMagic)
	}
	slot := offSlots + i*slotSize
	pid, gen := uint64(os.Getpid()), w.Segment().Generation()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		shmactor.Uint64At(mem, slot).Store(pid)
		shmactor.Uint64At(mem, slot+8).Store(gen)
		shmactor.Uint64At(mem, slot+16).Add(1)
		shmactor.Uint64At(mem, offDirty).Store(1)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// specs returns the host's workers.
func specs() []actors.Spec {
	restart := actors.Fixed(100 * time.Millisecond)
	unlimited := actors.Intensity{MaxRestarts: -1}
	base := func(name, code string) actors.Spec {
		return actors.Spec{Name: name, Type: code, StartAt: phases.PostmasterStart, Restart: restart, Intensity: unlimited,
			StopTimeout: time.Second}
	}
	var out []actors.Spec
	for _, n := range plainNames {
		out = append(out, base(n, "chaos-plain"))
	}
	for _, n := range escaperNames {
		out = append(out, base(n, "chaos-escaper"))
	}
	lv := base(leaverName, "chaos-leaver")
	lv.Restart = actors.Fixed(500 * time.Millisecond)
	out = append(out, lv)
	for i, n := range shmNames {
		s := base(n, "chaos-shm")
		s.StartAt, s.SharedMemory, s.Arg = phases.ConsistentState, true, []byte(strconv.Itoa(i))
		out = append(out, s)
	}
	return out
}

// journalLine is one record of the host's journal: what the runtime told
// its subscribers, and what the host found in shared memory.
type journalLine struct {
	T      string `json:"t"` // exit, segment, shm, reset
	At     int64  `json:"at"`
	Name   string `json:"name,omitempty"`
	Inc    uint64 `json:"inc,omitempty"`
	PID    int    `json:"pid,omitempty"`
	Reason string `json:"reason,omitempty"`
	Crash  bool   `json:"crash,omitempty"`
	Gen    uint64 `json:"gen,omitempty"`
	Reset  bool   `json:"reset,omitempty"`
	OK     bool   `json:"ok,omitempty"`
	Why    string `json:"why,omitempty"`
}

type journal struct {
	mu sync.Mutex
	f  *os.File
}

// write appends one line with one write(2): a SIGKILL of the host loses
// nothing already written.
func (j *journal) write(l journalLine) {
	l.At = time.Now().UnixNano()
	b, _ := json.Marshal(l)
	j.mu.Lock()
	j.f.Write(append(b, '\n'))
	j.mu.Unlock()
}

// HostMain runs the soak's host: a runtime with plain, escaping, leaving
// and shared-memory workers and a warm pool, on the LockFile the soak
// names. It prints "addr <host:port>" and "ready" on stdout, journals every
// worker exit and every segment check, shuts down fast on SIGTERM within
// 10 s and prints "shutdown <ms> ok" (or the error), and otherwise runs
// until killed.
func HostMain() int {
	jf, err := os.OpenFile(os.Getenv(envJournal), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	j := &journal{f: jf}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rt, err := bgw.New(bgw.Config{
		Workers: specs(), WarmPool: warmPool, HeartbeatInterval: heartbeatInterval, HeartbeatTimeout: heartbeatTimeout,
		GroupStopTimeout: 500 * time.Millisecond, GroupResetIntensity: actors.Intensity{MaxRestarts: -1},
		LockFile: os.Getenv(envLock), HTTPAddr: "127.0.0.1:0", Logger: log, NoCgroups: os.Getenv(envNoCg) == "1",
	})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	unsub := rt.Subscribe(func(e bgw.Event) {
		switch e := e.(type) {
		case bgw.WorkerEvent:
			if e.Exit != nil {
				j.write(journalLine{T: "exit", Name: e.Name, Inc: e.Incarnation, PID: e.Exit.PID, Reason: e.Exit.Reason, Crash: e.Exit.Crash})
			}
		case bgw.GroupResetEvent:
			j.write(journalLine{T: "reset", Name: e.Cause, Gen: e.Generation, OK: !e.Failed})
		case bgw.SegmentEvent:
			// Checked here, while the postmaster publishes it: no member
			// has been given the new generation yet.
			why := checkFreshSegment(rt.Segment(), e.Generation)
			j.write(journalLine{T: "segment", Gen: e.Generation, Reset: e.Reset, OK: why == "", Why: why})
		}
	})
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := rt.Advance(ctx, phases.RecoveryFinished); err != nil {
		fmt.Println("error", err)
		return 1
	}
	stopCheck := make(chan struct{})
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		watchLedger(rt, j, stopCheck)
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("addr", rt.Addr())
	fmt.Println("ready")
	<-term
	close(stopCheck)
	<-checked
	sctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	t0 := time.Now()
	err = rt.Shutdown(sctx, phases.Fast)
	d := time.Since(t0)
	unsub()
	if err != nil {
		fmt.Printf("shutdown %d %v\n", d.Milliseconds(), err)
		return 1
	}
	fmt.Printf("shutdown %d ok\n", d.Milliseconds())
	return 0
}

// checkFreshSegment checks a new generation before any member has it: its
// generation is the one announced, the region was initialised, and nothing
// of the old generation (the dirty mark, the members' slots) is in it.
func checkFreshSegment(seg *shmactor.Segment, gen uint64) string {
	if seg == nil {
		return "no segment"
	}
	if seg.Generation() != gen {
		return fmt.Sprintf("Segment() is generation %d, the event says %d", seg.Generation(), gen)
	}
	mem, err := seg.Region(ledgerRegion)
	if err != nil {
		return err.Error()
	}
	if m := shmactor.Uint64At(mem, offMagic).Load(); m != ledgerMagic {
		return fmt.Sprintf("ledger magic %#x: region not initialised", m)
	}
	if d := shmactor.Uint64At(mem, offDirty).Load(); d != 0 {
		return "the dirty mark of a member is in a fresh generation"
	}
	for i := range shmMembers {
		if p := shmactor.Uint64At(mem, offSlots+i*slotSize).Load(); p != 0 {
			return fmt.Sprintf("slot %d holds pid %d in a fresh generation", i, p)
		}
	}
	return ""
}

// watchLedger checks, every 300 ms, that every shm member that has been
// running for 2 s writes its own pid and the current generation into its
// slot: never a member on an old generation beside one on the new.
func watchLedger(rt *bgw.Runtime, j *journal, stop <-chan struct{}) {
	debug.SetPanicOnFault(true) // a read of an unmapped segment is reported, not fatal
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if why := checkLedger(rt); why != "" {
			j.write(journalLine{T: "shm", Why: why})
		}
	}
}

func checkLedger(rt *bgw.Runtime) (why string) {
	defer func() {
		if r := recover(); r != nil {
			why = fmt.Sprintf("reading the segment from Runtime.Segment faulted: %v", r)
		}
	}()
	seg := rt.Segment()
	if seg == nil {
		return ""
	}
	rows := rt.Workers()
	if again := rt.Segment(); again != seg {
		return "" // a reset in between: next time
	}
	mem, err := seg.Region(ledgerRegion)
	if err != nil {
		return err.Error()
	}
	for _, w := range rows {
		i := -1
		for k, n := range shmNames {
			if n == w.Name {
				i = k
			}
		}
		if i < 0 || w.State != bgw.Running || time.Since(w.StartedAt) < 2*time.Second {
			continue
		}
		slot := offSlots + i*slotSize
		pid, gen := shmactor.Uint64At(mem, slot).Load(), shmactor.Uint64At(mem, slot+8).Load()
		if int(pid) != w.PID || gen != seg.Generation() {
			if rt.Segment() != seg {
				return ""
			}
			return fmt.Sprintf("%s (pid %d, running since %s) has slot pid %d generation %d; the segment is generation %d",
				w.Name, w.PID, w.StartedAt.Format(time.RFC3339Nano), pid, gen, seg.Generation())
		}
	}
	return ""
}
