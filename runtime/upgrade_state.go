package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/phases"
	"github.com/bgworker/bgworker/runtime/bridge"
	"github.com/bgworker/bgworker/runtime/internal/cgroup"
	"github.com/bgworker/bgworker/runtime/internal/proc"
	"github.com/bgworker/bgworker/shmactor"
)

// The state an image of the host hands to the next in an in-place upgrade:
// everything that lives only in the postmaster (the slots with their
// restart history and exits, the children, the phase, the shared-memory
// generation, the counters), with the descriptors that go across exec by
// number. It travels as JSON in a sealed memfd whose descriptor the new
// image finds in its environment.

// stateFormat names the format of the state. A binary that cannot read a
// state's format refuses the upgrade in its check, before the exec. (A
// variable only so that a test can build a binary that reads another.)
var stateFormat = "bgworker-upgrade/2"

// stateFormatNoBeats is the format before children had beat pipes: read
// as the current one with no beat pipe handed over.
const stateFormatNoBeats = "bgworker-upgrade/1"

const (
	// envUpgrade names, in the new image's environment, the state's
	// descriptor.
	envUpgrade = "BGWORKER_UPGRADE"
	// envUpgradeCheck, set to a nonce, makes the binary check a state (on
	// fd 3) and exit: 0 having printed acceptLine(nonce) when it can adopt
	// it, 1 with the reason otherwise.
	envUpgradeCheck = "BGWORKER_UPGRADE_CHECK"
)

// ErrUpgradeRefused wraps why an upgrade did not happen; the host goes on
// as before, unchanged.
var ErrUpgradeRefused = errors.New("runtime: upgrade refused")

type upgradeState struct {
	Format    string // stateFormat
	Bridge    uint16 // the children's protocol version
	Build     string // the version of the image that wrote it
	Phase     phases.Phase
	NextGen   uint64
	NextChild uint64
	Upgrades  uint64 // completed upgrades before this one
	Slots     []slotState
	Launcher  proc.State
	Group     groupState
	LockFD    int // -1 = none
	HTTPFD    int // -1 = none
	Cgroups   *cgroup.State
	Counters  []counterState
}

type specState struct {
	Name, Type   string
	StartAt      phases.Phase
	SharedMemory bool
	Regions      []regionState
	Connect      bool
	Arg          []byte
	Restart      actors.RestartState
	Intensity    actors.Intensity
	Critical     bool
	StopTimeout  time.Duration
	StartTimeout time.Duration
	NotifyReady  bool
	Limits       actors.Limits
}

type regionState struct {
	Name string
	Size int
}

type slotState struct {
	Spec      specState
	Code      string
	Dynamic   bool
	Gen       uint64
	State     WorkerState
	Inc       uint64
	Child     uint64 // the child's id; 0 = none
	Assigned  time.Time
	SegGen    uint64
	StopReq   bool
	Backoff   actors.BackoffState
	NextStart time.Time // a pending restart's due time; zero = none
	StartedAt time.Time
	Restarts  int
	Exits     []Exit
	Activity  string
	ActAt     time.Time
}

type groupState struct {
	Gen     uint64
	SegFD   int // -1 = no segment
	Size    int
	Layout  []shmactor.RegionInfo
	Failed  bool
	Backoff actors.BackoffState
}

type counterState struct {
	Name   string
	Labels map[string]string
	Value  float64
}

func describeSpec(sp actors.Spec) specState {
	st := specState{Name: sp.Name, Type: sp.Type, StartAt: sp.StartAt, SharedMemory: sp.SharedMemory, Connect: sp.Connect,
		Arg: sp.Arg, Restart: actors.DescribeRestart(sp.Restart), Intensity: sp.Intensity, Critical: sp.Critical,
		StopTimeout: sp.StopTimeout, StartTimeout: sp.StartTimeout, NotifyReady: sp.NotifyReady, Limits: sp.Limits}
	for _, r := range sp.Regions {
		st.Regions = append(st.Regions, regionState{Name: r.Name, Size: r.Size})
	}
	return st
}

