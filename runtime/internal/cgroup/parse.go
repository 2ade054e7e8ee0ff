package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// Mount is one cgroup2 mount, from /proc/self/mountinfo.
type Mount struct {
	Root     string // the cgroup the mount shows at Point ("/" for a whole hierarchy)
	Point    string // where it is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified
	ReadOnly bool   // mounted read-only (common in containers)
}

// ParseMountInfo returns the cgroup2 mounts listed in a mountinfo file
// (proc(5)): "36 35 98:0 /root /point rw,noatime shared:1 - cgroup2 cgroup2 rw".
// Fields 4 and 5 are octal-escaped (\040 for a space). A line that cannot
// be parsed is an error naming the line.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+1 >= len(f) {
			return nil, fmt.Errorf("cgroup: mountinfo line %d is malformed: %q", n, line)
		}
		if f[sep+1] != "cgroup2" {
			continue
		}
		root, err := unescapeOctal(f[3])
		if err != nil {
			return nil, fmt.Errorf("cgroup: mountinfo line %d: root: %w", n, err)
		}
		point, err := unescapeOctal(f[4])
		if err != nil {
			return nil, fmt.Errorf("cgroup: mountinfo line %d: mount point: %w", n, err)
		}
		ro := false
		for _, o := range strings.Split(f[5], ",") {
			if o == "ro" {
				ro = true
			}
		}
		out = append(out, Mount{Root: root, Point: point, ReadOnly: ro})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroup: mountinfo: %w", err)
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape %q in %q", s[i:i+4], s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// errNoV2 is returned by ParseProcCgroup when the process is in no cgroup v2
// hierarchy (a pure cgroup v1 system).
var errNoV2 = errors.New("no cgroup v2 entry (0::) in /proc/self/cgroup: this system runs cgroup v1 only")

// ParseProcCgroup returns the process's cgroup v2 path from a
// /proc/<pid>/cgroup file (cgroups(7)): the line "0::/path". In the hybrid
// layout the v1 lines ("4:memory:/x") are skipped. A path ending in
// " (deleted)" or one outside the cgroup namespace ("/../x") is an error.
func ParseProcCgroup(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return "", fmt.Errorf("cgroup: /proc/self/cgroup line %d is malformed: %q", n, line)
		}
		if f[0] != "0" || f[1] != "" {
			continue
		}
		p := f[2]
		switch {
		case strings.HasSuffix(p, " (deleted)"):
			return "", fmt.Errorf("cgroup: this process's cgroup %q has been removed", strings.TrimSuffix(p, " (deleted)"))
		case !strings.HasPrefix(p, "/"):
			return "", fmt.Errorf("cgroup: /proc/self/cgroup line %d: path %q is not absolute", n, p)
		case p == "/.." || strings.HasPrefix(p, "/../"):
			return "", fmt.Errorf("cgroup: this process's cgroup %q lies outside its cgroup namespace", p)
		}
		return path.Clean(p), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("cgroup: /proc/self/cgroup: %w", err)
	}
	return "", errNoV2
}

// Resolve returns the directory of cgroup cg (a path from ParseProcCgroup)
// under the mounts: the mount whose Root is the longest prefix of cg wins.
func Resolve(mounts []Mount, cg string) (dir string, m Mount, err error) {
	best := -1
	for i, mt := range mounts {
		root := path.Clean(mt.Root)
		if root != "/" && cg != root && !strings.HasPrefix(cg, root+"/") {
			continue
		}
		if best < 0 || len(root) > len(path.Clean(mounts[best].Root)) {
			best = i
		}
	}
	if best < 0 {
		if len(mounts) == 0 {
			return "", Mount{}, errors.New("cgroup2 is not mounted (no cgroup2 line in /proc/self/mountinfo)")
		}
		return "", Mount{}, fmt.Errorf("this process's cgroup %s is not visible under any cgroup2 mount (%s)", cg, mountList(mounts))
	}
	m = mounts[best]
	rel := strings.TrimPrefix(cg, path.Clean(m.Root))
	return path.Join(m.Point, rel), m, nil
}

func mountList(ms []Mount) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.Point + " (root " + m.Root + ")"
	}
	return strings.Join(s, ", ")
}

// parseKeyed reads a flat keyed file such as cgroup.events or memory.events
// ("populated 1\nfrozen 0\n") and returns the value of key; ok is false when
// the key is absent.
func parseKeyed(b []byte, key string) (v uint64, ok bool, err error) {
	for _, line := range strings.Split(string(b), "\n") {
		k, val, found := strings.Cut(line, " ")
		if !found || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("cgroup: %s %q is not a number", key, val)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// parseStartTime returns field 22 (starttime, in clock ticks since boot) of
// a /proc/<pid>/stat line; the command in field 2 may hold spaces and
// parentheses, so fields are counted after the last ')'.
func parseStartTime(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("cgroup: malformed stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("cgroup: stat has %d fields after the command, want at least 20", len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}
