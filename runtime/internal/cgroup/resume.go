package cgroup

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// State is what a Manager is, for the same process after it exec'd a new
// image of itself (an in-place upgrade): the process keeps its pid, its
// start time and its cgroups, so its home and subtree are still its own.
type State struct {
	Own, OwnDir, HomeDir string
	Moved                bool
	EnabledOwn           []string
	HomeControllers      []string
	HomeMissing          map[string]string
	Dir                  string // the subtree
	Controllers          []string
	Missing              map[string]string
	Leaves               []string // names of the leaves that exist
	Seq                  int      // the home's last subtree number
}

// State returns what Resume needs to carry the Manager on in a new image.
func (m *Manager) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	homeMu.Lock()
	defer homeMu.Unlock()
	h := m.home
	return State{Own: h.own, OwnDir: h.ownDir, HomeDir: h.dir, Moved: h.moved, EnabledOwn: slices.Clone(h.enabledOwn),
		HomeControllers: slices.Clone(h.controllers), HomeMissing: maps.Clone(h.missing), Dir: m.dir,
		Controllers: slices.Clone(m.controllers), Missing: maps.Clone(m.missing), Leaves: slices.Sorted(maps.Keys(m.leaves)),
		Seq: h.seq}
}

// Resume makes a Manager of a subtree that an earlier image of this same
// process made (State), with its leaves. It checks that the directories
// are still there; it creates nothing.
func Resume(st State) (*Manager, error) {
	for _, d := range []string{st.HomeDir, st.Dir} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: resume: %s is gone", ErrUnavailable, d)
		}
	}
	homeMu.Lock()
	defer homeMu.Unlock()
	h := theHome
	if h == nil {
		h = &home{own: st.Own, ownDir: st.OwnDir, dir: st.HomeDir, moved: st.Moved, enabledOwn: st.EnabledOwn,
			controllers: st.HomeControllers, missing: st.HomeMissing, seq: st.Seq}
		if h.missing == nil {
			h.missing = map[string]string{}
		}
		theHome = h
	} else if h.dir != st.HomeDir {
		return nil, fmt.Errorf("cgroup: resume: this process's home is %s, the state's %s", h.dir, st.HomeDir)
	}
	h.refs++
	m := &Manager{dir: st.Dir, home: h, controllers: st.Controllers, missing: st.Missing, leaves: map[string]*Leaf{}}
	if m.missing == nil {
		m.missing = map[string]string{}
	}
	for _, name := range st.Leaves {
		m.leaves[name] = &Leaf{m: m, name: name, path: filepath.Join(st.Dir, name)}
	}
	return m, nil
}

// Leaf returns the existing leaf name of the subtree (one Resume brought
// back), or nil.
func (m *Manager) Leaf(name string) *Leaf {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leaves[name]
}