// spec rebuilds the spec with this binary's code for it: the definition's
// Run, Props and region initialisers.
func (st specState) spec(code string) (actors.Spec, error) {
	def, ok := actors.Lookup(code)
	if !ok {
		return actors.Spec{}, fmt.Errorf("worker %q runs code %q, which this binary does not register or define", st.Name, code)
	}
	r, err := st.Restart.Restart()
	if err != nil {
		return actors.Spec{}, fmt.Errorf("worker %q: %w", st.Name, err)
	}
	sp := actors.Spec{Name: st.Name, Type: st.Type, StartAt: st.StartAt, SharedMemory: st.SharedMemory, Connect: st.Connect,
		Arg: st.Arg, Restart: r, Intensity: st.Intensity, Critical: st.Critical, StopTimeout: st.StopTimeout,
		StartTimeout: st.StartTimeout, NotifyReady: st.NotifyReady, Limits: st.Limits, Run: def.Run, Props: def.Props}
	if st.SharedMemory {
		if len(st.Regions) != len(def.Regions) {
			return actors.Spec{}, fmt.Errorf("worker %q: this binary's code %q asks for %d regions, the running one %d", st.Name, code, len(def.Regions), len(st.Regions))
		}
		for i, r := range def.Regions {
			if r.Name != st.Regions[i].Name || r.Size != st.Regions[i].Size {
				return actors.Spec{}, fmt.Errorf("worker %q: region %q of %d bytes in this binary, %q of %d in the running one",
					st.Name, r.Name, r.Size, st.Regions[i].Name, st.Regions[i].Size)
			}
		}
		sp.Regions = def.Regions
	}
	return sp, nil
}

// check reports whether this binary can adopt st: its format, its
// children's protocol, every worker's code and shared-memory layout.
func (st *upgradeState) check() error {
	if st.Format != stateFormat && st.Format != stateFormatNoBeats {
		return fmt.Errorf("%w: the state's format is %q, this binary reads %q", ErrUpgradeRefused, st.Format, stateFormat)
	}
	if st.Bridge != bridge.Version {
		return fmt.Errorf("%w: the children speak bridge protocol %d, this binary %d", ErrUpgradeRefused, st.Bridge, bridge.Version)
	}
	for _, s := range st.Slots {
		if _, err := s.Spec.spec(s.Code); err != nil {
			return fmt.Errorf("%w: %v", ErrUpgradeRefused, err)
		}
	}
	if st.Group.SegFD >= 0 {
		var specs []actors.Spec
		for _, s := range st.Slots {
			sp, _ := s.Spec.spec(s.Code)
			specs = append(specs, sp)
		}
		regions, _, err := collectRegions(specs)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUpgradeRefused, err)
		}
		var names []string
		for _, r := range regions {
			names = append(names, r.Name)
		}
		for _, r := range st.Group.Layout {
			if !slices.Contains(names, r.Name) {
				return fmt.Errorf("%w: this binary does not ask for region %q of the running segment", ErrUpgradeRefused, r.Name)
			}
		}
	}
	return nil
}

// writeState puts st in a sealed memfd; the file's descriptor is
// inheritable when inherit is set.
func writeState(st *upgradeState, inherit bool) (*os.File, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("runtime: upgrade state: %w", err)
	}
	flags := unix.MFD_ALLOW_SEALING
	if !inherit {
		flags |= unix.MFD_CLOEXEC
	}
	fd, err := unix.MemfdCreate("bgworker-upgrade-state", flags)
	if err != nil {
		return nil, fmt.Errorf("runtime: upgrade state: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "upgrade-state")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("runtime: upgrade state: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("runtime: upgrade state: seal: %w", err)
	}
	return f, nil
}

// readState reads a state from f, from its start.
func readState(f *os.File) (*upgradeState, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("runtime: upgrade state: %w", err)
	}
	var st upgradeState
	if err := json.NewDecoder(io.LimitReader(f, 64<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("runtime: upgrade state: %w", err)
	}
	if st.Format == stateFormatNoBeats {
		for i := range st.Launcher.Children {
			st.Launcher.Children[i].Beat = -1
		}
	}
	return &st, nil
}

// checkMode is the binary run by an upgrade to check, before the exec, that
// it can adopt the running host's state (on fd 3). It never returns.
func checkMode() {
	st, err := readState(os.NewFile(3, "upgrade-state"))
	if err == nil {
		err = st.check()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(acceptLine(os.Getenv(envUpgradeCheck)))
	os.Exit(0)
}

// acceptLine is what check mode prints when it can adopt the state, with
// the nonce of the check that asked.
func acceptLine(nonce string) string { return "bgworker: upgrade state ok " + nonce }
